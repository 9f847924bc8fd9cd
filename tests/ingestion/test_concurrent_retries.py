"""The same batch from 4 concurrent clients, each sending it 3 times, against a real gunicorn: the
store keeps exactly one copy of each event, every answer is a 200, and the answers together
count each event inserted once."""

import json
import threading
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from access.services import api_token_create
from ingestion.models import Customer, Event, Item
from tests.conftest import process_env, web_server_running

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

CLIENTS = 4
TRIES = 3


def _post(url: str, token: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read()[:500].decode(errors="replace")}


def test_one_batch_from_four_clients_retrying_three_times_is_stored_once():
    # Given a batch of 300 events with their own ids over 40 customers (new to the store) and 20 items
    events = [
        {"event_id": f"order-{i}", "customer_id": f"buyer-{i % 40}", "event_type": "purchase" if i % 3 else "view",
         "item_id": f"sku-{i % 20}", "value": "12.50" if i % 3 else None, "timestamp": f"2025-04-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"}
        for i in range(300)
    ]
    body = json.dumps({"events": events}).encode()
    _, token = api_token_create(name="retrying clients", scopes=["events:write"])
    log = Path(settings.BASE_DIR) / "var" / "test-concurrent-web.log"
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    with web_server_running(process_env(), workers=4, log=log) as base:
        start = threading.Barrier(CLIENTS)

        def client():
            start.wait()  # all four send their first copy at once
            for _ in range(TRIES):
                answer = _post(f"{base}/api/v1/events", token, body)
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a client hung"

    # Then every request succeeded, one copy of each event is stored, and inserts add up to the batch
    assert [status for status, _ in answers] == [200] * CLIENTS * TRIES, answers
    assert Event.objects.count() == 300
    assert Event.objects.values("event_id").distinct().count() == 300
    assert Customer.objects.count() == 40 and Item.objects.count() == 20
    assert sum(a["inserted"] for _, a in answers) == 300
    assert all(a["inserted"] + a["duplicates"] == 300 for _, a in answers)
    assert "Traceback" not in log.read_text()
