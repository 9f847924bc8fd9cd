"""Import jobs are claimed once; a job whose worker died is reclaimed and resumes after its last committed
chunk (or from the start when the file no longer cuts into the same chunks); redelivery is harmless."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import Event, ImportChunk, ImportJob, ImportStatus, QuarantinedRow
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


def test_a_job_whose_worker_died_is_reclaimed_and_resumes_after_its_committed_chunks(events_file):
    job = import_job_create(path=events_file, fmt="csv")
    first = import_job_run(job_id=job.pk)
    assert (first.rows_inserted, first.rows_rejected) == (1, 1)
    # the worker "dies" after committing its only chunk but before recording success
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=10))

    again = import_job_run(job_id=job.pk)

    assert again.status == ImportStatus.SUCCEEDED
    # the committed chunk is not stored again: its counts stand, nothing counts as a duplicate
    assert (again.rows_read, again.rows_inserted, again.rows_duplicate, again.rows_rejected) == (2, 1, 0, 1)
    assert again.report["chunks_resumed"] == 1
    assert Event.objects.count() == 1
    assert QuarantinedRow.objects.filter(job=job).count() == 1
    assert list(ImportChunk.objects.filter(job=job).values_list("number", flat=True)) == [0]


def test_a_resumed_job_whose_file_is_cut_differently_starts_again_from_zero(tmp_path, settings):
    path = tmp_path / "many.csv"
    path.write_text("customer_id,event_type,timestamp\n"
                    + "".join(f"c{i},search,2025-01-01T{i // 60:02d}:{i % 60:02d}:00Z\n" for i in range(200)))
    job = import_job_create(path=path, fmt="csv")
    assert import_job_run(job_id=job.pk).rows_inserted == 200  # one chunk
    # the worker died before recording success; the next one reads with a smaller block size, so
    # chunk 0 ends elsewhere: what was committed no longer says which lines are in
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=10))
    settings.INGEST_CSV_BLOCK_BYTES = 1024

    again = import_job_run(job_id=job.pk)

    assert again.status == ImportStatus.SUCCEEDED
    # read from the start: every line again, each event already stored counts as a duplicate
    assert (again.rows_read, again.rows_inserted, again.rows_duplicate) == (200, 0, 200)
    assert "chunks_resumed" not in again.report
    assert ImportChunk.objects.filter(job=job).count() > 1
    assert Event.objects.count() == 200


def test_redelivered_task_does_nothing_the_second_time(events_file):
    job = import_job_create(path=events_file, fmt="csv")

    first = import_job_run_task.run(job.pk)
    second = import_job_run_task.run(job.pk)
    missing = import_job_run_task.run(10**9)

    assert first == {"job_id": job.pk, "status": "succeeded", "inserted": 1, "rejected": 1}
    assert second is None and missing is None
    assert Event.objects.count() == 1
