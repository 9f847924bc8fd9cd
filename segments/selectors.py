"""Reads of the segments app."""

from collections.abc import Iterator

from django.conf import settings
from django.db.models import QuerySet

from config.compiled_query import CompiledQuery, Slot
from config.csv_stream import csv_lines
from segments.models import Segment, SegmentKind, SegmentMembership


def segments_list() -> QuerySet[Segment]:
    return Segment.objects.all()


# read on every profile request: compiled once per process (config.compiled_query)
_SEGMENTS_OF_CUSTOMER = CompiledQuery(
    lambda customer_id: SegmentMembership.objects.filter(customer_id=customer_id)
    .order_by("segment_id").values_list("segment_id", "segment__name", "segment__kind"),
    customer_id=Slot(-2_000_000_001),
)


def segments_of_customer(*, customer_id: int) -> list[dict]:
    return [{"id": pk, "name": name, "kind": kind} for pk, name, kind in _SEGMENTS_OF_CUSTOMER.rows(customer_id=customer_id)]


def segment_members(*, segment: Segment) -> QuerySet[SegmentMembership]:
    """Members in a stable order (best score first for scored segments, then customer id)."""
    return (
        SegmentMembership.objects.filter(segment=segment).select_related("customer")
        .only("score", "added_at", "customer__key").order_by("-score", "customer_id")
    )


def segment_trend(*, segment: Segment, last: int = 30) -> list[dict]:
    snapshots = segment.snapshots.order_by("-taken_at")[:last]
    return [{"size": s.size, "taken_at": s.taken_at} for s in reversed(snapshots)]


def segment_members_csv(*, segment: Segment) -> Iterator[str]:
    """The members as CSV lines (key, score, member since), streamed in chunks."""
    members = segment_members(segment=segment).iterator(chunk_size=5000)
    return csv_lines(["key", "score", "member_since"],
                     ([m.customer.key, "" if m.score is None else m.score, m.added_at.isoformat()] for m in members))


def segment_rule_check(*, rule: str) -> dict:
    """Whether a rule is valid and, if so, how many visible profiles it selects now: what the
    admin's rule box shows as the operator types. Invalid: the message and where it points."""
    from profiles import selectors as profile_selectors
    from segments.rules import RuleError, rule_parse, rule_to_q

    try:
        parsed = rule_parse(rule)
    except RuleError as error:
        return {"valid": False, "error": error.message, "position": error.position, "column": error.column,
                "message": str(error)}
    # bounded: counting every match of a broad rule over millions of profiles is the cost of a refresh
    cap = settings.RULE_CHECK_MAX_COUNT
    matching = profile_selectors.profiles_visible().filter(rule_to_q(parsed)).values("pk")[:cap + 1].count()
    return {"valid": True, "canonical": str(parsed), "matching": min(matching, cap), "capped": matching > cap}


def segment_seed_keys(*, segment: Segment, limit: int) -> list[str]:
    """Pseudonymous keys of up to `limit` members, best scored first: a segment used as the seed
    of a lookalike."""
    return list(segment_members(segment=segment).values_list("customer__key", flat=True)[:limit])


def segment_members_q(*, segment_id: int):
    """A filter on profiles (or anything with a customer_id) to the members of a segment."""
    from django.db.models import Exists, OuterRef, Q

    return Q(Exists(SegmentMembership.objects.filter(segment_id=segment_id, customer_id=OuterRef("customer_id"))))


def segment_ids_to_refresh() -> list[int]:
    """Every segment's id to refresh, one per clustering (a clustering refreshes as a whole)."""
    seen, ids = set(), []
    for pk, kind, definition in Segment.objects.order_by("pk").values_list("pk", "kind", "definition"):
        if kind == SegmentKind.CLUSTER:
            if definition["clustering"] in seen:
                continue
            seen.add(definition["clustering"])
        ids.append(pk)
    return ids
