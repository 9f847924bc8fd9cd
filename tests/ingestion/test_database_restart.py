"""PostgreSQL restarted under load (a fast shutdown, down a few seconds, started again) on a server
of the test's own:

- API clients posting event batches get 503 with Retry-After while it is away, never a 500, and
  never a partial batch: each batch that failed is found in the store whole or not at all, and once
  resent every event is stored exactly once;
- a bulk import running on a Celery worker is retried by the same worker, which reconnects by
  itself and resumes after the last chunk committed before the restart: no chunk is stored twice.
"""

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from config.celery import app as celery_app
from config.embedded_db import embedded_server_restart
from tests.conftest import celery_worker_running, manage_py, private_embedded_server, web_server_running
from tests.ingestion.event_files import distinct_events_file

pytestmark = [pytest.mark.worker]

VAR = Path(settings.BASE_DIR) / "var"
DOWN_S = 4.0
CLIENTS = 4
BATCH = 20
ROWS = 300_000  # an import of ~2 s at the bulk path's rate, so the test sees it under way (60,000 finished between polls)
BLOCK_BYTES = 64 * 1024  # ~1,400 rows a chunk, ~220 chunks


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with private_embedded_server(tmp_path_factory.mktemp("restart") / "pgdata", database="portrait_restart") as server:
        yield server


def _query(url: str, sql: str, params=()) -> list:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def _post(url: str, token: str, body: dict) -> tuple[int | str, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)
    except OSError as exc:  # the connection itself failed: the client cannot know; it resends
        return repr(exc), {}


def test_api_clients_get_503_with_retry_after_and_no_batch_is_partial_or_lost(server):
    env = dict(server["env"], DEBUG="false", DB_CONN_MAX_AGE="60")
    token = manage_py(env, "shell", "-c", "from access.services import api_token_create as c; "
                      "print(c(name='restart test', scopes=['events:write'])[1])").strip().splitlines()[-1]
    statuses: list = []
    failed: list[list[dict]] = []  # batches a client could not get stored, to check and resend
    sent: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int, url: str) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            # one item per event, so no cleaning rule (near-duplicate views) removes any
            rows = [{"event_id": str(uuid.uuid4()), "customer_id": f"restart-{number}-{sequence % 7}",
                     "event_type": "view", "item_id": f"sku-{number}-{sequence}-{i}",
                     "timestamp": f"2025-03-01T00:{sequence // 60 % 60:02d}:{sequence % 60:02d}Z"} for i in range(BATCH)]
            status, headers = _post(url, token, {"events": rows})
            with lock:
                statuses.append((status, headers.get("Retry-After")))
                sent.extend(r["event_id"] for r in rows)
                if status != 200:
                    failed.append(rows)
            if status == 503:
                time.sleep(min(float(headers.get("Retry-After", 1)), 1.0))

    with web_server_running(env, workers=2, log=VAR / "test-restart-web.log") as base:
        threads = [threading.Thread(target=client, args=(n, f"{base}/api/v1/events")) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        embedded_server_restart(server["pgdata"], down_s=DOWN_S)
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

        codes = [status for status, _ in statuses]
        assert 503 in codes, f"the restart never reached a client: {sorted(set(map(str, codes)))}"
        assert all(retry and int(retry) > 0 for status, retry in statuses if status == 503)
        # 200 or 503 (or the connection cut while the server shut down), never a 500 or another error
        assert {c for c in codes if not isinstance(c, str)} <= {200, 503}, sorted(set(map(str, codes)))
        assert codes.count(200) > 10  # the load ran before and after the restart

        # no batch half-written: each one a client could not store is in the store whole or not at all
        for batch in failed:
            stored = _query(server["url"], "SELECT count(*) FROM ingestion_event WHERE event_id = ANY(%s::uuid[])",
                            [[r["event_id"] for r in batch]])[0][0]
            assert stored in (0, BATCH), f"a batch that got an error has {stored} of its {BATCH} events stored"
        # the clients resend them (the same event ids): every event stored exactly once
        for batch in failed:
            assert _post(f"{base}/api/v1/events", token, {"events": batch})[0] == 200

    stored = _query(server["url"], "SELECT count(*), count(DISTINCT event_id) FROM ingestion_event WHERE event_id = ANY(%s::uuid[])", [sent])[0]
    assert stored == (len(sent), len(sent))
    celery_app.control.purge()  # the refreshes the batches queued: no worker here takes them


def test_a_bulk_import_resumes_after_its_last_committed_chunk_on_the_same_worker(server, tmp_path):
    path = distinct_events_file(tmp_path / "events.csv", ROWS)
    env = dict(server["env"], INGEST_CSV_BLOCK_BYTES=str(BLOCK_BYTES))
    celery_app.control.purge()
    log = VAR / "test-restart-worker.log"
    job_id = int(manage_py(env, "shell", "-c", (
        "from ingestion.import_jobs import import_job_create; "
        f"print(import_job_create(path={str(path)!r}, fmt='csv', source='restart').pk)")).strip().splitlines()[-1])

    def job() -> dict:
        row = _query(server["url"], "SELECT status, rows_read, rows_inserted, rows_duplicate, rows_rejected, report, error"
                     " FROM ingestion_importjob WHERE id = %s", [job_id])[0]
        return dict(zip(["status", "read", "inserted", "duplicate", "rejected", "report", "error"], row, strict=True))

    with celery_worker_running(env, queues="default,ingest", log=log) as worker:
        manage_py(env, "shell", "-c", f"from ingestion.tasks import import_job_run_task as t; t.delay({job_id})")
        deadline = time.monotonic() + 120
        while not (job()["status"] == "running" and 0 < job()["read"] < ROWS // 2):
            assert time.monotonic() < deadline, f"import not under way: {job()}\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        before = _query(server["url"], "SELECT count(*) FROM ingestion_importchunk WHERE job_id = %s", [job_id])[0][0]

        embedded_server_restart(server["pgdata"], down_s=DOWN_S)

        deadline = time.monotonic() + 240
        while (state := job())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"import not finished: {state}\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert worker.poll() is None  # the same worker process, reconnected by itself

    assert state["status"] == "succeeded", state["error"]
    text = log.read_text()
    assert "Retry in" in text, text[-3000:]  # the run that lost the database was retried
    # resumed, not restarted: the chunks committed before the restart were not read into the store again
    assert state["report"]["chunks_resumed"] >= max(before, 1)
    assert (state["read"], state["inserted"], state["duplicate"], state["rejected"]) == (ROWS + 2, ROWS, 0, 2)
    assert _query(server["url"], "SELECT count(*), count(DISTINCT event_id) FROM ingestion_event WHERE import_job_id = %s",
                  [job_id])[0] == (ROWS, ROWS)
    assert _query(server["url"], "SELECT count(*) FROM ingestion_quarantinedrow WHERE job_id = %s", [job_id])[0][0] == 2
