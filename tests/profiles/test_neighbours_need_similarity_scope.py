"""A profile's explanation names its nearest neighbours' keys only to a token that may search by
similarity: profiles:read alone reads the profile, not who resembles it."""

import pytest

from ingestion.pseudonyms import customer_key
from profiles import builds

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiled(events_client):
    rows = [{"customer_id": f"c{c}", "event_type": "purchase", "item_id": f"sku-{c % 2}", "value": f"{c + 1}.00",
             "timestamp": f"2025-01-{1 + c:02d}T10:00:00Z"} for c in range(8)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()
    return customer_key(source="default", external_id="c3")


def test_profile_detail_leaves_out_neighbours_without_similarity_read(profiled, make_api_client):
    body = make_api_client("profiles:read").get(f"/api/v1/profiles/{profiled}").json()

    assert "neighbours" not in body["explanation"]
    assert {"top_categories", "distinctive"} <= set(body["explanation"])


def test_profile_detail_names_neighbours_with_similarity_read(profiled, make_api_client):
    body = make_api_client("profiles:read", "similarity:read").get(f"/api/v1/profiles/{profiled}").json()

    assert len(body["explanation"]["neighbours"]) > 0
    assert profiled not in {n["key"] for n in body["explanation"]["neighbours"]}
