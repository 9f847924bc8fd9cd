"""Real-time refresh latency: from an event's POST returning 200 to its profile showing it.

Loads a small synthetic shop, gives a few hundred API customers (source "default") a history
through the API, builds every profile, then starts the real stack: gunicorn (2 workers) and a
Celery worker (prefork, 2 processes, queues default/ingest/profiles) on a Redis database of its
own. Per sample: read the customer's `events_included`, POST one new event, start the clock on
the 200, poll GET /api/v1/profiles/{key} every 10 ms until `events_included` grows (over the
timeout counts as an error). A few warm-up samples are not counted.

Two phases in the same run: first before any CLV fit, then after `crm.services.clv_fit()`, when
profiles carry forecasts the API serves and each refresh checks whether a new order needs a re-score
(the sampled events are views, which need none), so the cost the forecasts add to real-time refresh
is a ratio measured on the same shop and machine. Prints one JSON line last:
the top-level figures are the second phase, the product as it runs.
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from _setup import ROOT, django_ready
from build_profiles import (  # also points Celery at the bench broker
    broker_empty,
    log,
    worker_start,
    worker_stop,
)
from ingest_api import free_port, wait_until_up

POLL_S = 0.01


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    """One HTTP client per thread (gunicorn's sync workers close the connection after each reply;
    http.client reopens it)."""

    def __init__(self, port: int, token: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.connection.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=self.headers)
        response = self.connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else {}

    def events_included(self, key: str) -> int | None:
        status, body = self.request("GET", f"/api/v1/profiles/{key}")
        return body["events_included"] if status == 200 else None

    def post(self, events: list[dict]) -> None:
        status, body = self.request("POST", "/api/v1/events", {"events": events})
        if status != 200:
            raise RuntimeError(f"POST /api/v1/events: HTTP {status}: {str(body)[:500]}")


def histories(externals: list[str], skus: list[str], per_customer: int, rng: random.Random) -> list[dict]:
    """A few weeks of views, carts and purchases for each API customer, ending an hour ago."""
    now = datetime.now(UTC)
    events = []
    for external in externals:
        for _ in range(per_customer):
            kind = rng.choices(["view", "add_to_cart", "purchase"], weights=[8, 2, 1])[0]
            event = {
                "event_id": f"bench-{uuid.uuid4().hex}", "customer_id": external, "item_id": rng.choice(skus),
                "event_type": kind, "timestamp": iso(now - timedelta(hours=1, seconds=rng.uniform(0, 45 * 86400))),
            }
            if kind == "purchase":
                event.update(quantity=1, value=round(rng.uniform(5, 200), 2), currency="USD",
                             order_id=f"bench-{uuid.uuid4().hex[:16]}")
            events.append(event)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200, help="timed samples (one event each)")
    parser.add_argument("--customers", type=int, default=2000, help="customers in the synthetic shop")
    parser.add_argument("--shop-events", type=int, default=100_000)
    parser.add_argument("--api-customers", type=int, default=200, help="customers sampled (source 'default')")
    parser.add_argument("--history", type=int, default=5, help="events of each API customer before sampling")
    parser.add_argument("--concurrency", type=int, default=1, help="clients sampling at once (disjoint customers)")
    parser.add_argument("--warmup", type=int, default=4, help="samples before the timed ones (not counted)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds until a sample counts as an error")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    broker_empty()
    django_ready()
    from access.services import api_token_create
    from ingestion.pseudonyms import customer_key
    from ingestion.models import Item
    from ingestion.import_jobs import synthetic_shop_load
    from profiles.builds import profiles_build

    rng = random.Random(args.seed)
    log(f"loading {args.customers:,} customers / {args.shop_events:,} events")
    # a year of history ending now, so the CLV fit has recent back-tests to learn from, as a live shop has
    synthetic_shop_load(customers=args.customers, events=args.shop_events, seed=args.seed,
                        start=(datetime.now(UTC) - timedelta(days=365)).replace(microsecond=0))
    skus = list(Item.objects.values_list("sku", flat=True))
    _, token = api_token_create(name="bench-refresh", scopes=["events:write", "profiles:read"])
    externals = [f"bench-{i:06d}" for i in range(args.api_customers)]
    keys = {external: customer_key(source="default", external_id=external) for external in externals}

    port = free_port()
    server = worker = None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
             "--timeout", "120", "--log-level", "warning"],
            cwd=ROOT, env=dict(os.environ), stdout=sys.stderr,
        )
        worker = worker_start("default,ingest,profiles,segments")
        wait_until_up(port, server)
        seeding = Client(port, token)
        history = histories(externals, skus, args.history, rng)
        for start in range(0, len(history), 5000):
            seeding.post(history[start:start + 5000])
        log(f"{len(history):,} history events posted for {len(externals)} API customers; building profiles")
        build = profiles_build()
        log(f"  build #{build.pk} {build.status}: {build.profiles_written:,} profiles")

        lock = threading.Lock()
        phases: dict[str, tuple[list[float], list[str]]] = {}

        def run_phase(name: str) -> None:
            latencies: list[float] = []
            errors: list[str] = []
            phases[name] = (latencies, errors)

            def sample(client: Client, own: list[str], local: random.Random, timed: bool) -> None:
                external = local.choice(own)
                key = keys[external]
                try:
                    before = client.events_included(key)
                    if before is None:
                        raise RuntimeError(f"no profile for {external}")
                    client.post([{"event_id": f"bench-{uuid.uuid4().hex}", "customer_id": external,
                                  "item_id": local.choice(skus), "event_type": "view", "timestamp": iso(datetime.now(UTC))}])
                    started = time.perf_counter()
                    while (client.events_included(key) or 0) <= before:
                        if time.perf_counter() - started > args.timeout:
                            raise RuntimeError(f"{external}: profile not refreshed within {args.timeout:.0f} s")
                        time.sleep(POLL_S)
                    elapsed = time.perf_counter() - started
                # one failed sample is a data point, not the end of the run
                except (RuntimeError, OSError, ValueError, http.client.HTTPException) as exc:
                    with lock:
                        if timed:
                            errors.append(str(exc))
                    log(f"  sample failed: {exc}")
                    return
                if timed:
                    with lock:
                        latencies.append(elapsed)
                        if len(latencies) % 25 == 0:
                            log(f"  {len(latencies)}/{args.events} samples")

            def sampler(index: int) -> None:
                client = Client(port, token)
                local = random.Random(args.seed * 1000 + index)
                own = externals[index::args.concurrency]
                share = args.events // args.concurrency + (index < args.events % args.concurrency)
                for n in range(args.warmup + share):
                    sample(client, own, local, timed=n >= args.warmup)

            log(f"sampling: {args.events} events, {args.concurrency} client(s)")
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(sampler, range(args.concurrency)))

        run_phase("profiles_only")
        from crm.services import clv_fit

        fit = clv_fit()
        log(f"CLV fit #{fit.pk}: {fit.customers:,} buyers, trees: {fit.uses_trees}")
        from crm.models import CustomerPrediction

        scored = CustomerPrediction.objects.filter(customer__key__in=list(keys.values())).count()
        log(f"{scored} of the {len(keys)} sampled API customers have a forecast (the sampled views do not re-score it)")
        run_phase("with_clv")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if worker is not None:
            worker_stop(worker)

    def summary(latencies: list[float], errors: list[str]) -> dict:
        if errors:
            log(f"{len(errors)} error(s), first: {errors[0]}")
        latencies = sorted(latencies)

        def percentile(p: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 1) if latencies else None

        return {"samples": len(latencies), "p50_ms": percentile(0.50), "p95_ms": percentile(0.95),
                "max_ms": round(latencies[-1] * 1000, 1) if latencies else None, "errors": len(errors)}

    baseline = summary(*phases["profiles_only"])
    with_clv = summary(*phases["with_clv"])
    ratio = (with_clv["p50_ms"] / baseline["p50_ms"]) if baseline["p50_ms"] and with_clv["p50_ms"] else None
    print(json.dumps({**with_clv, "profiles_only": baseline, "p50_ratio_with_clv": None if ratio is None else round(ratio, 2),
                      "concurrency": args.concurrency, "poll_ms": POLL_S * 1000}))


if __name__ == "__main__":
    main()
