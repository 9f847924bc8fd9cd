"""Celery tasks of the segments app (queue `profiles`): thin and idempotent, a refresh recomputes
the whole member set."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from segments import services

_RETRY = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
}


@shared_task(**_RETRY)
def segment_refresh_task(segment_id: int) -> int:
    return services.segment_refresh(segment_id=segment_id)


@shared_task(**_RETRY)
def segments_refresh_all_task() -> int:
    """The schedule's periodic refresh: one task per segment (per clustering)."""
    ids = services.segments_refresh_all()
    for segment_id in ids:
        segment_refresh_task.delay(segment_id)
    return len(ids)
