"""Noisy segment sizes protect something only if the same tokens cannot read exact ones: exact sizes,
trends, member lists and rule counts need segments:exact; a DP release's epsilon is capped, and each
token has a privacy budget over a sliding window."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from access.models import PrivacyBudgetSpend
from segments.models import Segment, SegmentKind, SegmentStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def segment():
    return Segment.objects.create(name="s", kind=SegmentKind.RULE, rule="frequency > 1", status=SegmentStatus.READY,
                                  size=37)


def test_without_segments_exact_sizes_and_trends_are_withheld(segment, make_api_client):
    reader = make_api_client("profiles:read")

    detail = reader.get(f"/api/v1/segments/{segment.pk}").json()
    listed = reader.get("/api/v1/segments").json()["results"][0]

    assert detail["size"] is None and detail["trend"] is None
    assert listed["size"] is None and listed["trend"] is None


def test_with_segments_exact_sizes_are_exact(segment, make_api_client):
    detail = make_api_client("profiles:read", "segments:exact").get(f"/api/v1/segments/{segment.pk}").json()

    assert detail["size"] == 37 and detail["trend"] == []


@pytest.mark.parametrize("path", ["/api/v1/segments/{id}/members", "/api/v1/segments/{id}/members.csv"])
def test_member_lists_need_segments_exact(segment, make_api_client, path):
    path = path.format(id=segment.pk)

    assert make_api_client("profiles:read", "segments:write").get(path).status_code == 403
    assert make_api_client("profiles:read", "segments:exact").get(path).status_code == 200


def test_a_rule_check_counts_matches_only_for_segments_exact(make_api_client):
    body = {"rule": "frequency > 1"}

    plain = make_api_client("segments:write").post("/api/v1/segments/rules/check", body, format="json").json()
    exact = make_api_client("segments:write", "segments:exact").post("/api/v1/segments/rules/check", body,
                                                                     format="json").json()

    assert plain["matching"] is None and exact["matching"] == 0


@override_settings(DP_EPSILON_MAX=1.0)
def test_an_epsilon_above_the_cap_is_refused(segment, make_api_client):
    response = make_api_client("profiles:read").get("/api/v1/segments/sizes?epsilon=5")

    assert response.status_code == 400 and "epsilon" in response.json()


@override_settings(DP_EPSILON_MAX=1.0, DP_TOKEN_BUDGET=2.0, DP_BUDGET_WINDOW_DAYS=30)
def test_each_token_spends_its_own_budget_over_the_window(segment, make_api_client):
    spender, other = make_api_client("profiles:read"), make_api_client("profiles:read")

    first = spender.get("/api/v1/segments/sizes?epsilon=1")
    second = spender.get("/api/v1/segments/sizes?epsilon=1")
    exhausted = spender.get("/api/v1/segments/sizes?epsilon=0.5")

    assert first.status_code == second.status_code == 200
    assert first.json()["budget_remaining"] == 1.0 and second.json()["budget_remaining"] == 0.0
    assert exhausted.status_code == 429 and exhausted.json()["error"] == "privacy_budget_exhausted"
    assert other.get("/api/v1/segments/sizes?epsilon=1").status_code == 200

    PrivacyBudgetSpend.objects.update(spent_at=timezone.now() - timedelta(days=31))
    assert spender.get("/api/v1/segments/sizes?epsilon=1").status_code == 200
