"""The Segment-Spec source through the API: write key, gzip, size limits, the answers the SDKs act
on, and the mapping of every kind of message to events, customers and identity merges (the real
SDKs drive the same endpoints in test_segment_sdks.py). The first tests are the pure translation."""

import base64
import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from access.services import api_token_create
from ingestion import segment_spec
from ingestion.models import Customer, Event, EventType
from ingestion.pseudonyms import customer_key, pii_decrypt
from profiles.models import IdentityMerge, MergeMethod

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _track(event: str, properties: dict | None = None, **extra) -> dict:
    return {"type": "track", "event": event, "userId": "u-1", "messageId": f"m-{event}",
            "timestamp": "2026-11-30T10:00:00Z", "properties": properties or {}, **extra}


# --- translation (no database) -----------------------------------------------------------------


def test_order_completed_becomes_one_purchase_per_product_line_with_derived_ids():
    order = _track("Order Completed", {"order_id": "o-9", "revenue": 55, "currency": "eur", "products": [
        {"product_id": "sku-1", "price": 10, "quantity": 2},
        {"sku": "sku-2", "price": 35.5},
    ]})

    out = segment_spec.batch_translate([order], received_at=NOW)

    assert out.errors == []
    assert [(e["event_type"], e["item_id"], e.get("quantity"), e["value"], e["order_id"], e["event_id"])
            for e in out.events] == [
        ("purchase", "sku-1", 2, 20.0, "o-9", "m-Order Completed#0"),
        ("purchase", "sku-2", None, 35.5, "o-9", "m-Order Completed#1"),
    ]
    assert {e["currency"] for e in out.events} == {"eur"}
    assert out.event_origins == [0, 0]


@pytest.mark.parametrize(("event", "properties", "expected"), [
    ("Product Viewed", {"product_id": "p1", "price": 3}, {"event_type": "view", "item_id": "p1"}),
    ("Product Added", {"product_id": "p1", "price": 3, "quantity": 2},
     {"event_type": "add_to_cart", "item_id": "p1", "value": 6.0, "quantity": 2}),
    ("Product Removed", {"sku": "p2", "price": 4}, {"event_type": "remove_from_cart", "item_id": "p2", "value": 4.0}),
    ("Products Searched", {"query": "red shoes"}, {"event_type": "search"}),
    ("Product Reviewed", {"product_id": "p1", "rating": 4}, {"event_type": "rating", "item_id": "p1", "rating": 4}),
    ("Order Refunded", {"order_id": "o-1", "total": 12.5}, {"event_type": "refund", "value": 12.5, "order_id": "o-1"}),
    ("Order Cancelled", {"order_id": "o-2"}, {"event_type": "cancellation", "order_id": "o-2"}),
])
def test_ecommerce_events_become_our_types_with_item_price_and_quantity(event, properties, expected):
    out = segment_spec.batch_translate([_track(event, properties)], received_at=NOW)

    assert out.errors == []
    (row,) = out.events
    assert {k: row.get(k) for k in expected} == expected
    assert row["customer_id"] == "u-1" and row["event_id"] == f"m-{event}"


def test_other_tracks_pages_and_screens_are_kept_as_clicks_with_their_properties():
    messages = [
        _track("Newsletter Signed Up", {"list": "weekly"}),
        {"type": "page", "name": "Pricing", "anonymousId": "a-1", "properties": {"path": "/pricing"}},
        {"type": "screen", "name": "Home", "userId": "u-2"},
    ]

    out = segment_spec.batch_translate(messages, received_at=NOW)

    assert [e["event_type"] for e in out.events] == ["click", "click", "click"]
    assert out.events[0]["context"] == {"segment_type": "track", "event": "Newsletter Signed Up",
                                        "properties": {"list": "weekly"}}
    assert out.events[1]["anonymous_id"] == "a-1" and "customer_id" not in out.events[1]
    assert out.events[1]["context"]["properties"] == {"path": "/pricing"}
    assert out.events[1]["timestamp"] == NOW.isoformat()  # no timestamp sent: received now


