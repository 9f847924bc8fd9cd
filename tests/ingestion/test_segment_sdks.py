"""The real tracking SDKs (segment-analytics-python, rudder-sdk-python) against a live server: events
arrive exactly once though the client retries, identify and alias land as customers and merges,
profiles refresh, and a malformed message is answered so that the client gives up at once.

Between the SDK and the server sits a small HTTP hop (as a load balancer would): it forwards every
request and hands back the answer, but can be told to lose the first answers and say 503 with
Retry-After instead, as the server does while its database is away. The request was then stored,
the client does not know it, and retries the same batch."""

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from access.services import api_token_create
from ingestion.models import Customer, Event, EventType
from ingestion.pseudonyms import customer_key, pii_decrypt
from profiles.builds import profiles_build
from profiles.models import IdentityMerge, Profile

pytestmark = pytest.mark.django_db(transaction=True)


class Hop:
    """A forwarding HTTP hop in front of the live server. `lose_answers`: how many of the first
    requests are forwarded (and so stored) but answered 503 + Retry-After: 1, the body the server
    sends while its database is away. `requests` records (path, status sent back, X-Retry-Count)."""

    def __init__(self, upstream: str, lose_answers: int = 0):
        self.upstream = urlsplit(upstream)
        self.lose_answers = lose_answers
        self.requests: list[tuple[str, int, str | None]] = []
        self.lock = threading.Lock()
        hop = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                upstream = http.client.HTTPConnection(hop.upstream.hostname, hop.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request("POST", self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                status, payload, content_type = answer.status, answer.read(), answer.getheader("Content-Type")
                upstream.close()
                extra = {}
                with hop.lock:
                    if hop.lose_answers > 0:
                        hop.lose_answers -= 1
                        status, content_type, extra = 503, "application/json", {"Retry-After": "1"}
                        payload = b'{"error": "database_unavailable", "detail": "The database is not reachable."}'
                    hop.requests.append((self.path, status, self.headers.get("X-Retry-Count")))
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def write_key(transactional_db) -> str:
    return api_token_create(name="shop's Segment source", scopes=["events:write"])[1]


@pytest.fixture
def hop(live_server):
    hops = []

    def make(lose_answers: int = 0) -> Hop:
        hops.append(Hop(live_server.url, lose_answers))
        return hops[-1]

    yield make
    for h in hops:
        h.close()


def _segment(key: str, host: str, errors: list) -> SegmentClient:
    return SegmentClient(key, host=host, upload_interval=0.05, max_retries=3, gzip=False,
                         on_error=lambda exc, batch: errors.append((getattr(exc, "status", exc), len(batch))))


def _rudder(key: str, host: str, errors: list) -> RudderClient:
    return RudderClient(key, host=host, upload_interval=0.05, max_retries=3,  # gzip is its default
                        on_error=lambda exc, batch: errors.append((getattr(exc, "status", exc), len(batch))))


def _shop_session(client) -> None:
    """A visitor browses, signs up (identify with the anonymous id), orders, renames their id (alias)."""
    client.track(anonymous_id="anon-1", event="Product Viewed", properties={"product_id": "sku-1", "price": 10})
    client.track(anonymous_id="anon-1", event="Product Added", properties={"product_id": "sku-1", "price": 10,
                                                                          "quantity": 2})
    client.identify(user_id="user-1", anonymous_id="anon-1", traits={"email": "ann@example.com", "gender": "female"})
    client.track(user_id="user-1", event="Order Completed", properties={
        "order_id": "o-1", "revenue": 25, "currency": "EUR",
        "products": [{"product_id": "sku-1", "price": 10, "quantity": 2}, {"product_id": "sku-2", "price": 5}]})
    client.page(user_id="user-1", name="Thanks")
    client.alias(previous_id="user-1", user_id="user-1-v2")


def _assert_session_landed_once():
    survivor = Customer.objects.get(key=customer_key(source="default", external_id="user-1-v2"))
    events = Event.objects.filter(customer=survivor)
    assert sorted(events.values_list("event_type", flat=True)) == sorted(
        [EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.PURCHASE, EventType.CLICK])
    assert Event.objects.count() == 5  # nothing twice, nothing left on the visitor or the old id
    assert sorted(str(v) for v in events.filter(event_type=EventType.PURCHASE).values_list("value", flat=True)) == [
        "20.00", "5.00"]
    user = Customer.objects.get(key=customer_key(source="default", external_id="user-1"))
    assert pii_decrypt(bytes(user.email_encrypted)) == "ann@example.com" and user.gender == "female"
    assert [(m.merged.source, m.survivor.key) for m in IdentityMerge.objects.order_by("pk")] == [
        ("default:anonymous", user.key), ("default", survivor.key)]


@pytest.mark.parametrize("make_client", [_segment, _rudder], ids=["segment", "rudderstack"])
def test_a_session_arrives_exactly_once_though_the_first_answer_is_lost(write_key, hop, make_client):
    proxy = hop(lose_answers=1)
    errors = []
    client = make_client(write_key, proxy.url, errors)

    _shop_session(client)
    client.flush()
    client.shutdown()

    assert errors == []
    assert [path for path, _, _ in proxy.requests] == ["/v1/batch"] * len(proxy.requests)
    assert [status for _, status, _ in proxy.requests][:2] == [503, 200]  # stored, answer lost, retried
    _assert_session_landed_once()


@pytest.mark.parametrize("make_client", [_segment, _rudder], ids=["segment", "rudderstack"])
def test_a_malformed_message_is_answered_400_and_the_client_does_not_retry_it(write_key, hop, make_client):
    proxy = hop()
    errors = []
    client = make_client(write_key, proxy.url, errors)

    client.track(user_id="u-1", event="Order Completed", properties={"order_id": "o", "products": "not a list"})
    client.flush()
    client.shutdown()

    assert [status for _, status, _ in proxy.requests] == [400]  # one attempt, no retry
    assert errors == [(400, 1)]
    assert not Event.objects.exists()


@pytest.mark.parametrize("make_client", [_segment, _rudder], ids=["segment", "rudderstack"])
def test_a_wrong_write_key_is_refused_once_and_not_retried(transactional_db, hop, make_client):
    proxy = hop()
    errors = []
    client = make_client("pt_000000000000_not-a-key", proxy.url, errors)

    client.track(user_id="u-1", event="Product Viewed", properties={"product_id": "s"})
    client.flush()
    client.shutdown()

    assert [status for _, status, _ in proxy.requests] == [401]
    assert errors == [(401, 1)]


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


@pytest.mark.worker
def test_an_order_sent_by_the_sdk_refreshes_the_profile(write_key, hop, celery_worker):
    from ingestion.services import events_ingest_batch

    events_ingest_batch(rows=[
        {"customer_id": f"shopper-{c}", "event_type": t, "item_id": f"sku-{(c + i) % 5}", "value": "12.00",
         "timestamp": f"2026-10-{1 + c % 20:02d}T10:{i:02d}:00Z"}
        for c in range(30) for i, t in enumerate(["view", "view", "purchase"][: 2 + c % 2])
    ])
    profiles_build()
    key = customer_key(source="default", external_id="shopper-3")
    before = Profile.objects.get(customer__key=key)
    errors = []
    client = _segment(write_key, hop().url, errors)

    client.track(user_id="shopper-3", event="Order Completed", timestamp=None, properties={
        "order_id": "o-77", "products": [{"product_id": "sku-4", "price": 55.5}]})
    client.flush()
    client.shutdown()

    assert errors == []
    after = _wait(lambda: (p := Profile.objects.get(customer__key=key)).events_included > before.events_included and p,
                  what="profile refresh")
    assert after.events_included == before.events_included + 1
    assert json.loads(json.dumps(after.traits))["monetary"] == pytest.approx(before.traits["monetary"] + 55.5)
