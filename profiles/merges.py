"""Identity resolution: merge one customer into another (an anonymous visitor into the customer an
identify call names), journalled in IdentityMerge, and undo a merge exactly from its journal.
Merges never cross a suppressed subject."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.db.models import DateTimeField
from django.utils import timezone
from pgvector.django import VectorField

from ingestion import merging
from ingestion.pseudonyms import anonymous_source
from ingestion.selectors import customer_by_external_id
from ingestion.models import Customer
from privacy.guard import ingest_guard
from privacy.selectors import customer_is_suppressed, subject_is_suppressed
from profiles.models import FeatureSet, IdentityMerge, MergeMethod, Profile
from profiles.feature_sets import feature_set_active
from profiles.services import profiles_store


class IdentityMergeRefused(Exception):
    """A merge or an undo that must not happen; nothing was written."""


class IdentityAlreadyMerged(IdentityMergeRefused):
    """One of the customers is already merged into another."""


class IdentitySuppressed(IdentityMergeRefused):
    """One side is a suppressed subject. The message says neither which side nor why."""

    def __init__(self):
        super().__init__("identity cannot be merged")


class IdentityMergeUndoRefused(IdentityMergeRefused):
    """The merge is undone already, or a later merge builds on it."""


class AnonymousIdUnknown(LookupError):
    """No event ever carried this anonymous id."""


# --- merge ---------------------------------------------------------------------------------------


@transaction.atomic
def identities_merge(
    *, merged: Customer, survivor: Customer, method: str, reason: str, confidence: float, user=None
) -> IdentityMerge:
    """Merge `merged` into `survivor`: its events and social edges move to the survivor, its profile
    goes, the survivor's is recomputed (when a feature set is active). The journal entry keeps the
    moved event ids, the re-pointed and dropped edges and both profiles as they were, for undo."""
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if merged.pk == survivor.pk:
        raise IdentityMergeRefused("a customer cannot be merged into itself")
    locked = _customers_lock(merged.pk, survivor.pk)
    merged, survivor = locked[merged.pk], locked[survivor.pk]
    if customer_is_suppressed(key=merged.key) or customer_is_suppressed(key=survivor.key):
        raise IdentitySuppressed()
    if merged.merged_into_id is not None or survivor.merged_into_id is not None:
        raise IdentityAlreadyMerged("one of the customers is already merged into another")

    snapshots = {"merged": _customer_snapshot(merged.pk), "survivor": _customer_snapshot(survivor.pk)}
    event_ids = merging.events_move(from_id=merged.pk, to_id=survivor.pk)
    edges = merging.edges_repoint(merged_id=merged.pk, survivor_id=survivor.pk)
    merging.customer_merged_into_set(customer_id=merged.pk, survivor_id=survivor.pk)
    Profile.objects.filter(customer_id=merged.pk).delete()
    feature_set = feature_set_active()
    if feature_set is not None:
        profiles_store(customer_ids=[survivor.pk], feature_set=feature_set)
    return IdentityMerge.objects.create(
        merged=merged, survivor=survivor, method=method, reason=reason, confidence=confidence,
        moved_event_ids=event_ids, moved_edges=edges, profile_snapshots=snapshots, created_by=user,
    )


@transaction.atomic
def identify_call(
    *, source: str, anonymous_id: str, customer_id: str, reason: str = "identify call", user=None
) -> IdentityMerge:
    """An app says anonymous visitor `anonymous_id` is customer `customer_id` (created if new, as
    events do): merge them with confidence 1. Idempotent: the same pair again returns the live
    merge. Suppression of either id is checked before anything is read or written, under the
    ingest lock like every writer of subject data: an erasure of either subject running now either
    finishes first (and this call sees the suppression) or waits until this merge has committed and
    then erases what it wrote; without the lock it could re-create the erased customer."""
    anonymous_namespace = anonymous_source(source)
    with connection.cursor() as cursor:
        ingest_guard(cursor)
    if subject_is_suppressed(source=anonymous_namespace, external_id=anonymous_id) or subject_is_suppressed(
        source=source, external_id=customer_id
    ):
        raise IdentitySuppressed()
    anonymous = customer_by_external_id(source=anonymous_namespace, external_id=anonymous_id)
    if anonymous is None:
        raise AnonymousIdUnknown("unknown anonymous id")
    known = merging.customer_get_or_create(source=source, external_id=customer_id)
    if existing := _live_merge(merged=anonymous, survivor=known):
        return existing
    try:
        return identities_merge(
            merged=anonymous, survivor=known, method=MergeMethod.IDENTIFY, reason=reason, confidence=1.0, user=user
        )
    except IdentityAlreadyMerged:
        if existing := _live_merge(merged=anonymous, survivor=known):  # an identical call committed first
            return existing
        raise


@transaction.atomic
def alias_call(
    *, source: str, previous_id: str, user_id: str, reason: str = "alias call", user=None
) -> IdentityMerge | None:
    """An app says `previous_id` is now `user_id` (the Segment Spec's alias). A `previous_id` that
    events carried as an anonymous id is an identify call; one that names a known customer of
    `source` merges that customer into `user_id` (created if new). Returns the merge, or None when
    no event or customer ever carried `previous_id` (nothing to merge). Same suppression rule and
    lock as identify_call; the same pair again returns the live merge."""
    if customer_by_external_id(source=anonymous_source(source), external_id=previous_id) is not None:
        return identify_call(source=source, anonymous_id=previous_id, customer_id=user_id, reason=reason, user=user)
    with connection.cursor() as cursor:
        ingest_guard(cursor)
    if subject_is_suppressed(source=source, external_id=previous_id) or subject_is_suppressed(
        source=source, external_id=user_id
    ):
        raise IdentitySuppressed()
    previous = customer_by_external_id(source=source, external_id=previous_id)
    if previous is None:
        return None
    survivor = merging.customer_get_or_create(source=source, external_id=user_id)
    if existing := _live_merge(merged=previous, survivor=survivor):
        return existing
    return identities_merge(
        merged=previous, survivor=survivor, method=MergeMethod.ALIAS, reason=reason, confidence=1.0, user=user
    )


def _live_merge(*, merged: Customer, survivor: Customer) -> IdentityMerge | None:
    return IdentityMerge.objects.filter(merged=merged, survivor=survivor, undone_at__isnull=True).first()


# --- undo ----------------------------------------------------------------------------------------


@transaction.atomic
def identity_merge_undo(*, merge: IdentityMerge, reason: str, user=None) -> IdentityMerge:
    """Put both customers back as they were before `merge`: exactly the recorded events return,
    edges are re-pointed back and dropped ones re-created, and both profile rows are restored
    from the journal. A customer that got events since the merge is recomputed instead."""
    merge = IdentityMerge.objects.select_for_update().get(pk=merge.pk)
    if merge.undone_at is not None:
        raise IdentityMergeUndoRefused(f"merge #{merge.pk} was undone already")
    locked = _customers_lock(merge.merged_id, merge.survivor_id)
    merged, survivor = locked[merge.merged_id], locked[merge.survivor_id]
    later = IdentityMerge.objects.filter(merged=survivor, undone_at__isnull=True).first()
    if later is not None:
        raise IdentityMergeUndoRefused(f"undo merge #{later.pk} first: it merged this survivor into another customer")
    if merged.merged_into_id != survivor.pk:
        raise IdentityMergeUndoRefused(f"customer {merged.pk} is no longer merged into {survivor.pk}")

    merging.events_move(from_id=survivor.pk, to_id=merged.pk, event_ids=merge.moved_event_ids)
    merging.edges_restore(merged_id=merged.pk, survivor_id=survivor.pk, edges=merge.moved_edges)
    merging.customer_merged_into_set(customer_id=merged.pk, survivor_id=None)
    feature_set = feature_set_active()
    stale = [
        customer.pk
        for role, customer in (("merged", merged), ("survivor", survivor))
        if not _profile_put_back(customer_id=customer.pk, snapshot=merge.profile_snapshots[role], recompute=feature_set is not None)
    ]
    if stale:
        profiles_store(customer_ids=stale, feature_set=feature_set)
    merge.undone_at = timezone.now()
    merge.undone_by = user
    merge.undo_reason = reason
    merge.save(update_fields=["undone_at", "undone_by", "undo_reason"])
    return merge


# --- the pieces ----------------------------------------------------------------------------------


def _customers_lock(*customer_ids: int):
    try:
        return merging.customers_lock(*customer_ids)
    except merging.CustomerGone as exc:
        raise IdentityMergeRefused(str(exc)) from exc


def _event_stats(customer_id: int) -> dict:
    """How many events a customer has and when the newest arrived: what a profile was built from."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), max(ingested_at) FROM ingestion_event WHERE customer_id = %s", [customer_id])
        events, last_ingested_at = cursor.fetchone()
    return {"events": events, "last_ingested_at": last_ingested_at.isoformat() if last_ingested_at else None}


