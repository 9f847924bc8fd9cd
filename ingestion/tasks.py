"""Celery tasks of the ingestion app: thin, idempotent callers of services, and the function that
queues an import."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from django.db import InterfaceError, OperationalError, transaction

from config.celery import IDEMPOTENT_TASK
from ingestion import import_jobs, selectors, services
from ingestion.models import ImportJob


@shared_task(**IDEMPOTENT_TASK)
def quarantined_rows_purge_task() -> int:
    """Hourly: rejected rows older than QUARANTINE_RETENTION_DAYS are deleted."""
    return services.quarantined_rows_purge(
        older_than=timezone.now() - timedelta(days=settings.QUARANTINE_RETENTION_DAYS))


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
)
def import_job_run_task(self, job_id: int) -> dict | None:
    """Runs an import job. Safe to redeliver: the job is claimed atomically and event ids are
    deterministic, so a second delivery either finds nothing to claim or adds nothing."""
    if not ImportJob.objects.filter(pk=job_id).exists():
        return None
    job = import_jobs.import_job_run(job_id=job_id)
    if job is None:
        return None
    if job.rows_inserted:
        from profiles.tasks import profiles_refresh_after_import_task

        profiles_refresh_after_import_task.delay(job.pk)
    return {"job_id": job.pk, "status": job.status, "inserted": job.rows_inserted, "rejected": job.rows_rejected}


@shared_task(**IDEMPOTENT_TASK)
def import_jobs_stale_requeue_task() -> list[int]:
    """Celery beat: queue again each running import whose worker died (no heartbeat for
    IMPORT_STALE_SECONDS). The job is claimed atomically, so a copy that finds it taken does nothing."""
    ids = [job.pk for job in selectors.import_jobs_stale()]
    for job_id in ids:
        import_job_run_task.delay(job_id)
    return ids


def import_job_queue(*, job: ImportJob) -> None:
    """Queue the job on the ingest queue once the surrounding transaction commits.
    Raises config.celery.BrokerUnavailable (one line saying how to start Redis) if no broker answers."""
    from config.celery import broker_check

    broker_check()
    transaction.on_commit(lambda: import_job_run_task.delay(job.pk))
