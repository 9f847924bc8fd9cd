"""Celery tasks of the profiles app: thin, idempotent callers of services (queue `profiles`)."""

from celery import shared_task

from config.celery import IDEMPOTENT_TASK
from profiles import services

_RETRY = IDEMPOTENT_TASK


@shared_task(**_RETRY)
def profile_build_chunk_task(build_id: int, index: int, first_id: int, last_id: int) -> int:
    return services.profile_build_chunk(build_id=build_id, index=index, first_id=first_id, last_id=last_id)


@shared_task(**_RETRY)
def profile_build_finish_task(build_id: int) -> str:
    """Close the build, then refit the CLV model on the same data (scores refresh with profiles)."""
    from crm.tasks import clv_fit_task

    status = services.profile_build_finish(build_id=build_id).status
    clv_fit_task.delay()
    return status


@shared_task(**_RETRY)
def profile_build_fail_task(build_id: int) -> None:
    """Chord error callback: record the failure and put back any dropped vector index."""
    services.profile_build_fail(build_id=build_id, error="a chunk failed; see the worker log")


@shared_task(**_RETRY)
def profile_build_task() -> int | None:
    """A batch build started from the admin or the nightly schedule: fit here, chunks fan out.
    Does nothing while another build runs."""
    if services.profile_build_running():
        return None
    return services.profile_build_dispatch().pk


@shared_task(**_RETRY)
def profiles_refresh_task(customer_ids: list[int]) -> int:
    """Refresh these customers' profiles. Safe to repeat: a refresh recomputes from the store and
    never replaces a profile read from a later snapshot."""
    return services.profiles_refresh(customer_ids=customer_ids)


@shared_task(**_RETRY)
def profiles_refresh_after_import_task(import_job_id: int) -> dict:
    return services.profiles_refresh_after_import(import_job_id=import_job_id)