def _profile_as_json(profile: Profile) -> dict:
    """Every column of a profile row as JSON (vectors as lists, times as ISO 8601)."""
    out = {}
    for field in Profile._meta.concrete_fields:
        value = getattr(profile, field.attname)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif value is not None and isinstance(field, VectorField):
            value = [float(v) for v in value]
        out[field.attname] = value
    return out


def _profile_from_json(values: dict) -> dict:
    out = {}
    for field in Profile._meta.concrete_fields:
        value = values.get(field.attname)
        if value is not None and isinstance(field, DateTimeField):
            value = datetime.fromisoformat(value)
        out[field.attname] = value
    return out


def _customer_snapshot(customer_id: int) -> dict:
    profile = Profile.objects.filter(pk=customer_id).first()
    return {"profile": _profile_as_json(profile) if profile else None, **_event_stats(customer_id)}


def _profile_put_back(*, customer_id: int, snapshot: dict, recompute: bool) -> bool:
    """Restore the profile row exactly as journalled. Returns False, restoring nothing, when it
    should be recomputed instead (`recompute` allowed): the customer's events changed since the
    merge, or the row's feature set is gone."""
    saved = snapshot["profile"]
    unchanged = _event_stats(customer_id) == {"events": snapshot["events"], "last_ingested_at": snapshot["last_ingested_at"]}
    restorable = saved is None or FeatureSet.objects.filter(pk=saved["feature_set_id"]).exists()
    if recompute and not (unchanged and restorable):
        return False
    if saved is None or not restorable:
        Profile.objects.filter(pk=customer_id).delete()
    else:
        _profile_restore(_profile_from_json(saved))
    return True


def _profile_restore(values: dict) -> None:
    from training.models import ModelVersion

    if values["model_version_id"] is not None and not ModelVersion.objects.filter(pk=values["model_version_id"]).exists():
        values["model_version_id"] = None
    customer_id = values.pop("customer_id")
    # QuerySet.update writes computed_at as given; save() would stamp it with now (auto_now).
    if not Profile.objects.filter(pk=customer_id).update(**values):
        Profile(customer_id=customer_id, **values).save(force_insert=True)
        Profile.objects.filter(pk=customer_id).update(computed_at=values["computed_at"])
