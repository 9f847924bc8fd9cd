"""Celery tasks of the profiles app (queue `profiles`): thin, idempotent callers of services and
pipeline flows, and the functions that queue them."""

import contextlib
import logging

from celery import chord, shared_task, signals
from django.conf import settings
from django.db import transaction

from config.celery import BROKER_ERRORS, IDEMPOTENT_TASK
from ingestion import services as ingestion_services
from ingestion.selectors import import_job_customer_ids
from pipeline import flows
from profiles import builds, feature_sets, services

logger = logging.getLogger(__name__)


@shared_task(**IDEMPOTENT_TASK)
def profile_build_chunk_task(build_id: int, index: int, first_id: int, last_id: int) -> int:
    return builds.profile_build_chunk(build_id=build_id, index=index, first_id=first_id, last_id=last_id)


@shared_task(**IDEMPOTENT_TASK)
def profile_build_finish_task(build_id: int) -> str:
    """Close the build, then refit the customer-value model on the same data (forecasts, demand
    and audiences follow the profiles)."""
    from crm.tasks import clv_fit_task

    status = builds.profile_build_finish(build_id=build_id).status
    clv_fit_task.delay()
    similarity_snapshots_refresh_task.delay()
    return status


@shared_task(**IDEMPOTENT_TASK)
def similarity_snapshots_refresh_task() -> dict:
    """Rebuild the in-memory similarity snapshots that are missing or far behind (profiles.memory_search)."""
    from profiles.memory_search import memory_snapshots_refresh

    return {space: report["profiles"] for space, report in memory_snapshots_refresh().items()}


@shared_task(**IDEMPOTENT_TASK)
def profile_build_fail_task(build_id: int) -> None:
    """Chord error callback: record the failure and put back any dropped vector index."""
    builds.profile_build_fail(build_id=build_id, error="a chunk failed; see the worker log")


@shared_task(**IDEMPOTENT_TASK)
def profile_build_task() -> int | None:
    """A batch build started from the admin or the nightly schedule: fit here, chunks fan out.
    Does nothing while another build runs."""
    if builds.profile_build_running():
        return None
    return profile_build_queue().pk


# No result kept: nobody reads it, and storing it needs Redis after the work is done, so with Redis
# away a finished refresh was counted failed and dead-lettered (the chaos bench's Redis restart).
@shared_task(**IDEMPOTENT_TASK, ignore_result=True)
def profiles_refresh_task(customer_ids: list[int]) -> int:
    """Refresh these customers' profiles (pipeline.flows.customers_refresh). Safe to repeat: a
    refresh recomputes from the store and never replaces a profile read from a later snapshot."""
    return flows.customers_refresh(customer_ids=customer_ids)


@shared_task(**IDEMPOTENT_TASK)
def profiles_refresh_after_import_task(import_job_id: int) -> dict:
    """Customers who got new events from an import: pipeline's rule decides (refresh or build)."""
    return events_landed_queue(customer_ids=import_job_customer_ids(import_job_id=import_job_id), bulk=True)


def events_landed_queue(*, customer_ids, bulk: bool) -> dict:
    """The Celery path after events landed (the inline one is pipeline.flows.events_landed): queue
    refreshes of these customers, or one batch build, by the same rule. Call after the events commit."""
    ids = sorted({int(c) for c in customer_ids})
    action = flows.events_landed_action(customers=len(ids), bulk=bulk)
    outcome = {"customers": len(ids), "action": action}
    if action == flows.LandedAction.REFRESH:
        outcome["queued"] = profiles_refresh_queue(customer_ids=ids)
    elif action == flows.LandedAction.BUILD:
        build = profile_build_queue_unless_running(require_profiles=False)
        if build is None:
            outcome["action"] = "build already running"
        else:
            outcome["build_id"] = build.pk
    return outcome


