"""Celery tasks of the segments app (queue `profiles`): thin and idempotent, a refresh recomputes
the whole member set; and the function that queues a refresh."""

from celery import shared_task
from django.db import transaction

from config.celery import IDEMPOTENT_TASK
from segments import selectors, services



@shared_task(**IDEMPOTENT_TASK)
def segment_refresh_task(segment_id: int) -> int:
    return services.segment_refresh(segment_id=segment_id)


@shared_task(**IDEMPOTENT_TASK)
def segment_refreshes_queue_task() -> int:
    """Queue a refresh of every segment that is due (the beat schedule's entry): one task per
    segment (per clustering). Returns how many were queued."""
    ids = selectors.segment_ids_to_refresh()
    for segment_id in ids:
        segment_refresh_task.delay(segment_id)
    return len(ids)


def segment_refresh_queue(*, segment) -> None:
    """Queue a refresh of the segment's members (a new segment, the admin's button and action) once
    the caller's transaction commits."""
    transaction.on_commit(lambda: segment_refresh_task.delay(segment.pk))
