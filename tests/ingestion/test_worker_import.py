"""Admin upload → ImportJob → real Celery worker → PostgreSQL → admin page, end to end."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.models import Event, ImportJob, ImportStatus, QuarantinedRow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def wait_for_job(timeout: float = 60.0) -> ImportJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ImportJob.objects.order_by("-pk").first()
        if job and job.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED):
            return job
        time.sleep(0.25)
    raise AssertionError(f"import job did not finish in {timeout}s: {job and job.status}")


def test_admin_upload_is_imported_by_the_celery_worker(client, celery_worker):
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.force_login(admin)
    content = (
        "customer_id,item_id,event_type,timestamp,value\n"
        "c1,A,view,2025-01-01T10:00:00Z,\n"
        "c1,A,purchase,2025-01-01T10:01:00Z,9.99\n"
        "c2,B,purchase,not-a-date,3\n"
    ).encode()

    response = client.post(
        "/admin/ingestion/importjob/add/",
        {"format": "csv", "kind": "events", "source": "shop", "upload": SimpleUploadedFile("events.csv", content),
         "mapping_json": ""},
    )

    assert response.status_code == 302, response.content[:2000]
    job = wait_for_job()
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (3, 2, 1)
    assert job.created_by == admin
    assert Event.objects.filter(import_job=job).count() == 2
    assert QuarantinedRow.objects.get(job=job).line_number == 4
    page = client.get(f"/admin/ingestion/importjob/{job.pk}/change/")
    assert page.status_code == 200
    assert b"timestamp: not a valid date/time" in page.content


def test_admin_upload_with_invalid_mapping_json_is_refused_with_the_reason(client, db):
    admin = get_user_model().objects.create_superuser("ops2", "ops2@example.com", "pw-for-tests-only")
    client.force_login(admin)

    response = client.post(
        "/admin/ingestion/importjob/add/",
        {"format": "csv", "kind": "events", "source": "", "upload": SimpleUploadedFile("e.csv", b"a\n1\n"),
         "mapping_json": "{oops"},
    )

    assert response.status_code == 200
    assert b"Not valid JSON" in response.content
    assert ImportJob.objects.count() == 0
