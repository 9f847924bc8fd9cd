"""Reads of the segments app."""

import csv
from collections.abc import Iterator

from django.db.models import QuerySet

from segments.models import Segment, SegmentMembership


def segments_list() -> QuerySet[Segment]:
    return Segment.objects.all()


def segments_of_customer(*, customer_id: int) -> list[dict]:
    return [
        {"id": pk, "name": name, "kind": kind}
        for pk, name, kind in SegmentMembership.objects.filter(customer_id=customer_id)
        .order_by("segment_id").values_list("segment_id", "segment__name", "segment__kind")
    ]


def segment_members(*, segment: Segment) -> QuerySet[SegmentMembership]:
    """Members in a stable order (best score first for scored segments, then customer id)."""
    return (
        SegmentMembership.objects.filter(segment=segment).select_related("customer")
        .only("score", "added_at", "customer__key").order_by("-score", "customer_id")
    )


def segment_trend(*, segment: Segment, last: int = 30) -> list[dict]:
    snapshots = segment.snapshots.order_by("-taken_at")[:last]
    return [{"size": s.size, "taken_at": s.taken_at} for s in reversed(snapshots)]


class _Line:
    def write(self, value: str) -> str:
        return value


def segment_members_csv(*, segment: Segment) -> Iterator[str]:
    """The members as CSV lines (key, score, member since), streamed in chunks."""
    writer = csv.writer(_Line())
    yield writer.writerow(["key", "score", "member_since"])
    for m in segment_members(segment=segment).iterator(chunk_size=5000):
        yield writer.writerow([m.customer.key, "" if m.score is None else m.score, m.added_at.isoformat()])
