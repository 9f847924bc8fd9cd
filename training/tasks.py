"""Celery tasks of the training app (queue `training`, the only one a GPU worker consumes)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from training import services


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=10, retry_backoff_max=300, max_retries=3)
def training_run_task(run_id: int) -> dict | None:
    """Train a run. A redelivery after a crash resumes from the run's last checkpoint; a run that
    already finished is left alone."""
    run = services.training_run_execute(run_id=run_id, profiles_rebuild="celery")
    return None if run is None else {"run_id": run.pk, "status": run.status}


@shared_task
def training_scheduled_task() -> dict:
    """Celery beat's weekly retraining: queue a run with the default configuration unless one is
    already pending or running."""
    run = services.training_run_start()
    return {"run_id": None if run is None else run.pk}


@shared_task(acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=10, max_retries=3)
def model_version_activate_task(version_id: int) -> dict:
    """An operator's activation (or rollback) from the admin: re-encode, switch, rebuild profiles."""
    from training.models import ModelVersion

    written = services.model_version_activate(version=ModelVersion.objects.get(pk=version_id), profiles_rebuild="celery")
    return {"version_id": version_id, "profiles_encoded": written}
