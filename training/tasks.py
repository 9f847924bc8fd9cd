"""Celery tasks of the training app (queue `training`, the only one a GPU worker consumes)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from training import services


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=10, retry_backoff_max=300, max_retries=3)
def training_run_task(run_id: int) -> dict | None:
    """Train a run. A redelivery after a crash resumes from the run's last checkpoint; a run that
    already finished is left alone."""
    run = services.training_run_execute(run_id=run_id)
    return None if run is None else {"run_id": run.pk, "status": run.status}
