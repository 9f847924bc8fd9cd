"""Soak: the real stack under a steady mixed load for a bounded time, to see whether anything is
lost, fails or grows. gunicorn (sync workers, api_load.server_start) and a Celery worker (prefork)
on loopback, a Redis database of the run's own (SOAK_BROKER_URL, default db 13).

Set-up (its own database, portrait_soak; --reuse keeps it): a small synthetic shop with profiles,
API customers (source "default") given a short history through the API and profiled, two rule
segments. Then for --minutes: `--clients` threads, each request at random: a profile read, a
similar-customers query (k=10), or an event batch (5 new events of API customers); one operator
thread that every few seconds refreshes a segment and erases a subject (file, verify, execute
through the API; the subjects are API customers set aside for it, so no other thread reads them);
one thread that measures refresh lag (an event posted, then the profile polled until
`events_included` grows; over 30 s is an error).

RSS is sampled per process (each gunicorn worker, each Celery pool process) after the first
minute and at the end; growth is the largest of any one process. p95 per minute of the clients'
requests. `events_stored` counts the run's events found in the store by id; `events_sent` is
those the clients posted less the near-duplicate views the API's cleaning dropped by design
(`events_removed_by_cleaning`, from each reply); a reply storing fewer than that is an error.
One JSON line last:
{"minutes", "requests", "errors", "p95_ms_first_minute", "p95_ms_last_minute", "web_rss_growth_mb",
"worker_rss_growth_mb", "events_sent", "events_stored", "refresh_lag_p95_ms", ...}.
"""

import argparse
import http.client
import json
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_soak")

from _setup import django_ready  # noqa: E402
from build_profiles import log, worker_start, worker_stop  # noqa: E402

# build_profiles points Celery at the shared bench broker; the soak takes its own database if given
SOAK_BROKER = os.environ.get("SOAK_BROKER_URL", os.environ["CELERY_BROKER_URL"])
os.environ["CELERY_BROKER_URL"] = os.environ["CELERY_RESULT_BACKEND"] = SOAK_BROKER

from api_load import server_start  # noqa: E402
from ingest_api import free_port  # noqa: E402

LAG_TIMEOUT_S = 30.0
POLL_S = 0.05


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    def __init__(self, port: int, token: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body=None) -> tuple[int | str, dict]:
        try:
            self.connection.request(method, path, body=None if body is None else json.dumps(body).encode(),
                                    headers=self.headers)
            response = self.connection.getresponse()
            payload = response.read()
            try:
                data = json.loads(payload) if payload else {}
            except ValueError:
                data = {}
            return response.status, data
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return repr(exc), {}


def event(external: str, skus: list[str], rng: random.Random, at: datetime) -> dict:
    kind = rng.choices(["view", "add_to_cart", "purchase"], weights=[8, 2, 1])[0]
    # a UUID id is stored as the event's primary key (ingestion.event_ids), so the run can count them back
    row = {"event_id": str(uuid.uuid4()), "customer_id": external, "item_id": rng.choice(skus),
           "event_type": kind, "timestamp": iso(at)}
    if kind == "purchase":
        row.update(quantity=1, value=round(rng.uniform(5, 200), 2), currency="USD", order_id=f"soak-{uuid.uuid4().hex[:16]}")
    return row


def rss_by_process(root_pid: int) -> dict[int, float]:
    """MB of resident memory of each child of `root_pid` (gunicorn's workers, Celery's pool)."""
    import psutil

    out = {}
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            out[child.pid] = child.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return out


def growth(before: dict[int, float], after: dict[int, float]) -> float:
    """The largest growth of any process alive at both samples (a replaced process would hide a leak
    in its successor's baseline, so the count of replaced ones is reported too)."""
    common = before.keys() & after.keys()
    return round(max((after[p] - before[p] for p in common), default=0.0), 1)


def percentile(values: list[float], p: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 1) if values else None


