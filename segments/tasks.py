"""Celery tasks of the segments app (queue `segments`, apart from real-time profile refreshes): thin
and idempotent, a refresh recomputes the whole member set; and the function that queues a refresh."""

from celery import shared_task
from django.conf import settings
from django.db import transaction

from config.broker_redis import broker_redis
from config.celery import IDEMPOTENT_TASK
from segments import selectors, services


@shared_task(**IDEMPOTENT_TASK)
def segment_refresh_task(segment_id: int) -> int:
    _RefreshQueuedMark(segment_id).delete()  # before reading: a request arriving from now on queues again
    return services.segment_refresh(segment_id=segment_id)


@shared_task(**IDEMPOTENT_TASK)
def segment_refreshes_queue_task() -> int:
    """Queue a refresh of every segment that is due (the beat schedule's entry): one task per
    segment (per clustering). Returns how many were queued."""
    ids = selectors.segment_ids_to_refresh()
    queued = 0
    for segment_id in ids:
        if _RefreshQueuedMark(segment_id).set():
            segment_refresh_task.delay(segment_id)
            queued += 1
    return queued


class _RefreshQueuedMark:
    """A Redis key that says a refresh of the segment is queued and not started: repeated refresh
    requests (the API, the admin button, the schedule) queue one task, not one each."""

    def __init__(self, segment_id: int):
        self.key = f"portrait:segment-refresh-queued:{int(segment_id)}"

    def set(self) -> bool:
        return bool(broker_redis().set(self.key, 1, nx=True, ex=settings.SEGMENT_REFRESH_DEDUP_S))

    def exists(self) -> bool:
        return bool(broker_redis().exists(self.key))

    def delete(self) -> None:
        broker_redis().delete(self.key)


def segment_refresh_queue(*, segment) -> bool:
    """Queue a refresh of the segment's members once the caller's transaction commits, unless one
    is queued and not started already. Returns False when one is. The mark is set at commit, so a
    rolled-back creation leaves none behind."""
    mark = _RefreshQueuedMark(segment.pk)
    if mark.exists():
        return False

    def queue():
        if mark.set():
            segment_refresh_task.delay(segment.pk)

    transaction.on_commit(queue)
    return True
