"""The flows that cross apps, each one plain function that the inline path (commands, tests) and the
Celery path (pipeline's callers in */tasks.py) share. Nothing else chains apps: a service writes its
own app's tables and returns; what follows it across apps is written here, once.

    events land ─▶ events_landed: refresh those customers, or one batch build when there are too many
    refresh ─▶ customers_refresh: re-encode (training) → store profile (profiles) → re-score (crm)
    profile build ─▶ clv_refit: CLV fit → demand forecast (crm) → audience segments (segments)
    training run ─▶ training_run: train + gate (training) → model_version_switch
    model switch ─▶ model_version_switch: encode (training) → write vectors (profiles) → mark active (training)
    inline build ─▶ profiles_build: batch build (profiles) → in-memory similarity snapshot (profiles) → clv_refit
    Segment-Spec batch ─▶ segment_batch_ingest: events, customer upserts (ingestion) → identity merges (profiles)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from config.celery import BROKER_ERRORS

from crm import services as crm_services
from crm.models import Audience
from crm.selectors import customers_with_new_orders
from ingestion import segment_spec
from ingestion import selectors as ingestion_selectors
from ingestion import services as ingestion_services
from ingestion.pseudonyms import anonymous_source
from ingestion.row_validation import CustomerRow
from profiles import selectors as profile_selectors
from profiles import services as profile_services
from profiles import builds as profile_builds
from profiles import memory_search as profile_memory_search
from profiles import feature_sets as profile_feature_sets
from profiles import merges
from segments import services as segment_services
from segments.models import Segment, SegmentKind
from training import launch as training_launch
from training import services as training_services

logger = logging.getLogger(__name__)


class LandedAction:
    NONE = "none"
    REFRESH = "refresh"
    BUILD = "batch build"


def events_landed_action(*, customers: int, bulk: bool) -> str:
    """What new events (or attributes) of `customers` customers call for, on either path: nothing;
    refreshing each of them; or one batch build, when per-customer refreshes would cost more than a
    build, or when nothing is profiled yet and the events came in bulk (a file import). A trickle of
    API events into an unprofiled store waits for the first build (nightly, or an operator's)."""
    if not customers:
        return LandedAction.NONE
    if profile_feature_sets.feature_set_active() is None:
        return LandedAction.BUILD if bulk else LandedAction.NONE
    if customers > settings.PROFILE_REFRESH_MAX_CUSTOMERS:
        return LandedAction.BUILD
    return LandedAction.REFRESH


def events_landed(*, customer_ids: list[int], bulk: bool) -> dict:
    """The inline path after events landed (the Celery path is profiles.tasks.events_landed_queue):
    refresh these customers here, in batches, or build every profile here (with its CLV refit)."""
    action = events_landed_action(customers=len(customer_ids), bulk=bulk)
    outcome = {"customers": len(customer_ids), "action": action}
    if action == LandedAction.REFRESH:
        batch = settings.PROFILE_REFRESH_BATCH_CUSTOMERS
        outcome["profiles"] = sum(customers_refresh(customer_ids=list(customer_ids[i:i + batch]))
                                  for i in range(0, len(customer_ids), batch))
    elif action == LandedAction.BUILD:
        if profile_builds.profile_build_running():
            outcome["action"] = "build already running"
        else:
            outcome["build_id"] = profiles_build().pk
    return outcome


def customers_refresh(*, customer_ids: list[int]) -> int:
    """Recompute these customers' profiles after new events: their learned embedding under the active
    model, their traits and fused vector, then their churn/value/risk forecast when an order moved
    (a view changes none of them; the nightly fit re-scores everyone as time passes). Returns the
    number of profiles written."""
    customer_ids = [int(c) for c in customer_ids]
    try:
        profile_services.refresh_pending_clear(customer_ids=customer_ids)
    except BROKER_ERRORS as exc:
        # Redis away: the refresh itself needs only the database, so it goes on (the chaos bench saw
        # refreshes dead-lettered here during a Redis restart); marks left behind only delay the
        # customers' next refresh by their TTL
        logger.warning("refresh pending marks of %d customer(s) not cleared: %s", len(customer_ids), exc)
    customer_ids = ingestion_selectors.customers_profiling_allowed(customer_ids=customer_ids)
    feature_set = profile_feature_sets.feature_set_active()
    if feature_set is None:
        return 0
    version = training_services.model_version_active()
    fresh = None
    if version is not None:
        fresh = training_services.customer_embeddings_encode(customer_ids=customer_ids, version=version)
    written = profile_services.profiles_store(customer_ids=customer_ids, feature_set=feature_set,
                                              fresh_embeddings=fresh, model_version_id=version.pk if version else None)
    crm_services.predictions_score(customer_ids=customers_with_new_orders(customer_ids=customer_ids))
    return written


AUDIENCE_SEGMENT_NAMES = {
    Audience.HIGH_VALUE: "CRM · high value",
    Audience.RISING: "CRM · rising",
    Audience.AT_RISK_HIGH_VALUE: "CRM · at-risk high value",
    Audience.LIKELY_TO_CHURN: "CRM · likely to churn",
}


def audience_segments_refresh() -> dict[str, int]:
    """The CRM audiences as rule segments (created once, then kept), refreshed after a fit so
    marketing can list, export and trend them like any segment. Returns each one's size."""
    sizes = {}
    for audience, name in AUDIENCE_SEGMENT_NAMES.items():
        segment = Segment.objects.filter(kind=SegmentKind.RULE, name=name).first()
        if segment is None:
            segment = segment_services.segment_create_rule(name=name, rule=f'audience = "{audience.value}"',
                                                           refresh="none")
        sizes[name] = segment_services.segment_refresh(segment_id=segment.pk)
    return sizes


def clv_refit(*, horizon_days: int | None = None) -> dict:
    """After profiles were built (or on demand): fit the customer-value model and score everyone,
    forecast category demand with that fit, refresh the audience segments. {"skipped": why} when the
    store has too little purchase history to fit."""
    try:
        fit = crm_services.clv_fit(horizon_days=horizon_days)
    except crm_services.NotEnoughHistory as exc:
        logger.info("CLV fit skipped: %s", exc)
        return {"skipped": str(exc)}
    forecast = crm_services.demand_forecast_make(fit=fit)
    audiences = audience_segments_refresh()
    return {"fit": fit, "demand_forecast": forecast, "audiences": audiences}


def profiles_build(**options):
    """The whole batch build in this process, then the in-memory similarity snapshot and the CLV
    refit on the same data (what the Celery path does with a chord whose callback queues both)."""
    build = profile_builds.profiles_build(**options)
    profile_memory_search.memory_snapshots_refresh()  # the in-memory similarity graph of the new vectors
    clv_refit()
    return build


def model_version_switch(*, version, seqs=None) -> int:
    """Put a model version live: encode every profiled customer with it, write those embeddings into
    the profiles, then write its item vectors and mark it active. Returns the profiles encoded. The
    fused vectors take the new embeddings in at the next build (the caller starts one)."""
    written = 0
    for customer_ids, vectors in training_services.model_version_encode(
        version=version, customer_ids=profile_selectors.profiled_customer_ids(), seqs=seqs,
    ):
        written += profile_services.profile_embeddings_store(customer_ids=customer_ids, vectors=vectors,
                                                             model_version_id=version.pk)
    training_services.model_version_mark_active(version=version)
    return written


def training_run(*, run_id: int, progress=None, rebuild: bool = False, world_size: int = 1):
    """Train a run; a version that passes the gate is switched in, and with `rebuild` the profiles
    are rebuilt here (build + CLV refit) so their fused vectors take it in. Returns (run or None,
    whether a version went live); the Celery path queues its rebuild instead. With `world_size` > 1
    the run trains data-parallel in that many processes (training.launch), each of which calls
    this function as one rank; their rank 0 switches the version in."""
    activated = []

    def activate(version, seqs):
        model_version_switch(version=version, seqs=seqs)
        activated.append(version.pk)

    if world_size > 1:
        run, went_live = training_launch.training_run_launch(run_id=run_id, world_size=world_size)
        activated += [went_live] if went_live else []
    else:
        run = training_services.training_run_execute(run_id=run_id, activate=activate, progress=progress)
    if activated and rebuild and profile_feature_sets.feature_set_active() is not None:
        profiles_build()
    return run, bool(activated)


@dataclass
class SegmentBatchResult:
    received: int  # messages
    events: ingestion_services.BatchResult | None
    customers_written: int
    merges: int  # identify/alias links that merged (or had merged) two identities
    merges_refused: int  # links refused: a suppressed subject, or one side already merged elsewhere
    ignored: int  # messages with nothing for us (group calls, aliases of ids never seen)
    customer_ids: list[int]  # customers whose profiles the batch changed, for events_landed
    outbox_ids: list[int]  # their refreshes, owed in the outbox with the batch (README "Reliability")


def segment_batch_ingest(*, messages: list, source: str = "default", received_at: datetime) -> SegmentBatchResult:
    """A Segment-Spec batch (ingestion.segment_spec) written through the native services in one
    transaction: events (ingestion.services.events_ingest_batch: cleaning, suppression, event ids),
    identify traits (customers_upsert: PII encrypted, suppression and restriction), then the identity
    links (profiles.merges.identify_call / alias_call), so a visitor's events sent in the same batch
    move with the merge. Either every message is valid and all of it is written, or BatchRejected
    lists each bad message by index, fields named as the message spells them, and nothing is."""
    translation = segment_spec.batch_translate(messages, received_at=received_at)
    errors = list(translation.errors)
    customers = _customer_rows(translation.customers, translation.customer_origins, errors)
    visitors = _customer_rows(translation.visitors, translation.visitor_origins, errors)
    visitor_source = anonymous_source(source)
    with transaction.atomic():
        events = None
        if translation.events:  # validated whole before anything is written; rolled back below on any error
            try:
                events = ingestion_services.events_ingest_batch(rows=translation.events, source=source)
            except ingestion_services.BatchRejected as rejected:
                errors += segment_spec.errors_by_message(
                    rejected.errors, translation.event_origins, segment_spec.NATIVE_TO_SPEC)
        if errors:
            raise ingestion_services.BatchRejected(_errors_merged(errors))
        written = 0
        if customers:
            written += ingestion_services.customers_upsert(rows=customers, source=source)
        if visitors:
            written += ingestion_services.customers_upsert(rows=visitors, source=visitor_source)
        merged, refused, unknown, survivors = 0, 0, 0, set()
        links = [(merges.identify_call, {"anonymous_id": a, "customer_id": u}) for a, u in translation.identities]
        links += [(merges.alias_call, {"previous_id": p, "user_id": u}) for p, u in translation.aliases]
        for call, ids in links:
            try:
                merge = call(source=source, **ids)
            except merges.AnonymousIdUnknown:
                merge = None  # an identify of a visitor who sent no event yet: nothing to merge
            except merges.IdentityMergeRefused:
                refused += 1
                continue
            if merge is None:
                unknown += 1
            else:
                merged += 1
                survivors.add(merge.survivor_id)
        event_customer_ids = set(events.customer_ids if events else [])
        customer_ids = set(event_customer_ids) | survivors
        customer_ids |= set(ingestion_selectors.customer_ids_by_external_id(
            source=source, external_ids=[row["external_id"] for row in customers]))
        customer_ids |= set(ingestion_selectors.customer_ids_by_external_id(
            source=visitor_source, external_ids=[row["external_id"] for row in visitors]))
        # the events' own entry (events_ingest_batch) covers their customers; the rest owe one too,
        # in this transaction, so a broker that is away loses no refresh
        outbox_ids = [i for i in (
            events.outbox_id if events else None,
            ingestion_services.refresh_outbox_add(customer_ids=sorted(customer_ids - event_customer_ids)),
        ) if i is not None]
    return SegmentBatchResult(
        received=len(messages), events=events, customers_written=written, merges=merged, merges_refused=refused,
        ignored=translation.ignored + unknown, customer_ids=sorted(customer_ids), outbox_ids=outbox_ids,
    )


def _customer_rows(rows: list[dict], origins: list[int], errors: list[dict]) -> list[dict]:
    """Identify traits checked by the native customer row validator; errors named traits.<field>."""
    if not rows:
        return []
    serializer = CustomerRow(data=rows, many=True)
    if serializer.is_valid():
        return serializer.validated_data
    by_row = serializer.errors
    by_row = by_row.items() if isinstance(by_row, dict) else enumerate(by_row)
    names = {name: segment_spec.CUSTOMER_TO_SPEC.get(name, f"traits.{name}") for name in CustomerRow().fields}
    errors.extend(segment_spec.errors_by_message(
        [{"index": int(i), "errors": e} for i, e in by_row if e], origins, names))
    return []


def _errors_merged(errors: list[dict]) -> list[dict]:
    merged: dict[int, dict] = {}
    for error in errors:
        for name, reasons in error["errors"].items():
            merged.setdefault(error["index"], {}).setdefault(name, []).extend(reasons)
    return [{"index": i, "errors": merged[i]} for i in sorted(merged)]