def test_identify_traits_become_customer_fields_and_the_rest_attributes():
    message = {"type": "identify", "userId": "u-1", "anonymousId": "a-1", "traits": {
        "email": "ann@example.com", "firstName": "Ann", "lastName": "Lee", "gender": "Female", "age": 31,
        "createdAt": "2025-01-02T03:04:05Z", "address": {"country": "CN"}, "plan": "gold"}}

    out = segment_spec.batch_translate([message], received_at=NOW)

    assert out.customers == [{"external_id": "u-1", "email": "ann@example.com", "name": "Ann Lee", "gender": "female",
                              "age": 31, "signup_date": "2025-01-02", "region": "CN",
                              "attributes": {"plan": "gold", "address": {"country": "CN"}}}]
    assert out.identities == [("a-1", "u-1")]


@pytest.mark.parametrize(("message", "errors"), [
    ("not an object", {"message": ["must be a JSON object"]}),
    ({"type": "purchase", "userId": "u"}, {"type": ["must be one of track, identify, page, screen, alias, group"]}),
    ({"type": "track", "event": "X"}, {"userId": ["userId or anonymousId is required"]}),
    ({"type": "track", "userId": "u"}, {"event": ["required for track calls"]}),
    ({"type": "track", "userId": {"id": 1}, "event": "X"}, {"userId": ["must be a string"]}),
    ({"type": "alias", "userId": "u"}, {"previousId": ["required for alias calls"]}),
    ({"type": "identify", "userId": "u", "traits": ["x"]}, {"traits": ["must be a JSON object"]}),
    ({"type": "track", "userId": "u", "event": "Order Completed", "properties": {"products": {"a": 1}}},
     {"properties.products": ["must be a list"]}),
    ({"type": "track", "userId": "u", "event": "X", "properties": {"blob": "x" * 40_000}},
     {"message": ["larger than 32768 bytes"]}),
])
def test_each_kind_of_malformed_message_is_named(message, errors):
    out = segment_spec.batch_translate([{"type": "page", "userId": "ok"}, message], received_at=NOW)

    assert out.errors == [{"index": 1, "errors": errors}]


# --- through the API -----------------------------------------------------------------------------


