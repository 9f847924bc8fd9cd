"""POST /api/v1/events and the upsert endpoints: auth, atomicity, row errors, idempotency, limits."""

import json

import pytest
from django.db import connection
from rest_framework.test import APIClient

from ingestion.pseudonyms import customer_key, pii_decrypt
from ingestion.models import Customer, Event, Item, SocialEdge

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"


def event(i: int, **overrides) -> dict:
    return {"event_id": f"evt-{i}", "customer_id": f"cust-{i % 3}", "item_id": f"sku-{i % 5}", "event_type": "view",
            "timestamp": f"2025-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z", **overrides}


def test_without_token_is_401_and_nothing_is_written():
    response = APIClient().post(URL, {"events": [event(1)]}, format="json")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert Event.objects.count() == 0


def test_invalid_or_revoked_token_is_401(make_api_client):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer pt_nothing_here")
    assert client.post(URL, {"events": [event(1)]}, format="json").status_code == 401


def test_token_without_events_scope_is_403(make_api_client):
    client = make_api_client("profiles:read")

    assert client.post(URL, {"events": [event(1)]}, format="json").status_code == 403


def test_valid_batch_is_stored_and_a_retry_counts_duplicates(events_client):
    batch = {"events": [event(i) for i in range(100)]}

    first = events_client.post(URL, batch, format="json")
    retry = events_client.post(URL, batch, format="json")

    assert first.status_code == 200, first.json()
    assert first.json() == {"received": 100, "inserted": 100, "duplicates": 0, "removed": 0, "flagged": 0, "refused": 0}
    assert retry.json() == {"received": 100, "inserted": 0, "duplicates": 100, "removed": 0, "flagged": 0, "refused": 0}
    assert Event.objects.count() == 100
    assert Customer.objects.filter(key=customer_key(source="default", external_id="cust-1")).exists()


def test_repeated_event_id_inside_one_batch_is_counted_once(events_client):
    response = events_client.post(URL, {"events": [event(1), event(1), event(2)]}, format="json")

    assert response.json()["inserted"] == 2 and response.json()["duplicates"] == 1