def prepare(args) -> None:
    from ingestion.import_jobs import synthetic_shop_load

    log(f"loading {args.customers:,} customers / {args.shop_events:,} events")
    synthetic_shop_load(customers=args.customers, events=args.shop_events, seed=args.seed,
                        start=(datetime.now(UTC) - timedelta(days=365)).replace(microsecond=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=3, help="threads sending the mixed requests")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--shop-events", type=int, default=60_000)
    parser.add_argument("--api-customers", type=int, default=300)
    parser.add_argument("--erasable", type=int, default=200, help="API customers set aside to be erased")
    parser.add_argument("--operator-every", type=float, default=6.0, help="seconds between segment refresh + erasure")
    parser.add_argument("--reuse", action="store_true", help="keep the shop already in the soak database")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    import redis

    redis.Redis.from_url(SOAK_BROKER).flushdb()
    reuse = False
    if args.reuse:
        django_ready(empty=False)
        from ingestion.models import Customer

        reuse = Customer.objects.filter(source="default").exists()
    if not reuse:
        django_ready(empty=True)
        prepare(args)
    from access.services import api_token_create
    from ingestion.models import Customer, Event, Item
    from ingestion.pseudonyms import customer_key
    from profiles.builds import profiles_build
    from profiles.selectors import profiles_visible

    rng = random.Random(args.seed)
    skus = list(Item.objects.values_list("sku", flat=True))
    _, token = api_token_create(name="soak", scopes=["events:write", "profiles:read", "similarity:read", "segments:write",
                                                     "compliance"], requests_per_minute=100_000_000)
    run_tag = uuid.uuid4().hex[:8]
    live = [f"soak-{run_tag}-{i:05d}" for i in range(args.api_customers)]
    erasable = [f"soak-{run_tag}-erase-{i:05d}" for i in range(args.erasable)]
    port = free_port()
    server = worker = None
    try:
        server = server_start(port, args.workers)
        worker = worker_start("default,ingest,profiles,segments", concurrency=2)
        seeding = Client(port, token)
        now = datetime.now(UTC)
        history = [event(e, skus, rng, now - timedelta(hours=1, seconds=rng.uniform(0, 30 * 86400)))
                   for e in live + erasable for _ in range(4)]
        for start in range(0, len(history), 2000):
            status, body = seeding.request("POST", "/api/v1/events", {"events": history[start:start + 2000]})
            assert status == 200, (status, body)
        log(f"{len(history):,} history events for {len(live) + len(erasable)} API customers; building profiles")
        build = profiles_build()
        log(f"  build #{build.pk} {build.status}: {build.profiles_written:,} profiles")
        segments = []
        for name, rule in (("soak-buyers", "frequency >= 1"), ("soak-spenders", "monetary >= 100")):
            status, body = seeding.request("POST", "/api/v1/segments", {"name": f"{name}-{run_tag}", "kind": "rule", "rule": rule})
            assert status == 201, (status, body)
            segments.append(body["id"])
        erasable_keys = {customer_key(source="default", external_id=e) for e in erasable}
        readable = [k for k in profiles_visible().values_list("customer__key", flat=True) if k not in erasable_keys]
        live_keys = {e: customer_key(source="default", external_id=e) for e in live}
        log(f"soak: {args.minutes} min, {args.clients} clients + operator + lag probe, {len(readable):,} readable profiles")

        lock = threading.Lock()
        samples: list[tuple[float, float]] = []  # (seconds since start, latency) of the clients' requests
        errors: list[str] = []
        posted_ids: list[str] = []
        lags: list[float] = []
        counts = {"erasures": 0, "segment_refreshes": 0, "lag_probes": 0, "removed_by_cleaning": 0}
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        rss: dict[str, dict] = {}

        def failed(what: str, status) -> None:
            with lock:
                errors.append(f"{what}: {status}")
                if len(errors) <= 5:
                    log(f"  error {what}: {status}")

        def post_events(client: Client, rows: list[dict]) -> bool:
            status, body = client.request("POST", "/api/v1/events", {"events": rows})
            if status != 200:
                failed("POST /api/v1/events", status)
                return False
            # cleaning may drop a near-duplicate view (a random mix makes a few): not stored by design, so
            # counted apart; anything else the API did not store is an error
            removed = body.get("removed", 0)
            if body.get("inserted") != len(rows) - removed:
                failed("POST /api/v1/events", f"inserted {body.get('inserted')} of {len(rows)}: {body}")
            with lock:
                posted_ids.extend(r["event_id"] for r in rows)
                counts["removed_by_cleaning"] += removed
            return True

        def client_loop(index: int) -> None:
            local = random.Random(args.seed * 100 + index)
            client = Client(port, token)
            while (now := time.monotonic()) < stop_at:
                pick = local.random()
                if pick < 0.4:
                    what = "GET profile"
                    status, _ = client.request("GET", f"/api/v1/profiles/{local.choice(readable)}")
                elif pick < 0.75:
                    what = "GET similar"
                    status, _ = client.request("GET", f"/api/v1/profiles/{local.choice(readable)}/similar?k=10")
                else:
                    what = "POST events"
                    moment = datetime.now(UTC)
                    rows = [event(local.choice(live), skus, local, moment - timedelta(seconds=local.uniform(0, 60)))
                            for _ in range(5)]
                    status = 200 if post_events(client, rows) else None
                elapsed = time.monotonic() - now
                with lock:
                    samples.append((now - started, elapsed))
                if status not in (200, None):
                    failed(what, status)

        def operator_loop() -> None:
            local = random.Random(args.seed * 1000)
            client = Client(port, token)
            pending = list(erasable)
            while time.monotonic() < stop_at:
                segment = local.choice(segments)
                status, _ = client.request("POST", f"/api/v1/segments/{segment}/refresh")
                if status != 202:
                    failed("POST segment refresh", status)
                else:
                    counts["segment_refreshes"] += 1
                if pending:
                    subject = pending.pop()
                    status, filed = client.request("POST", "/api/v1/privacy/requests",
                                                   {"kind": "erasure", "external_id": subject, "note": "soak"})
                    if status != 201:
                        failed("POST privacy request", status)
                    else:
                        for step in ("verify", "execute"):
                            status, body = client.request("POST", f"/api/v1/privacy/requests/{filed['id']}/{step}")
                            if status != 200:
                                failed(f"POST privacy {step}", (status, body.get("error")))
                                break
                        else:
                            counts["erasures"] += 1
                time.sleep(args.operator_every)

        def lag_loop() -> None:
            local = random.Random(args.seed * 10_000)
            client = Client(port, token)
            while time.monotonic() < stop_at - LAG_TIMEOUT_S:
                external = local.choice(live)
                status, body = client.request("GET", f"/api/v1/profiles/{live_keys[external]}")
                if status != 200:
                    failed("GET profile (lag probe)", status)
                    time.sleep(1)
                    continue
                before = body["events_included"]
                if not post_events(client, [event(external, skus, local, datetime.now(UTC))]):
                    continue
                posted = time.monotonic()
                while True:
                    status, body = client.request("GET", f"/api/v1/profiles/{live_keys[external]}")
                    if status == 200 and body["events_included"] > before:
                        with lock:
                            lags.append(time.monotonic() - posted)
                            counts["lag_probes"] += 1
                        break
                    if time.monotonic() - posted > LAG_TIMEOUT_S:
                        failed("refresh lag", f"{external} not refreshed within {LAG_TIMEOUT_S:.0f} s")
                        break
                    time.sleep(POLL_S)
                time.sleep(0.5)

        def rss_loop() -> None:
            first_at = started + min(60.0, args.minutes * 30)
            while time.monotonic() < first_at:
                time.sleep(0.5)
            rss["web_first"], rss["worker_first"] = rss_by_process(server.pid), rss_by_process(worker.pid)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        threads += [threading.Thread(target=operator_loop), threading.Thread(target=lag_loop), threading.Thread(target=rss_loop)]
        for thread in threads:
            thread.start()
        last_report = started
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                with lock:
                    log(f"  {(last_report - started) / 60:.0f} min: {len(samples):,} requests, {len(errors)} errors, "
                        f"{len(posted_ids):,} events posted, {counts}")
        for thread in threads:
            thread.join()
        web_last, worker_last = rss_by_process(server.pid), rss_by_process(worker.pid)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if worker is not None:
            worker_stop(worker)

    stored = 0
    for start in range(0, len(posted_ids), 5000):
        stored += Event.objects.filter(event_id__in=posted_ids[start:start + 5000]).count()
    erased_left = Customer.objects.filter(key__in=[customer_key(source="default", external_id=e)
                                                   for e in erasable[len(erasable) - counts["erasures"]:]]).count()
    minutes = args.minutes
    last_minute_from = max(0.0, minutes * 60 - 60)
    result = {
        "minutes": minutes,
        "requests": len(samples),
        "errors": len(errors),
        "p95_ms_first_minute": percentile([x for t, x in samples if t < 60], 0.95),
        "p95_ms_last_minute": percentile([x for t, x in samples if t >= last_minute_from], 0.95),
        "web_rss_growth_mb": growth(rss.get("web_first", {}), web_last),
        "worker_rss_growth_mb": growth(rss.get("worker_first", {}), worker_last),
        # posted by the clients, less those the API's cleaning dropped as near-duplicates (reported apart)
        "events_sent": len(posted_ids) - counts["removed_by_cleaning"],
        "events_stored": stored,
        "refresh_lag_p95_ms": percentile(lags, 0.95),
        "refresh_lag_p50_ms": percentile(lags, 0.50),
        "events_posted": len(posted_ids),
        "events_removed_by_cleaning": counts["removed_by_cleaning"],
        "lag_probes": counts["lag_probes"],
        "erasures": counts["erasures"],
        "erased_customers_left": erased_left,
        "segment_refreshes": counts["segment_refreshes"],
        "web_processes_replaced": len(rss.get("web_first", {}).keys() - web_last.keys()),
        "worker_processes_replaced": len(rss.get("worker_first", {}).keys() - worker_last.keys()),
        "clients": args.clients,
        "cores": os.cpu_count(),
    }
    if result["p95_ms_first_minute"] and result["p95_ms_last_minute"]:
        result["p95_ratio_last_to_first"] = round(result["p95_ms_last_minute"] / result["p95_ms_first_minute"], 2)
    if errors:
        log(f"{len(errors)} errors, first: {errors[:3]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
