"""Access exports are encrypted at rest, deleted when they expire (Celery beat) and when their
subject is erased, and the erasure receipt counts them."""

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.utils import timezone

from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from privacy.models import PrivacyRequest
from privacy.tasks import access_exports_expire_task

pytestmark = pytest.mark.django_db
SUBJECT, EMAIL, PHONE = "shopper-77", "shopper77@example.com", "+44 7700 900077"


@pytest.fixture
def officer(django_user_model):
    user = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    user.groups.add(Group.objects.get(name="Compliance"))
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def shop(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL, "phone": PHONE, "name": "Ada"}], source="default")
    events_ingest_batch(rows=[{"customer_id": c, "event_type": "purchase", "item_id": "sku-1", "value": "9.00",
                               "timestamp": "2025-05-01T10:00:00Z"} for c in (SUBJECT, "other-1")])


def _executed(kind: str, actor) -> PrivacyRequest:
    request = services.privacy_request_file(kind=kind, source="default", external_id=SUBJECT, actor=actor)
    services.privacy_request_verify(request=request, actor=actor)
    return services.privacy_request_execute(request=request, actor=actor)


def _export_files(settings) -> list[Path]:
    return sorted((Path(settings.MEDIA_ROOT) / "exports").glob("*"))


def test_the_export_file_is_encrypted_at_rest_and_decrypted_for_the_download(shop, officer, make_api_client, settings):
    export = _executed("access_export", officer)

    [stored] = _export_files(settings)
    data = stored.read_bytes()
    assert not data.startswith(b"PK") and EMAIL.encode() not in data and SUBJECT.encode() not in data
    download = make_api_client("compliance").get(f"/api/v1/privacy/requests/{export.pk}/export")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    assert EMAIL in archive.read("subject.json").decode()


def test_an_expired_export_is_deleted_by_the_hourly_beat_task(shop, officer, settings):
    export = _executed("access_export", officer)
    fresh = _executed("access_export", officer)
    PrivacyRequest.objects.filter(pk=export.pk).update(export_expires_at=timezone.now() - timedelta(seconds=1))

    removed = access_exports_expire_task()

    assert removed == 1
    assert [p.name.split("-")[1] for p in _export_files(settings)] == [str(fresh.pk)]
    assert PrivacyRequest.objects.get(pk=export.pk).export_path == ""
    schedule = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert "privacy.tasks.access_exports_expire_task" in schedule


def test_erasure_deletes_the_subjects_exports_and_counts_them_on_the_receipt(shop, officer, settings):
    _executed("access_export", officer)
    assert len(_export_files(settings)) == 1

    erased = _executed("erasure", officer)

    assert _export_files(settings) == []
    assert erased.receipt["stores"]["exports"]["removed"] == 1
    assert not PrivacyRequest.objects.exclude(export_path="").exists()
