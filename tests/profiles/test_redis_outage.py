"""Redis down (a private redis-server on its own port, never the shared one): a real gunicorn keeps
storing event batches and serving profiles; the refresh each batch owes waits in the outbox table
and is queued when Redis is back (a worker's start drains it), so the profile takes the batch in."""

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from django.conf import settings

from access.services import api_token_create
from ingestion.models import RefreshOutbox
from profiles import builds
from tests.conftest import celery_worker_running, free_port, process_env, web_server_running

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


class PrivateRedis:
    """redis-server on a free loopback port, no persistence; stop() and start() at will."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def _call(method: str, url: str, token: str, payload: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(payload).encode() if payload else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read()[:500].decode(errors="replace")}


def _history(customer: str, n: int, day: int) -> list[dict]:
    return [{"customer_id": customer, "event_type": "view", "item_id": f"sku-{i % 5}",
             "timestamp": f"2025-03-{day:02d}T10:{i:02d}:00Z"} for i in range(n)] + [
        {"customer_id": customer, "event_type": "purchase", "item_id": "sku-1", "value": "20.00",
         "timestamp": f"2025-03-{day:02d}T11:00:00Z"}]


def test_batches_are_stored_and_profiles_served_while_redis_is_down_and_their_refresh_follows(
        events_client, private_redis):
    # Given a profiled shop, a web server and a worker whose broker and cache are the private Redis
    rows = [row for c in range(12) for row in _history(f"shopper-{c}", 3 + c % 5, day=1 + c)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()
    _, writer = api_token_create(name="shop", scopes=["events:write"])
    _, reader = api_token_create(name="reader", scopes=["profiles:read"])
    env = process_env(CELERY_BROKER_URL=private_redis.url(0), CELERY_RESULT_BACKEND=private_redis.url(0),
                      CACHE_URL=private_redis.url(1))
    var = Path(settings.BASE_DIR) / "var"
    with web_server_running(env, workers=2, log=var / "test-redis-outage-web.log") as base:
        profile_url = f"{base}/api/v1/profiles/shopper-3?by=external_id"
        status, before = _call("GET", profile_url, reader)
        assert status == 200, before

        # When Redis goes away and a batch arrives
        private_redis.stop()
        status, stored = _call("POST", f"{base}/api/v1/events", writer, {"events": [
            {"event_id": "during-outage-1", "customer_id": "shopper-3", "event_type": "purchase",
             "item_id": "sku-4", "value": "55.50", "timestamp": "2025-03-28T09:00:00Z"}]})

        # Then it is stored (2xx), reads keep serving, and the refresh it owes waits in the outbox
        assert status == 200, stored
        assert stored["inserted"] == 1
        status, during = _call("GET", profile_url, reader)
        assert status == 200, during
        assert during["events_included"] == before["events_included"]
        entry = RefreshOutbox.objects.get()
        assert entry.attempts == 1 and "Error" in entry.last_error

        # When Redis is back and a worker starts
        private_redis.start()
        with celery_worker_running(env, queues="default,ingest,profiles,segments,training",
                                   log=var / "test-redis-outage-worker.log"):
            deadline = time.monotonic() + 60
            while (after := _call("GET", profile_url, reader)[1])["events_included"] == before["events_included"]:
                assert time.monotonic() < deadline, "the owed refresh never ran"
                time.sleep(0.2)

    # Then the profile took the batch in and the outbox is empty
    assert after["events_included"] == before["events_included"] + 1
    assert after["traits"]["monetary"] == pytest.approx(before["traits"]["monetary"] + 55.5)
    assert not RefreshOutbox.objects.exists()
