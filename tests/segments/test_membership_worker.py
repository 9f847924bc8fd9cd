"""Segment membership is materialised by a real Celery worker: a segment created through the API
becomes ready with its members, and the schedule refreshes every segment (one task per clustering)."""

import time

import pytest

from profiles import builds as profile_builds
from segments import selectors, services
from segments.models import Segment, SegmentStatus
from segments.tasks import segment_refreshes_queue_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def profiled(events_client):
    rows = [{"customer_id": f"c{c}", "event_type": "purchase", "item_id": f"sku-{c % 4}", "value": f"{5 * (c + 1)}.00",
             "timestamp": f"2025-01-{1 + c % 28:02d}T10:00:00Z"} for c in range(40)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    profile_builds.profiles_build()


def _wait_ready(segment_id: int, timeout: float = 60) -> Segment:
    deadline = time.monotonic() + timeout
    while (segment := Segment.objects.get(pk=segment_id)).status == SegmentStatus.PENDING:
        assert time.monotonic() < deadline, "the worker did not refresh the segment"
        time.sleep(0.2)
    return segment


@pytest.mark.worker
def test_a_segment_created_through_the_api_is_filled_by_the_worker(profiled, celery_worker, make_api_client):
    writer = make_api_client("segments:write", "profiles:read", "segments:exact")

    response = writer.post("/api/v1/segments", {"name": "spenders", "kind": "rule", "rule": "monetary >= 100"},
                           format="json")

    assert response.status_code == 201
    segment = _wait_ready(response.json()["id"])
    assert segment.status == SegmentStatus.READY, segment.error
    assert segment.size == 21  # c19 … c39 spent 100 … 200
    assert writer.get(f"/api/v1/segments/{segment.pk}/members?page_size=50").json()["count"] == 21


def test_the_schedule_refreshes_every_segment_once_per_clustering(profiled, settings):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["segments-refresh"]
    assert entry["task"] in app.tasks and entry["schedule"] == settings.SEGMENT_REFRESH_MINUTES * 60
    rule = services.segment_create_rule(name="all", rule="frequency >= 1", refresh="none")
    clusters = services.segments_create_clusters(k=3, space="traits", refresh="none")

    assert selectors.segment_ids_to_refresh() == [rule.pk, clusters[0].pk]
    app.control.purge()
    assert segment_refreshes_queue_task.apply().get() == 2
    app.control.purge()
