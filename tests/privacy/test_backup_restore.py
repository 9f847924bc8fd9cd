"""Backup and restore round-trip the store, and a backup taken before an erasure cannot bring the
subject back: `restore` replays the erasure journal (kept apart from the database), which erases
the subject again and puts them back on the suppression list."""

import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection

from ingestion.models import Customer, Event
from ingestion.pseudonyms import customer_key
from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from privacy.models import SuppressedSubject

pytestmark = pytest.mark.django_db(transaction=True)
SUBJECT = "leaving-1"


@pytest.fixture
def store(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.ERASURE_JOURNAL_PATH = tmp_path / "journal" / "erasures.jsonl"
    customers_upsert(rows=[{"external_id": c, "email": f"{c}@example.com"} for c in (SUBJECT, "stays-1", "stays-2")],
                     source="default")
    events_ingest_batch(rows=[{"customer_id": c, "event_type": "purchase", "item_id": "sku-1", "value": "10.00",
                               "timestamp": f"2025-05-0{i + 1}T10:00:00Z"}
                              for c in (SUBJECT, "stays-1", "stays-2") for i in range(3)])


def _erase(django_user_model) -> None:
    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=request, actor=officer)
    services.privacy_request_execute(request=request, actor=officer)


def _subject_rows() -> tuple[int, int]:
    key = customer_key(source="default", external_id=SUBJECT)
    return Customer.objects.filter(key=key).count(), Event.objects.filter(customer__key=key).count()


def test_a_restored_backup_keeps_everything_but_what_was_erased_since(store, django_user_model, tmp_path, capsys,
                                                                       settings):
    backup = tmp_path / "backups" / "before.dump"
    call_command("backup", str(backup))
    assert backup.stat().st_size > 0 and _subject_rows() == (1, 3)

    _erase(django_user_model)
    assert _subject_rows() == (0, 0)
    entry = json.loads(settings.ERASURE_JOURNAL_PATH.read_text().splitlines()[0])
    assert SUBJECT not in json.dumps(entry) and f"{SUBJECT}@example.com" not in json.dumps(entry)

    call_command("restore", str(backup), "--yes")

    connection.close()
    assert _subject_rows() == (0, 0), "the backup brought an erased subject back"
    assert Customer.objects.count() == 2 and Event.objects.count() == 6  # the rest came back whole
    assert SuppressedSubject.objects.count() == 1
    assert "1 subjects erased again" in capsys.readouterr().out
    sent = events_ingest_batch(rows=[{"customer_id": SUBJECT, "event_type": "search", "timestamp": "2025-06-01T00:00:00Z"}])
    assert sent.refused == 1 and _subject_rows() == (0, 0)

    call_command("restore", str(backup), "--yes")  # a second restore of the same backup: the same end
    connection.close()
    assert _subject_rows() == (0, 0) and Customer.objects.count() == 2


def test_restore_asks_for_confirmation_and_names_a_missing_file(tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--yes"):
        call_command("restore", str(tmp_path / "none.dump"))
    with pytest.raises(CommandError, match="no such backup file"):
        call_command("restore", str(tmp_path / "none.dump"), "--yes")
