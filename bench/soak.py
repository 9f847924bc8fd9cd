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
from dataclasses import dataclass
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
EVENTS_PATH = "/api/v1/events"
RETRY_FOR_S = 300.0  # a client riding out faults gives a write up after retrying this long (an error)
RETRY_AFTER_CAP_S = 5.0


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    def __init__(self, port: int, token: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.retry_after: float | None = None  # the last reply's Retry-After, seconds
        self.retried = False  # Load.call retried the last call's request

    def request(self, method: str, path: str, body=None) -> tuple[int | str, dict]:
        try:
            self.connection.request(method, path, body=None if body is None else json.dumps(body).encode(),
                                    headers=self.headers)
            response = self.connection.getresponse()
            payload = response.read()
            retry_after = response.getheader("Retry-After")
            self.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
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
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:  # a worker that died just now (bench/chaos.py restarts it)
        return out
    for child in children:
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


def parser_build(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
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
    return parser


def shop_ready(args) -> None:
    """The database migrated, with the synthetic shop in it (kept with --reuse when it is there)."""
    reuse = False
    if args.reuse:
        django_ready(empty=False)
        from ingestion.models import Customer

        reuse = Customer.objects.filter(source="default").exists()
    if not reuse:
        django_ready(empty=True)
        prepare(args)


@dataclass
class Shop:
    """What the load needs to know of the run's shop: its token, items, customers and segments."""

    token: str
    skus: list[str]
    live: list[str]  # external ids of the API customers the clients send events for
    erasable: list[str]  # external ids of API customers set aside to be erased, read by no other thread
    live_keys: dict[str, str]
    readable: list[str]  # customer keys with a profile, erasable ones excluded
    segments: list[int]


def shop_seed(args, port: int) -> Shop:
    """Through the running server: the run's API customers with a short history, profiled by a
    batch build, and two rule segments of the run's own."""
    from access.services import api_token_create
    from ingestion.models import Item
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
    return Shop(token=token, skus=skus, live=live, erasable=erasable, live_keys=live_keys, readable=readable,
                segments=segments)


class Load:
    """The mixed load of one run: `args.clients` client threads, the operator, the lag probe and the
    RSS sampler, and what they measured.

    The soak expects every request to succeed: anything but the expected status is an error. With
    `ride_out_faults` (bench/chaos.py) the threads behave as API clients should while faults are
    injected: a 503 or a connection error on an event batch is retried, the same batch with the same
    event ids (the API is idempotent), after Retry-After, until it is stored; an operator's write that
    gets 503 is retried the same way; a read that gets 503 is counted (`unavailable_reads`), not an
    error. A 500 or any other status stays an error."""

    def __init__(self, args, shop: Shop, port: int, processes: dict, *, ride_out_faults: bool = False,
                 lag_timeout_s: float = LAG_TIMEOUT_S):
        self.args, self.shop, self.port = args, shop, port
        self.processes = processes  # "web", "worker": Popen objects whose children are sampled (chaos swaps the worker)
        self.ride_out_faults = ride_out_faults
        self.lag_timeout_s = lag_timeout_s
        self.lock = threading.Lock()
        self.samples: list[tuple[float, float, bool]] = []  # (seconds since start, latency, succeeded) of the clients' requests
        self.errors: list[str] = []
        self.posted_ids: list[str] = []
        self.lags: list[float] = []
        self.counts = {"erasures": 0, "segment_refreshes": 0, "lag_probes": 0, "removed_by_cleaning": 0,
                       "retried_503": 0, "retried_connection": 0, "unavailable_reads": 0}
        self.rss: dict[str, dict] = {}
        self.started = self.stop_at = 0.0

    def failed(self, what: str, status) -> None:
        with self.lock:
            self.errors.append(f"{what}: {status}")
            if len(self.errors) <= 5:
                log(f"  error {what}: {status}")

    def call(self, client: Client, what: str, method: str, path: str, body=None, *, ok: int = 200,
             retry: bool = False, sample: bool = False) -> tuple[int | str, dict]:
        """One request (more while a write is retried); an unexpected status is recorded as an error
        and returned. `sample`: the clients' requests, whose latencies make the percentiles."""
        give_up_at = time.monotonic() + RETRY_FOR_S
        client.retried = False
        while True:
            sent = time.monotonic()
            status, reply = client.request(method, path, body)
            if sample:
                with self.lock:
                    self.samples.append((sent - self.started, time.monotonic() - sent, status == ok))
            if status == ok:
                return status, reply
            unavailable = status == 503 or (isinstance(status, str) and method == "POST" and path == EVENTS_PATH)
            if not (self.ride_out_faults and unavailable):
                self.failed(what, (status, reply.get("error")) if isinstance(reply, dict) and reply else status)
                return status, reply
            if not retry:
                with self.lock:
                    self.counts["unavailable_reads"] += 1
                return status, reply
            if time.monotonic() > give_up_at:
                self.failed(what, f"still {status} after retrying for {RETRY_FOR_S:.0f} s")
                return status, reply
            client.retried = True
            with self.lock:
                self.counts["retried_503" if status == 503 else "retried_connection"] += 1
            time.sleep(min(RETRY_AFTER_CAP_S, client.retry_after or 1.0))

    def post_events(self, client: Client, rows: list[dict], *, sample: bool = False) -> bool:
        with self.lock:  # counted as sent before the first try: a lost reply may still have stored them
            self.posted_ids.extend(r["event_id"] for r in rows)
        status, body = self.call(client, "POST /api/v1/events", "POST", EVENTS_PATH, {"events": rows},
                                 retry=True, sample=sample)
        if status != 200:
            return False
        # cleaning may drop a near-duplicate view (a random mix makes a few): not stored by design, so
        # counted apart; anything else the API did not store is an error. A retried batch may find
        # its events stored by a try whose reply was lost: duplicates then count as stored.
        removed = body.get("removed", 0)
        stored = body.get("inserted", 0)
        if client.retried:
            stored += body.get("duplicates", 0)
        if stored != len(rows) - removed:
            self.failed("POST /api/v1/events", f"inserted {body.get('inserted')} of {len(rows)}: {body}")
        with self.lock:
            self.counts["removed_by_cleaning"] += removed
        return True

    def client_loop(self, index: int) -> None:
        local = random.Random(self.args.seed * 100 + index)
        client = Client(self.port, self.shop.token)
        while time.monotonic() < self.stop_at:
            pick = local.random()
            if pick < 0.4:
                self.call(client, "GET profile", "GET", f"/api/v1/profiles/{local.choice(self.shop.readable)}", sample=True)
            elif pick < 0.75:
                self.call(client, "GET similar", "GET", f"/api/v1/profiles/{local.choice(self.shop.readable)}/similar?k=10",
                          sample=True)
            else:
                moment = datetime.now(UTC)
                rows = [event(local.choice(self.shop.live), self.shop.skus, local,
                              moment - timedelta(seconds=local.uniform(0, 60))) for _ in range(5)]
                self.post_events(client, rows, sample=True)

    def operator_loop(self) -> None:
        local = random.Random(self.args.seed * 1000)
        client = Client(self.port, self.shop.token)
        pending = list(self.shop.erasable)
        while time.monotonic() < self.stop_at:
            segment = local.choice(self.shop.segments)
            status, _ = self.call(client, "POST segment refresh", "POST", f"/api/v1/segments/{segment}/refresh",
                                  ok=202, retry=True)
            if status == 202:
                self.counts["segment_refreshes"] += 1
            if pending:
                subject = pending.pop()
                status, filed = self.call(client, "POST privacy request", "POST", "/api/v1/privacy/requests",
                                          {"kind": "erasure", "external_id": subject, "note": "soak"}, ok=201, retry=True)
                if status == 201:
                    for step in ("verify", "execute"):
                        status, _ = self.call(client, f"POST privacy {step}", "POST",
                                              f"/api/v1/privacy/requests/{filed['id']}/{step}", retry=True)
                        if status != 200:
                            break
                    else:
                        self.counts["erasures"] += 1
            time.sleep(self.args.operator_every)

    def lag_loop(self) -> None:
        local = random.Random(self.args.seed * 10_000)
        client = Client(self.port, self.shop.token)
        while time.monotonic() < self.stop_at - LAG_TIMEOUT_S:
            external = local.choice(self.shop.live)
            path = f"/api/v1/profiles/{self.shop.live_keys[external]}"
            status, body = self.call(client, "GET profile (lag probe)", "GET", path)
            if status != 200:
                time.sleep(1)
                continue
            before = body["events_included"]
            if not self.post_events(client, [event(external, self.shop.skus, local, datetime.now(UTC))]):
                continue
            posted = time.monotonic()
            while True:
                status, body = client.request("GET", path)
                if status == 200 and body["events_included"] > before:
                    with self.lock:
                        self.lags.append(time.monotonic() - posted)
                        self.counts["lag_probes"] += 1
                    break
                if time.monotonic() - posted > self.lag_timeout_s:
                    self.failed("refresh lag", f"{external} not refreshed within {self.lag_timeout_s:.0f} s")
                    break
                time.sleep(POLL_S)
            time.sleep(0.5)

    def rss_loop(self) -> None:
        first_at = self.started + min(60.0, self.args.minutes * 60 / 2)
        while time.monotonic() < first_at:
            time.sleep(0.5)
        self.rss["web_first"] = rss_by_process(self.processes["web"].pid)
        self.rss["worker_first"] = rss_by_process(self.processes["worker"].pid)

    def run(self, *alongside) -> None:
        """Every thread, and one for each of `alongside` (callables: chaos's fault injector), for
        --minutes; a progress line each minute. RSS sampled at the end too."""
        self.started = time.monotonic()
        self.stop_at = self.started + self.args.minutes * 60
        threads = [threading.Thread(target=self.client_loop, args=(i,)) for i in range(self.args.clients)]
        threads += [threading.Thread(target=loop) for loop in (self.operator_loop, self.lag_loop, self.rss_loop, *alongside)]
        for thread in threads:
            thread.start()
        last_report = self.started
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                with self.lock:
                    log(f"  {(last_report - self.started) / 60:.0f} min: {len(self.samples):,} requests, "
                        f"{len(self.errors)} errors, {len(self.posted_ids):,} events posted, {self.counts}")
        for thread in threads:
            thread.join()
        self.rss["web_last"] = rss_by_process(self.processes["web"].pid)
        self.rss["worker_last"] = rss_by_process(self.processes["worker"].pid)

    def result(self) -> dict:
        """The soak's JSON keys, counted against the store."""
        from ingestion.models import Customer, Event
        from ingestion.pseudonyms import customer_key

        stored = 0
        for start in range(0, len(self.posted_ids), 5000):
            stored += Event.objects.filter(event_id__in=self.posted_ids[start:start + 5000]).count()
        erased = self.shop.erasable[len(self.shop.erasable) - self.counts["erasures"]:]
        erased_left = Customer.objects.filter(key__in=[customer_key(source="default", external_id=e) for e in erased]).count()
        minutes = self.args.minutes
        last_minute_from = max(0.0, minutes * 60 - 60)
        samples, rss = self.samples, self.rss
        result = {
            "minutes": minutes,
            "requests": len(samples),
            "errors": len(self.errors),
            "p95_ms_first_minute": percentile([x for t, x, _ in samples if t < 60], 0.95),
            "p95_ms_last_minute": percentile([x for t, x, _ in samples if t >= last_minute_from], 0.95),
            "web_rss_growth_mb": growth(rss.get("web_first", {}), rss["web_last"]),
            "worker_rss_growth_mb": growth(rss.get("worker_first", {}), rss["worker_last"]),
            # posted by the clients, less those the API's cleaning dropped as near-duplicates (reported apart)
            "events_sent": len(self.posted_ids) - self.counts["removed_by_cleaning"],
            "events_stored": stored,
            "refresh_lag_p95_ms": percentile(self.lags, 0.95),
            "refresh_lag_p50_ms": percentile(self.lags, 0.50),
            "events_posted": len(self.posted_ids),
            "events_removed_by_cleaning": self.counts["removed_by_cleaning"],
            "lag_probes": self.counts["lag_probes"],
            "erasures": self.counts["erasures"],
            "erased_customers_left": erased_left,
            "segment_refreshes": self.counts["segment_refreshes"],
            "web_processes_replaced": len(rss.get("web_first", {}).keys() - rss["web_last"].keys()),
            "worker_processes_replaced": len(rss.get("worker_first", {}).keys() - rss["worker_last"].keys()),
            "clients": self.args.clients,
            "cores": os.cpu_count(),
        }
        if result["p95_ms_first_minute"] and result["p95_ms_last_minute"]:
            result["p95_ratio_last_to_first"] = round(result["p95_ms_last_minute"] / result["p95_ms_first_minute"], 2)
        if self.errors:
            log(f"{len(self.errors)} errors, first: {self.errors[:3]}")
        return result


def main() -> None:
    args = parser_build(__doc__).parse_args()
    import redis

    redis.Redis.from_url(SOAK_BROKER).flushdb()
    shop_ready(args)
    port = free_port()
    server = worker = None
    try:
        server = server_start(port, args.workers)
        worker = worker_start("default,ingest,profiles,segments", concurrency=2)
        shop = shop_seed(args, port)
        log(f"soak: {args.minutes} min, {args.clients} clients + operator + lag probe, {len(shop.readable):,} readable profiles")
        load = Load(args, shop, port, {"web": server, "worker": worker})
        load.run()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if worker is not None:
            worker_stop(worker)
    print(json.dumps(load.result()))


if __name__ == "__main__":
    main()
