"""Rejected import rows hold personal data: stored encrypted with the tokens of their subjects,
clear only to Compliance, masked to Operators, every rejects download audited, purged after the
retention period, and still found and deleted by an erasure."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import QuarantinedRow
from ingestion.tasks import quarantined_rows_purge_task
from privacy import services
from privacy.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)  # imports write from worker threads
EMAIL = "bad.row.person@example.com"


@pytest.fixture
def job(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    upload = tmp_path / "events.csv"
    upload.write_text("customer_id,event_type,item_id,timestamp,note\n"
                      "shopper-1,view,sku-1,2025-03-05T10:00:00Z,\n"
                      f"shopper-2,teleport,sku-1,2025-03-05T10:00:00Z,{EMAIL}\n")
    done = import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk)
    assert done.rows_rejected == 1
    return done


def _user(django_user_model, name: str, group: str):
    user = django_user_model.objects.create_user(name, password="pw-for-tests-only", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return django_user_model.objects.get(pk=user.pk)


def test_a_rejected_row_is_not_stored_in_clear(job):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ingestion_quarantinedrow "
                       "WHERE position(convert_to(%s, 'UTF8') IN convert_to(row_to_json(ingestion_quarantinedrow)::text, "
                       "'UTF8')) > 0", [EMAIL])
        assert cursor.fetchone()[0] == 0
    assert QuarantinedRow.objects.get().subject_tokens


def test_operators_get_rejects_masked_compliance_in_clear_and_each_download_is_audited(job, client, django_user_model):
    url = f"/admin/ingestion/importjob/{job.pk}/rejects.csv"
    client.force_login(_user(django_user_model, "otto", "Operators"))
    masked = b"".join(client.get(url).streaming_content).decode()
    page = client.get(f"/admin/ingestion/importjob/{job.pk}/change/").content.decode()
    client.force_login(_user(django_user_model, "cora", "Compliance"))
    clear = b"".join(client.get(url).streaming_content).decode()

    assert EMAIL not in masked and "shopper-2" not in masked and "teleport" not in masked
    assert EMAIL not in page and "shopper-2" not in page
    assert EMAIL in clear and "teleport" in clear
    downloads = AuditEntry.objects.filter(action="import_job.rejects_downloaded").order_by("id")
    assert [(e.actor_label, e.details["clear"]) for e in downloads] == [("otto", False), ("cora", True)]


def test_rejected_rows_are_purged_after_the_retention_period(job, settings):
    settings.QUARANTINE_RETENTION_DAYS = 30
    QuarantinedRow.objects.update(created_at=timezone.now() - timedelta(days=31))

    assert quarantined_rows_purge_task() == 1
    assert not QuarantinedRow.objects.exists()


def test_erasure_finds_the_subjects_encrypted_rejected_row(job, django_user_model):
    officer = _user(django_user_model, "cora", "Compliance")
    request = services.privacy_request_file(kind="erasure", source="default", external_id="shopper-2", actor=officer)
    services.privacy_request_verify(request=request, actor=officer)

    done = services.privacy_request_execute(request=request, actor=officer)

    assert done.receipt["stores"]["quarantined_rows"]["removed"] == 1
    assert not QuarantinedRow.objects.exists()