@pytest.fixture
def write_key(db) -> str:
    return api_token_create(name="segment source", scopes=["events:write"])[1]


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _post(client: APIClient, path: str, body, key: str | None, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key:
        headers["HTTP_AUTHORIZATION"] = _basic(key)
    return client.post(path, data=data, content_type="application/json", **headers)


def _events(external_id: str, source: str = "default"):
    return Event.objects.filter(customer__key=customer_key(source=source, external_id=external_id))


def test_a_batch_with_the_write_key_as_basic_user_is_stored_and_a_retry_is_a_duplicate(write_key):
    body = {"batch": [_track("Product Viewed", {"product_id": "sku-1"}),
                      _track("Order Completed", {"order_id": "o-1", "products": [
                          {"product_id": "sku-1", "price": 9.5, "quantity": 2}, {"product_id": "sku-2", "price": 1}]})]}

    first = _post(APIClient(), "/v1/batch", body, write_key)
    again = _post(APIClient(), "/v1/batch", body, write_key)

    assert first.status_code == 200 and first.json()["success"] is True
    assert first.json()["inserted"] == 3
    assert again.status_code == 200 and again.json()["inserted"] == 0 and again.json()["duplicates"] == 3
    purchases = _events("u-1").filter(event_type=EventType.PURCHASE).order_by("value")
    assert [(e.item.sku, e.quantity, e.value, e.order_id) for e in purchases] == [
        ("sku-2", 1, Decimal("1.00"), "o-1"), ("sku-1", 2, Decimal("19.00"), "o-1")]
    assert _events("u-1").count() == 3


def test_the_write_key_may_come_in_the_body_and_single_calls_have_their_own_paths(write_key):
    track = _post(APIClient(), "/v1/track", {**_track("Product Clicked", {"product_id": "p"}), "writeKey": write_key}, None)
    page = _post(APIClient(), "/v1/page", {"anonymousId": "visitor-1", "name": "Home", "messageId": "pg-1",
                                           "writeKey": write_key}, None)

    assert track.status_code == 200 and page.status_code == 200
    assert _events("u-1").get().event_type == EventType.CLICK
    visitor = _events("visitor-1", source="default:anonymous").get()
    assert visitor.context == {"segment_type": "page", "event": "Home", "properties": {}}


def test_gzip_bodies_are_accepted_and_broken_gzip_is_a_400(write_key):
    body = gzip.compress(json.dumps({"batch": [_track("Product Viewed", {"product_id": "sku-1"})]}).encode())

    ok = _post(APIClient(), "/v1/batch", body, write_key, HTTP_CONTENT_ENCODING="gzip")
    broken = _post(APIClient(), "/v1/batch", body[:-12], write_key, HTTP_CONTENT_ENCODING="gzip")
    not_gzip = _post(APIClient(), "/v1/batch", b'{"batch": []}', write_key, HTTP_CONTENT_ENCODING="gzip")
    other = _post(APIClient(), "/v1/batch", b'{"batch": []}', write_key, HTTP_CONTENT_ENCODING="br")

    assert ok.status_code == 200 and ok.json()["inserted"] == 1
    assert broken.status_code == 400 and broken.json()["code"] == "parse_error"
    assert not_gzip.status_code == 400 and "gzip" in not_gzip.json()["message"]
    assert other.status_code == 415 and other.json()["success"] is False


def test_oversize_bodies_and_messages_get_413_and_nothing_is_stored(write_key):
    big_message = _track("Product Viewed", {"product_id": "sku-1", "blob": "x" * 33_000})
    many = {"batch": [_track("Product Viewed", {"product_id": f"s{i}", "blob": "y" * 20_000}) for i in range(30)]}
    bomb = gzip.compress(json.dumps({"batch": [], "pad": "z" * 2_000_000}).encode())

    answers = [
        _post(APIClient(), "/v1/batch", {"batch": [big_message]}, write_key),
        _post(APIClient(), "/v1/track", big_message, write_key),
        _post(APIClient(), "/v1/batch", many, write_key),
        _post(APIClient(), "/v1/batch", bomb, write_key, HTTP_CONTENT_ENCODING="gzip"),
    ]

    assert len(bomb) < 10_000
    assert [a.status_code for a in answers] == [413, 413, 413, 413]
    assert all(a.json()["code"] == "payload_too_large" and a.json()["message"] for a in answers)
    assert not Event.objects.exists()


def test_a_malformed_message_fails_the_batch_with_a_400_naming_it_and_nothing_is_stored(write_key):
    body = {"batch": [
        _track("Product Viewed", {"product_id": "sku-1"}),
        {"type": "track", "userId": "u-2", "event": "Product Added", "messageId": "m2", "timestamp": "yesterday-ish"},
        {"type": "identify", "userId": "u-3", "traits": {"email": "not-an-email"}},
        {"type": "track", "event": "Order Completed", "messageId": "m4"},
    ]}

    answer = _post(APIClient(), "/v1/batch", body, write_key)

    assert answer.status_code == 400
    data = answer.json()
    assert data["success"] is False and data["code"] == "invalid_batch" and data["message"]
    assert data["errors"] == [
        {"index": 1, "errors": {"timestamp": ["not a valid date/time"],
                                "properties.product_id": ["required for this event type"]}},
        {"index": 2, "errors": {"traits.email": ["Enter a valid email address."]}},
        {"index": 3, "errors": {"userId": ["userId or anonymousId is required"]}},
    ]
    assert not Event.objects.exists() and not Customer.objects.exists()


def test_a_body_that_is_not_json_or_has_no_batch_is_a_400(write_key):
    not_json = _post(APIClient(), "/v1/batch", b"{nope", write_key)
    no_batch = _post(APIClient(), "/v1/batch", {"messages": []}, write_key)

    assert not_json.status_code == 400 and not_json.json()["code"] == "parse_error"
    assert no_batch.status_code == 400 and "batch" in no_batch.json()["message"]


def test_a_wrong_key_is_401_and_a_key_without_events_write_is_403(db):
    reader = api_token_create(name="reader", scopes=["profiles:read"])[1]
    body = {"batch": [_track("Product Viewed", {"product_id": "sku-1"})]}

    answers = {
        "none": _post(APIClient(), "/v1/batch", body, None),
        "wrong": _post(APIClient(), "/v1/batch", body, "pt_abc_def"),
        "garbled": _post(APIClient(), "/v1/batch", body, None, HTTP_AUTHORIZATION="Basic ###"),
        "scope": _post(APIClient(), "/v1/batch", body, reader),
    }

    assert {k: a.status_code for k, a in answers.items()} == {"none": 401, "wrong": 401, "garbled": 401, "scope": 403}
    assert answers["wrong"]["WWW-Authenticate"].startswith("Basic")
    assert all(set(a.json()) == {"success", "code", "message"} for a in answers.values())
    assert not Event.objects.exists()


def test_identify_upserts_the_customer_with_pii_encrypted_and_merges_the_known_visitor(write_key):
    body = {"batch": [
        {"type": "track", "event": "Product Viewed", "anonymousId": "anon-7", "messageId": "v1",
         "timestamp": "2026-11-30T09:00:00Z", "properties": {"product_id": "sku-1"}},
        {"type": "identify", "userId": "user-7", "anonymousId": "anon-7", "messageId": "i1",
         "traits": {"email": "ann@example.com", "gender": "F", "age": 40, "plan": "gold"}},
    ]}

    answer = _post(APIClient(), "/v1/batch", body, write_key)

    assert answer.status_code == 200 and answer.json()["merges"] == 1
    customer = Customer.objects.get(key=customer_key(source="default", external_id="user-7"))
    assert b"ann@example.com" not in bytes(customer.email_encrypted)
    assert pii_decrypt(bytes(customer.email_encrypted)) == "ann@example.com"
    assert (customer.gender, customer.age, customer.attributes) == ("female", 40, {"plan": "gold"})
    assert _events("user-7").count() == 1  # the visitor's view moved with the merge
    merge = IdentityMerge.objects.get()
    assert merge.survivor == customer and merge.method == MergeMethod.IDENTIFY
    # the SDK resends the batch: nothing new, the same merge
    again = _post(APIClient(), "/v1/batch", body, write_key)
    assert again.status_code == 200 and again.json()["duplicates"] == 1 and IdentityMerge.objects.count() == 1


def test_an_identify_of_an_unseen_visitor_only_upserts_and_an_alias_merges_a_known_customer(write_key):
    first = _post(APIClient(), "/v1/identify", {"userId": "old-id", "anonymousId": "never-seen",
                                                "traits": {"name": "Bo"}}, write_key)
    _post(APIClient(), "/v1/track", {**_track("Product Viewed", {"product_id": "s"}), "userId": "old-id"}, write_key)

    alias = _post(APIClient(), "/v1/alias", {"previousId": "old-id", "userId": "new-id"}, write_key)
    unknown = _post(APIClient(), "/v1/alias", {"previousId": "nobody", "userId": "new-id"}, write_key)

    assert first.status_code == 200 and first.json()["merges"] == 0 and first.json()["customers"] == 1
    assert alias.status_code == 200 and alias.json()["merges"] == 1
    assert unknown.status_code == 200 and unknown.json()["merges"] == 0
    merge = IdentityMerge.objects.get()
    assert merge.method == MergeMethod.ALIAS and merge.merged.key == customer_key(source="default", external_id="old-id")
    assert _events("new-id").count() == 1 and not _events("old-id").exists()


def test_suppressed_subjects_are_refused_as_by_the_native_api(write_key):
    from privacy.services import subject_suppress

    subject_suppress(source="default", external_id="gone", reason="erased")
    body = {"batch": [
        {**_track("Product Viewed", {"product_id": "s"}), "userId": "gone"},
        {"type": "identify", "userId": "gone", "traits": {"email": "gone@example.com"}},
        {"type": "alias", "previousId": "gone", "userId": "someone"},
        _track("Product Viewed", {"product_id": "s"}, messageId="kept"),
    ]}

    answer = _post(APIClient(), "/v1/batch", body, write_key)

    assert answer.status_code == 200
    assert (answer.json()["refused"], answer.json()["merges_refused"], answer.json()["inserted"]) == (1, 1, 1)
    assert not Customer.objects.filter(key=customer_key(source="default", external_id="gone")).exists()
    assert not IdentityMerge.objects.exists()


def test_the_schema_documents_the_segment_endpoints(client):
    schema = client.get("/api/schema/?format=json").json()

    for name in ("batch", "track", "identify", "page", "screen", "alias", "group"):
        operation = schema["paths"][f"/v1/{name}"]["post"]
        assert set(operation["responses"]) >= {"200", "400", "401", "413"}


def test_identify_traits_may_come_in_the_context_as_rudderstack_sends_them():
    message = {"type": "identify", "userId": "u-1", "context": {"traits": {"email": "a@example.com", "age": 20}},
               "traits": {"age": 21}}

    out = segment_spec.batch_translate([message], received_at=NOW)

    assert out.customers == [{"external_id": "u-1", "email": "a@example.com", "age": 21}]


def test_a_throttled_write_key_gets_429_with_retry_after_which_the_sdks_retry(db):
    _, key = api_token_create(name="slow shop", scopes=["events:write"], requests_per_minute=1)
    body = {"batch": [_track("Product Viewed", {"product_id": "sku-1"})]}

    first = _post(APIClient(), "/v1/batch", body, key)
    second = _post(APIClient(), "/v1/batch", body, key)

    assert first.status_code == 200
    assert second.status_code == 429 and int(second["Retry-After"]) > 0
    assert second.json()["success"] is False and second.json()["code"] == "throttled" and second.json()["message"]


def test_consent_traits_are_the_customers_consent_and_a_restriction_still_wins(write_key, compliance_user):
    from privacy import services as privacy

    request = privacy.privacy_request_file(kind="restriction", source="default", external_id="objector",
                                           actor=compliance_user)
    privacy.privacy_request_verify(request=request, actor=compliance_user)
    privacy.privacy_request_execute(request=request, actor=compliance_user)
    body = {"batch": [
        {"type": "identify", "userId": "shy", "traits": {"consent_profiling": False, "consent_marketing": True}},
        {"type": "identify", "userId": "keen", "traits": {"consent_profiling": "yes-please"}},
        {"type": "identify", "userId": "objector", "traits": {"consent_profiling": True, "region": "north"}},
        {**_track("Product Viewed", {"product_id": "s"}), "userId": "objector"},
    ]}

    refused = _post(APIClient(), "/v1/batch", body, write_key)
    body["batch"][1]["traits"]["consent_profiling"] = True
    accepted = _post(APIClient(), "/v1/batch", body, write_key)

    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"index": 1, "errors": {"traits.consent_profiling": ["Must be a valid boolean."]}}]
    assert accepted.status_code == 200

    def customer(external_id):
        return Customer.objects.get(key=customer_key(source="default", external_id=external_id))

    assert (customer("shy").consent_profiling, customer("shy").consent_marketing) == (False, True)
    assert customer("keen").consent_profiling is True
    assert (customer("objector").region, customer("objector").consent_profiling) == ("north", False)
    assert _events("objector").count() == 1  # restricted, not suppressed: the events are kept


