"""GET /api/v1/profiles/{key}: lookup by pseudonymous key or external id, scopes, bad input."""

import pytest

from ingestion.pseudonyms import customer_key
from profiles import builds

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiled(events_client):
    rows = [{"customer_id": f"c{c}", "event_type": "purchase", "item_id": "sku-1", "value": f"{c + 1}.00",
             "timestamp": f"2025-01-{1 + c:02d}T10:00:00Z"} for c in range(5)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()


def test_profile_by_key_and_by_external_id_are_the_same(profiled, make_api_client):
    reader = make_api_client("profiles:read")
    key = customer_key(source="default", external_id="c3")

    by_key = reader.get(f"/api/v1/profiles/{key}")
    by_external = reader.get("/api/v1/profiles/c3?by=external_id")

    assert by_key.status_code == by_external.status_code == 200
    body = by_key.json()
    assert body == by_external.json()
    assert body["key"] == key
    assert body["traits"]["monetary"] == 4.0 and body["traits"]["frequency"] == 1
    assert body["value_tier"] in {"low", "medium", "high"} and body["lifecycle_stage"] in {"active", "new", "at_risk", "lapsed"}
    assert body["feature_set_version"] == 1 and body["model_version"] is None
    assert {"top_categories", "distinctive"} <= set(body["explanation"])


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/api/v1/profiles/not-a-key", 400, "key"),
    ("/api/v1/profiles/" + "A" * 64, 400, "key"),
    ("/api/v1/profiles/c1?by=email", 400, "by"),
    ("/api/v1/profiles/" + "x" * 300 + "?by=external_id", 400, "key"),
    ("/api/v1/profiles/" + "0" * 64, 404, None),
    ("/api/v1/profiles/nobody?by=external_id", 404, None),
])
def test_bad_or_unknown_keys_get_a_clear_error(profiled, make_api_client, path, status, field):
    response = make_api_client("profiles:read").get(path)

    assert response.status_code == status
    if field:
        assert field in response.json()


def test_scopes_and_authentication(profiled, make_api_client, client):
    assert make_api_client("events:write").get("/api/v1/profiles/c1?by=external_id").status_code == 403
    assert client.get("/api/v1/profiles/c1?by=external_id").status_code == 401
