"""A Celery worker killed with SIGKILL in the middle of an import: with late acks, a short
visibility timeout and a short heartbeat window, the task reaches a new worker (Redis hands the
unacknowledged message back, or beat's stale-import sweep queues the job again), the job is claimed
again and finishes once, and the store ends with exactly the events of a clean run of the same file.
And a task that outlives the visibility timeout is delivered twice: the second delivery does nothing."""

import time
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app
from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Event, ImportJob, ImportStatus
from ingestion.tasks import import_job_queue
from tests.conftest import celery_worker_running, process_env, wait_until
from tests.ingestion.event_files import distinct_events_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

ROWS = 60_000
BLOCK_BYTES = 64 * 1024  # ~1,400 rows a chunk, ~45 chunks
# the double-delivery test needs an import that outlives the redelivery: 60,000 rows took 2.2 s on an
# idle machine once the event table was partitioned, and Redis had not handed the task over by then
VISIBILITY_ROWS = 4 * ROWS
QUEUES = "default,ingest,profiles,segments,training"


def _counts(job: ImportJob) -> dict:
    return {"read": job.rows_read, "stored": Event.objects.filter(import_job=job).count(),
            "inserted_or_duplicate": job.rows_inserted + job.rows_duplicate, "rejected": job.rows_rejected,
            "removed": job.rows_removed, "flagged": job.rows_flagged}


@pytest.fixture
def clean_run(tmp_path, settings):
    """The same file imported inline, undisturbed, under another source (its own customers)."""
    settings.INGEST_CSV_BLOCK_BYTES = BLOCK_BYTES
    path = distinct_events_file(tmp_path / "events.csv", ROWS)
    job = import_job_run(job_id=import_job_create(path=path, fmt="csv", source="clean").pk)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    return path, _counts(job)


def test_an_import_whose_worker_is_killed_finishes_once_on_another_worker(clean_run, tmp_path):
    path, clean = clean_run
    celery_app.control.purge()
    # Redis hands the task back 4 s after delivery, so the new worker gets it at its start, while the
    # dead worker's heartbeat is younger than 30 s: that copy must leave the job alone, and beat's
    # sweep queues the job again once the heartbeat is 30 s old.
    env = process_env(TASK_VISIBILITY_TIMEOUT_S="4", IMPORT_STALE_SECONDS="30", IMPORT_WATCHDOG_SECONDS="2",
                      INGEST_CSV_BLOCK_BYTES=str(BLOCK_BYTES))
    var = Path(settings.BASE_DIR) / "var"
    job = import_job_create(path=path, fmt="csv", source="shop")

    with celery_worker_running(env, queues=QUEUES, log=var / "test-killed-worker-1.log") as first:
        import_job_queue(job=job)
        # mid-import: some chunks committed, more to come
        wait_until(lambda: (j := ImportJob.objects.get(pk=job.pk)).status == ImportStatus.RUNNING and 0 < j.rows_read < ROWS,
              60, "import under way", var / "test-killed-worker-1.log")
        first.kill()  # SIGKILL: no clean-up, no ack
        first.wait(timeout=10)
    interrupted = ImportJob.objects.get(pk=job.pk)
    assert interrupted.status == ImportStatus.RUNNING
    assert 0 < Event.objects.filter(import_job=job).count() < clean["stored"]

    log = var / "test-killed-worker-2.log"
    with celery_worker_running(env, queues=QUEUES, log=log, beat=True):
        finished = wait_until(lambda: (j := ImportJob.objects.get(pk=job.pk)).status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED) and j,
                         180, "the import finished on the new worker", log)
        time.sleep(4)  # a later copy (another sweep) would have run by now

    assert finished.status == ImportStatus.SUCCEEDED, finished.error
    assert ImportJob.objects.filter(source="shop").count() == 1
    assert _counts(ImportJob.objects.get(pk=job.pk)) == clean
    # resumed after the dead worker's last committed chunk: no chunk stored twice
    assert finished.rows_duplicate == 0 and finished.report["chunks_resumed"] > 0
    assert Event.objects.filter(import_job=job).values("event_id").distinct().count() == clean["stored"]
    runs = [line for line in log.read_text().splitlines() if "import_job_run_task[" in line and "succeeded" in line]
    assert any(line.endswith(": None") for line in runs), runs  # the early redelivery: job still held
    assert any(
        "import_jobs_stale_requeue_task[" in line and line.endswith(f": [{job.pk}]") for line in log.read_text().splitlines()
    ), "beat's sweep did not queue the stale import again"


def test_an_import_that_outlives_the_visibility_timeout_is_delivered_twice_and_the_second_does_nothing(tmp_path):
    celery_app.control.purge()
    # Redis hands the unacknowledged task to the idle worker after 2 s while the busy one still runs
    # it (its heartbeat is fresh: the stale window is a minute)
    env = process_env(TASK_VISIBILITY_TIMEOUT_S="2", IMPORT_STALE_SECONDS="60",
                      INGEST_CSV_BLOCK_BYTES=str(BLOCK_BYTES))
    var = Path(settings.BASE_DIR) / "var"
    logs = [var / "test-visibility-worker-1.log", var / "test-visibility-worker-2.log"]
    job = import_job_create(path=distinct_events_file(tmp_path / "events.csv", VISIBILITY_ROWS), fmt="csv", source="shop")

    with celery_worker_running(env, queues=QUEUES, log=logs[0]), celery_worker_running(env, queues=QUEUES, log=logs[1]):
        import_job_queue(job=job)
        finished = wait_until(lambda: (j := ImportJob.objects.get(pk=job.pk)).status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED) and j,
                         180, "the import finished", logs[0])
        time.sleep(3)

    assert finished.status == ImportStatus.SUCCEEDED, finished.error
    deliveries = [line for log in logs for line in log.read_text().splitlines()
                  if "import_job_run_task[" in line and "succeeded" in line]
    assert len(deliveries) == 2, deliveries  # delivered twice, both acknowledged
    assert sum(line.endswith(": None") for line in deliveries) == 1  # the copy found the job claimed
    # one run's counts: nothing restarted, nothing counted twice
    assert (finished.rows_read, finished.rows_inserted, finished.rows_duplicate, finished.rows_rejected) == (
        VISIBILITY_ROWS + 2, VISIBILITY_ROWS, 0, 2)
    assert Event.objects.filter(import_job=job).count() == VISIBILITY_ROWS
