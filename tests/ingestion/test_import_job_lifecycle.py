"""Import jobs are claimed once; a job whose worker died is reclaimed and finishes; redelivery is harmless."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import Event, ImportJob, ImportStatus, QuarantinedRow
from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.tasks import import_job_run_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def events_file(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("customer_id,event_type,timestamp\nc1,search,2025-01-01T00:00:00Z\nc2,bogus,2025-01-01T00:00:00Z\n")
    return path


def test_a_job_held_by_a_live_worker_is_not_run_twice(events_file):
    job = import_job_create(path=events_file, fmt="csv")
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.RUNNING, heartbeat_at=timezone.now())

    assert import_job_run(job_id=job.pk) is None
    assert Event.objects.count() == 0


def test_a_job_whose_worker_died_is_reclaimed_and_its_counters_restart(events_file):
    job = import_job_create(path=events_file, fmt="csv")
    first = import_job_run(job_id=job.pk)
    assert (first.rows_inserted, first.rows_rejected) == (1, 1)
    # the worker "dies" after landing everything but before recording success
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=10), rows_inserted=999
    )

    again = import_job_run(job_id=job.pk)

    assert again.status == ImportStatus.SUCCEEDED
    assert (again.rows_read, again.rows_inserted, again.rows_duplicate, again.rows_rejected) == (2, 0, 1, 1)
    assert Event.objects.count() == 1
    assert QuarantinedRow.objects.filter(job=job).count() == 1  # not duplicated by the second run


def test_redelivered_task_does_nothing_the_second_time(events_file):
    job = import_job_create(path=events_file, fmt="csv")

    first = import_job_run_task.run(job.pk)
    second = import_job_run_task.run(job.pk)
    missing = import_job_run_task.run(10**9)

    assert first == {"job_id": job.pk, "status": "succeeded", "inserted": 1, "rejected": 1}
    assert second is None and missing is None
    assert Event.objects.count() == 1
