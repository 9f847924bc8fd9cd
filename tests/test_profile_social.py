"""Social traits: degree, referrals both ways, and neighbours' net spend."""

import pytest

from ingestion.identity import customer_key
from profiles import services
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

    services.profiles_build()

    def traits(name):
        return Profile.objects.get(customer__key=customer_key(source="default", external_id=name)).traits

    ann, cat = traits("ann"), traits("cat")
    assert (ann["degree"], ann["referrals_made"], ann["referrals_received"]) == (2, 1, 0)
    assert ann["neighbours_net_value"] == pytest.approx((30.0 + 30.0) / 2)  # bob 30; cat 50 − 20, once though two edges
    assert (cat["degree"], cat["referrals_made"], cat["referrals_received"]) == (1, 0, 1)
    assert cat["neighbours_net_value"] == pytest.approx(10.0)
    assert cat["net_monetary"] == pytest.approx(30.0)
