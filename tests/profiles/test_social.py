"""Social traits (degree, referrals both ways, neighbours' net spend) and consent-gated attributes."""

import pytest

from ingestion.pseudonyms import customer_key
from profiles import builds
from profiles.models import Profile

pytestmark = pytest.mark.django_db


def test_social_traits_count_edges_both_ways_and_average_neighbours_net_spend(events_client):
    events = [
        {"customer_id": who, "event_type": "purchase", "item_id": "sku-1", "value": value, "timestamp": f"2025-01-0{i + 1}T10:00:00Z"}
        for i, (who, value) in enumerate([("ann", "10.00"), ("bob", "30.00"), ("cat", "50.00")])
    ] + [{"customer_id": "cat", "event_type": "refund", "item_id": "sku-1", "value": "20.00", "timestamp": "2025-01-05T10:00:00Z"}]
    assert events_client.post("/api/v1/events", {"events": events}, format="json").status_code == 200
    edges = [
        {"source_id": "ann", "target_id": "bob", "relation": "follow"},
        {"source_id": "ann", "target_id": "cat", "relation": "referral"},
        {"source_id": "cat", "target_id": "ann", "relation": "follow"},
    ]
    assert events_client.post("/api/v1/social-edges", {"edges": edges}, format="json").status_code == 200

    builds.profiles_build()

    def traits(name):
        return Profile.objects.get(customer__key=customer_key(source="default", external_id=name)).traits

    ann, cat = traits("ann"), traits("cat")
    assert (ann["degree"], ann["referrals_made"], ann["referrals_received"]) == (2, 1, 0)
    assert ann["neighbours_net_value"] == pytest.approx((30.0 + 30.0) / 2)  # bob 30; cat 50 − 20, once though two edges
    assert (cat["degree"], cat["referrals_made"], cat["referrals_received"]) == (1, 0, 1)
    assert cat["neighbours_net_value"] == pytest.approx(10.0)
    assert cat["net_monetary"] == pytest.approx(30.0)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_attributes_enter_the_profile_only_with_consent_to_profiling(events_client):
    customers = [
        {"external_id": "yes", "region": "West", "gender": "female", "age": 30},
        {"external_id": "no", "region": "West", "gender": "female", "age": 30, "consent_profiling": False},
    ]
    assert events_client.post("/api/v1/customers", {"customers": customers}, format="json").status_code == 200
    events = [{"customer_id": who, "event_type": "view", "item_id": "sku-1", "timestamp": "2025-01-01T10:00:00Z"}
              for who in ("yes", "no")]
    assert events_client.post("/api/v1/events", {"events": events}, format="json").status_code == 200

    builds.profiles_build()

    def traits(name):
        return Profile.objects.get(customer__key=customer_key(source="default", external_id=name)).traits

    assert (traits("yes")["region"], traits("yes")["gender"], traits("yes")["age_band"]) == ("West", "female", "25-34")
    # without consent nothing is profiled, neither attributes nor behaviour (restriction of processing)
    assert not Profile.objects.filter(customer__key=customer_key(source="default", external_id="no")).exists()


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_a_shop_of_one_customer_still_builds_a_profile(events_client):
    event = {"customer_id": "only", "event_type": "purchase", "item_id": "sku-1", "value": "5.00", "timestamp": "2025-01-01T10:00:00Z"}
    assert events_client.post("/api/v1/events", {"events": [event]}, format="json").status_code == 200

    build = builds.profiles_build()

    profile = Profile.objects.get()
    assert build.profiles_written == 1 and profile.traits["monetary"] == 5.0
    assert profile.feature_set.report["pca"]["explained_variance"] is None  # undefined for one customer
    assert profile.value_tier == "high" and profile.lifecycle_stage == "new"