def test_with_the_broker_away_a_batch_is_stored_and_every_refresh_it_owes_waits_in_the_outbox(
    write_key, monkeypatch, django_capture_on_commit_callbacks
):
    from config.celery import app as celery_app
    from ingestion.models import RefreshOutbox
    from profiles.builds import profiles_build

    earlier = {"batch": [_track(e, {"product_id": "sku-0"}, messageId=f"early-{i}", userId=f"u-{i}")
                         for i, e in enumerate(["Product Viewed", "Product Added", "Product Viewed", "Product Viewed"])]}
    assert _post(APIClient(), "/v1/batch", earlier, write_key).status_code == 200
    profiles_build()  # an active feature set: landed events now owe refreshes
    earlier_entries = list(RefreshOutbox.objects.values_list("pk", flat=True))  # their queueing never ran here
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens there
    body = {"batch": [
        _track("Product Viewed", {"product_id": "sku-1"}),
        {"type": "identify", "userId": "u-2", "messageId": "id-2", "traits": {"email": "u2@example.com"}},
    ]}

    with django_capture_on_commit_callbacks(execute=True) as queued:  # the queueing after commit runs, and fails
        response = _post(APIClient(), "/v1/batch", body, write_key)

    assert response.status_code == 200 and response.json()["inserted"] == 1
    assert len(queued) == 1
    owed = sorted(c for entry in RefreshOutbox.objects.exclude(pk__in=earlier_entries) for c in entry.customer_ids)
    buyer, identified = (Customer.objects.get(key=customer_key(source="default", external_id=u)).pk for u in ("u-1", "u-2"))
    assert owed == sorted([buyer, identified])  # the event's customer and the identified one, each once
