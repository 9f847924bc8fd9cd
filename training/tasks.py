"""Celery tasks of the training app (queue `training`, the only one a GPU worker consumes), and the
functions that queue them."""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from pipeline import flows
from training import services
from training.models import ModelVersion


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=10, retry_backoff_max=300, max_retries=3)
def training_run_task(run_id: int) -> dict | None:
    """Train a run; a version that passes the gate goes live and a batch build is queued so the
    fused vectors take it in. A redelivery after a crash resumes from the run's last checkpoint; a
    run that already finished is left alone. With TRAINING_WORLD_SIZE > 1 the run trains in that
    many processes on this host (torchrun, DDP), this task waiting for them."""
    from profiles.tasks import profile_build_queue_unless_running

    run, activated = flows.training_run(run_id=run_id, world_size=settings.TRAINING_WORLD_SIZE)
    if activated:
        profile_build_queue_unless_running()
    return None if run is None else {"run_id": run.pk, "status": run.status}


@shared_task
def training_scheduled_task() -> dict:
    """Celery beat's weekly retraining: queue a run with the default configuration unless one is
    already pending or running."""
    run = training_run_queue()
    return {"run_id": None if run is None else run.pk}


@shared_task(acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=10, max_retries=3)
def model_version_activate_task(version_id: int) -> dict:
    """An operator's activation (or rollback) from the admin: re-encode, switch, rebuild profiles."""
    from profiles.tasks import profile_build_queue_unless_running

    written = flows.model_version_switch(version=ModelVersion.objects.get(pk=version_id))
    profile_build_queue_unless_running()
    return {"version_id": version_id, "profiles_encoded": written}


def training_run_queue(*, arch: str | None = None, config: dict | None = None, user=None):
    """Create a run and queue it on the training queue (admin button, schedule, unlearning); None
    when a run is already pending or running."""
    run = services.training_run_create_if_idle(arch=arch, config=config, user=user)
    if run is not None:
        transaction.on_commit(lambda: training_run_task.delay(run.pk))
    return run


def model_version_activation_queue(*, version: ModelVersion) -> None:
    """An operator's activation or rollback (admin action and button): a worker re-encodes the
    embeddings with this version, switches, and rebuilds the profiles, once the caller commits."""
    transaction.on_commit(lambda: model_version_activate_task.delay(version.pk))