def test_one_bad_row_rejects_the_whole_batch_and_lists_every_bad_row(events_client):
    rows = [event(i) for i in range(10)]
    rows[3]["timestamp"] = "not a time"
    rows[7] = {**rows[7], "event_type": "purchase", "value": "-1", "colour": "red"}
    rows[8] = "not an object"

    response = events_client.post(URL, {"events": rows}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_batch"
    assert body["rows"] == [
        {"index": 3, "errors": {"timestamp": ["not a valid date/time"]}},
        {"index": 7, "errors": {"colour": ["unknown field"], "value": ["must not be negative (use a refund event)"]}},
        {"index": 8, "errors": {"row": ["must be a JSON object"]}},
    ]
    assert Event.objects.count() == 0 and Customer.objects.count() == 0


def test_numbers_and_nested_values_are_typed_or_refused(events_client):
    rows = [
        event(1, event_type="purchase", quantity=2, value=19.5, currency="eur", context={"coupon": "X"}),
        event(2, quantity={"a": 1}),
    ]

    response = events_client.post(URL, {"events": rows}, format="json")

    assert response.status_code == 400
    assert response.json()["rows"] == [{"index": 1, "errors": {"quantity": ["not a number"]}}]
    ok = events_client.post(URL, {"events": rows[:1]}, format="json")
    assert ok.status_code == 200
    stored = Event.objects.get()
    assert (stored.quantity, float(stored.value), stored.currency, stored.context) == (2, 19.5, "EUR", {"coupon": "X"})


def test_body_over_the_byte_limit_is_413(events_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    rows = [event(i) for i in range(50)]

    response = events_client.post(URL, {"events": rows}, format="json")

    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large", "detail": "Body exceeds the limit of 2000 bytes."}
    assert Event.objects.count() == 0


def test_batch_over_the_event_limit_is_413(events_client, settings):
    settings.API_MAX_BATCH_EVENTS = 5

    response = events_client.post(URL, {"events": [event(i) for i in range(6)]}, format="json")

    assert response.status_code == 413
    assert "limit is 5" in response.json()["detail"]


@pytest.mark.parametrize(
    "body, field",
    [({}, "events"), ({"events": []}, "events"), ({"events": {"a": 1}}, "events")],
)
def test_malformed_envelope_is_400_naming_the_field(events_client, body, field):
    response = events_client.post(URL, body, format="json")

    assert response.status_code == 400 and field in response.json()


def test_invalid_json_is_400(events_client):
    response = events_client.post(URL, data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


def test_customer_upsert_encrypts_pii_and_updates_only_given_fields(events_client):
    url = "/api/v1/customers"
    first = events_client.post(url, {"customers": [
        {"external_id": "u-1", "email": "li.lei@example.com", "name": "李雷", "age": 31, "gender": "male",
         "consent_marketing": True},
    ]}, format="json")
    second = events_client.post(url, {"customers": [{"external_id": "u-1", "region": "CN-31"}]}, format="json")

    assert first.status_code == 200 and second.status_code == 200
    customer = Customer.objects.get()
    assert (customer.age, customer.gender, customer.region, customer.consent_marketing) == (31, "male", "CN-31", True)
    assert customer.age_band == "25-34"  # derived from the age when the source gives none
    assert pii_decrypt(customer.email_encrypted) == "li.lei@example.com"
    assert pii_decrypt(customer.name_encrypted) == "李雷"
    with connection.cursor() as cursor:
        cursor.execute("SELECT email_encrypted::text, key FROM ingestion_customer")
        stored_email, stored_key = cursor.fetchone()
    assert "li.lei" not in stored_email and "example.com" not in bytes.fromhex(stored_email[2:]).decode("latin-1")
    assert stored_key == customer_key(source="default", external_id="u-1") and "u-1" not in stored_key


def test_customer_upsert_reports_row_errors_and_writes_nothing(events_client):
    response = events_client.post("/api/v1/customers", {"customers": [
        {"external_id": "ok"}, {"external_id": "bad", "email": "nope", "age": 300},
    ]}, format="json")

    assert response.status_code == 400
    rows = response.json()["rows"]
    assert [r["index"] for r in rows] == [1] and set(rows[0]["errors"]) == {"email", "age"}
    assert Customer.objects.count() == 0


def test_item_and_social_edge_upserts(events_client):
    items = events_client.post("/api/v1/items", {"items": [
        {"sku": "A", "title": "Green tea", "category_path": "Food/Tea", "price": "12.50", "currency": "CNY"},
    ]}, format="json")
    edges = events_client.post("/api/v1/social-edges", {"edges": [
        {"source_id": "u-1", "target_id": "u-2", "relation": "referral"},
        {"source_id": "u-1", "target_id": "u-2", "relation": "referral"},
    ]}, format="json")
    loop = events_client.post("/api/v1/social-edges", {"edges": [
        {"source_id": "u-1", "target_id": "u-1", "relation": "follow"},
    ]}, format="json")

    assert items.status_code == 200 and Item.objects.get(sku="A").title == "Green tea"
    assert edges.status_code == 200 and SocialEdge.objects.count() == 1
    assert loop.status_code == 400 and loop.json()["rows"][0]["errors"]["target_id"]


def test_openapi_schema_is_served_and_lists_the_ingestion_endpoints():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert {"/api/v1/events", "/api/v1/customers", "/api/v1/items", "/api/v1/social-edges"} <= set(paths)


def test_api_docs_page_uses_bundled_assets_not_a_cdn(client):
    html = client.get("/api/docs/").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr" not in html


def test_nul_characters_are_refused_in_fields_and_in_context(events_client):
    rows = [event(1, session_id="s\x00x"), event(2, context={"q": "a\x00b"})]

    response = events_client.post(URL, {"events": rows}, format="json")

    assert response.status_code == 400
    assert response.json()["rows"] == [
        {"index": 0, "errors": {"session_id": ["contains a NUL byte"]}},
        {"index": 1, "errors": {"context": ["contains a NUL character (jsonb cannot store it)"]}},
    ]


def test_openapi_schema_validates_without_warnings_and_declares_bearer_tokens():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
    schema = json.loads(APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").content)
    assert schema["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"


def test_unpaired_surrogate_escape_is_a_400_not_a_server_error(events_client):
    body = '{"events": [{"customer_id": "c\\ud800", "event_type": "search", "timestamp": "2025-01-01T00:00:00Z"}]}'

    response = events_client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    paired = body.replace("\\ud800", "\\ud83d\\ude00")  # an emoji, properly paired
    assert events_client.post(URL, data=paired, content_type="application/json").status_code == 200


def test_nul_inside_attributes_is_refused_by_field(events_client):
    response = events_client.post("/api/v1/items", {"items": [{"sku": "N", "attributes": {"a": ["x\x00"]}}]}, format="json")

    assert response.status_code == 400
    assert response.json()["rows"] == [{"index": 0, "errors": {"attributes": ["must not contain NUL characters"]}}]


def test_repeated_external_id_in_one_batch_merges_with_later_fields_winning(events_client):
    response = events_client.post("/api/v1/customers", {"customers": [
        {"external_id": "dup", "age": 20, "region": "North"}, {"external_id": "dup", "age": 21},
    ]}, format="json")
    items = events_client.post("/api/v1/items", {"items": [{"sku": "S", "title": "a"}, {"sku": "S", "title": "b"}]},
                               format="json")

    assert response.status_code == 200 and response.json() == {"written": 1}
    assert (Customer.objects.get().age, Customer.objects.get().region) == (21, "North")
    assert items.status_code == 200 and Item.objects.get().title == "b"