def profile_build_queue(*, created_by=None, chunk_customers: int | None = None, sample_size: int | None = None):
    """Fit here, then fan the chunks out to workers as a Celery chord whose callback closes the
    build (and queues the CLV refit)."""
    build = builds.profile_build_start(created_by=created_by, chunk_customers=chunk_customers, sample_size=sample_size)
    header = [profile_build_chunk_task.s(build.pk, i, lo, hi) for i, (lo, hi) in enumerate(build.ranges)]
    if header:
        callback = profile_build_finish_task.si(build.pk).on_error(profile_build_fail_task.si(build.pk))
        transaction.on_commit(lambda: chord(header)(callback))
    else:
        builds.profile_build_finish(build_id=build.pk)
    return build


def profile_build_queue_unless_running(*, require_profiles: bool = True):
    """Queue a batch build unless one is running. After a model switch (`require_profiles`): so the
    fused vectors take the new embeddings in, and only when there are profiles to rebuild."""
    if require_profiles and feature_sets.feature_set_active() is None:
        return None
    if builds.profile_build_running():
        return None
    return profile_build_queue()


def profiles_refresh_queue(*, customer_ids) -> int:
    """Queue refreshes for customers with new events (API batches, identify), coalescing bursts
    (profiles.services.refresh_pending_mark). Returns how many customers were queued. Call after
    the events are committed. Raises one of config.celery.BROKER_ERRORS when the broker is away,
    having cleared the marks of the customers it could not queue (so a later try queues them)."""
    if feature_sets.feature_set_active() is None:
        return 0
    fresh = services.refresh_pending_mark(customer_ids=customer_ids)
    batch = settings.PROFILE_REFRESH_BATCH_CUSTOMERS
    for i in range(0, len(fresh), batch):
        try:
            profiles_refresh_task.delay(fresh[i:i + batch])
        except BROKER_ERRORS:
            with contextlib.suppress(*BROKER_ERRORS):  # marks left behind only delay by their TTL
                services.refresh_pending_clear(customer_ids=fresh[i:])
            raise
    return len(fresh)


def refresh_outbox_queue(*, ids: list[int] | None = None, limit: int | None = None) -> int:
    """Queue the refreshes that stored events are owed (ingestion.models.RefreshOutbox): these
    entries, or every entry, `limit` at a time; each entry is deleted in the transaction that
    queued it. Stops at the first broker error, leaving the rest (and the failed batch, its attempt
    counted) for the next drain; a refresh queued twice is harmless. Returns the entries queued."""
    limit = limit or settings.REFRESH_OUTBOX_DRAIN_BATCH
    queued = 0
    while True:
        claimed: list[int] = []
        try:
            with transaction.atomic():
                entries = ingestion_services.refresh_outbox_claim(ids=ids, limit=limit)
                claimed = [entry.pk for entry in entries]
                for entry in entries:
                    events_landed_queue(customer_ids=entry.customer_ids, bulk=entry.bulk)
                ingestion_services.refresh_outbox_delete(ids=claimed)
        except BROKER_ERRORS as exc:
            logger.warning("%d profile refresh(es) left in the outbox: broker unavailable (%s)", len(claimed), exc)
            ingestion_services.refresh_outbox_failed(ids=claimed, error=f"{exc.__class__.__name__}: {exc}")
            return queued
        queued += len(claimed)
        if ids is not None or len(claimed) < limit:
            return queued


def refresh_outbox_queue_on_commit(*, ids: list[int | None]) -> None:
    """Once the caller's transaction (the one that stored the entries) commits, queue these outbox
    entries: now if the broker answers, else the next drain does. None ids (nothing owed) are skipped."""
    owed = [i for i in ids if i is not None]
    if owed:
        transaction.on_commit(lambda: refresh_outbox_queue(ids=owed))


@shared_task(**IDEMPOTENT_TASK)
def refresh_outbox_drain_task() -> int:
    """Celery beat (and every worker's start): queue what the outbox still holds."""
    return refresh_outbox_queue()


@signals.worker_ready.connect
def _refresh_outbox_drain_at_worker_start(sender=None, **kwargs):
    """A worker that (re)connected drains what batches stored while the broker was away still owe."""
    with contextlib.suppress(*BROKER_ERRORS):
        refresh_outbox_drain_task.delay()
