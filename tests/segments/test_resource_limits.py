"""One API token cannot make the segment machinery do unbounded work: segments per token and in all
are capped, repeated refresh requests queue one task, the rule check counts up to a bound, and
heavy audience work has its own queue (a flood of lookalike refreshes never delays real-time
profile refreshes). Each refusal is a 400 that names the field and the limit."""

import pytest
import redis

from config.celery import app
from ingestion.import_jobs import synthetic_shop_load
from pipeline import flows
from segments.models import Segment
from segments.tasks import segment_refresh_task

pytestmark = pytest.mark.django_db(transaction=True)


def _rule_segment(client, name: str):
    return client.post("/api/v1/segments", {"name": name, "kind": "rule", "rule": "events >= 1"}, format="json")


def test_segments_are_capped_per_token_and_in_all(make_api_client, settings):
    settings.SEGMENTS_MAX_PER_TOKEN = 2
    settings.SEGMENTS_MAX = 3
    first, second = make_api_client("segments:write"), make_api_client("segments:write")

    assert [_rule_segment(first, f"a{i}").status_code for i in range(2)] == [201, 201]
    refused = _rule_segment(first, "a3")
    assert refused.status_code == 400 and "SEGMENTS_MAX_PER_TOKEN" in refused.json()["segments"][0]
    assert _rule_segment(second, "b1").status_code == 201
    refused = _rule_segment(second, "b2")
    assert refused.status_code == 400 and "SEGMENTS_MAX" in refused.json()["segments"][0]
    # a clustering counts its k segments, all or nothing
    clusters = second.post("/api/v1/segments/clusters", {"k": 2}, format="json")
    assert clusters.status_code == 400 and "segments" in clusters.json()
    assert Segment.objects.count() == 3

    Segment.objects.filter(name="a1").delete()
    assert _rule_segment(first, "a3").status_code == 201  # room again


def test_a_segment_whose_refresh_is_queued_is_not_queued_again(make_api_client):
    client = make_api_client("segments:write")
    segment_id = _rule_segment(client, "everyone").json()["id"]  # creating it queued its first refresh

    answers = [client.post(f"/api/v1/segments/{segment_id}/refresh").json()["refresh"] for _ in range(3)]

    assert answers == ["already_queued"] * 3
    segment_refresh_task.apply(args=[segment_id])  # the refresh starts: a later request queues again
    assert client.post(f"/api/v1/segments/{segment_id}/refresh").json()["refresh"] == "queued"


def test_segment_work_has_its_own_queue():
    app.control.purge()
    segment_refresh_task.delay(0)

    broker = redis.Redis.from_url(app.conf.broker_url)
    assert {q: broker.llen(q) for q in ("profiles", "segments")} == {"profiles": 0, "segments": 1}
    app.control.purge()


def test_the_rule_check_counts_up_to_its_bound(make_api_client, settings):
    synthetic_shop_load(customers=60, events=3_000, seed=3)
    flows.profiles_build()
    client = make_api_client("segments:write", "segments:exact")  # counts are exact sizes

    settings.RULE_CHECK_MAX_COUNT = 5
    capped = client.post("/api/v1/segments/rules/check", {"rule": "events >= 1"}, format="json").json()
    settings.RULE_CHECK_MAX_COUNT = 100_000
    exact = client.post("/api/v1/segments/rules/check", {"rule": "events >= 1"}, format="json").json()

    assert (capped["matching"], capped["capped"]) == (5, True)
    assert exact["matching"] > 5 and exact["capped"] is False


def test_a_multi_query_lookalike_segment_is_bounded_by_seeds_times_size(make_api_client, settings):
    synthetic_shop_load(customers=60, events=3_000, seed=4)
    flows.profiles_build()
    settings.SEGMENT_MAX_SEARCH_ROWS = 100
    from profiles.models import Profile

    keys = list(Profile.objects.values_list("customer__key", flat=True)[:20])
    client = make_api_client("segments:write")

    refused = client.post("/api/v1/segments", {"name": "l", "kind": "lookalike", "seed_keys": keys, "size": 10,
                                              "method": "multi_query"}, format="json")
    accepted = client.post("/api/v1/segments", {"name": "l", "kind": "lookalike", "seed_keys": keys[:5], "size": 10,
                                               "method": "multi_query"}, format="json")

    assert refused.status_code == 400 and "SEGMENT_MAX_SEARCH_ROWS" in refused.json()["size"][0]
    assert accepted.status_code == 201
