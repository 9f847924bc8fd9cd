"""Serving under load: a production-style server (gunicorn, sync workers) on loopback, N concurrent
clients calling GET /api/v1/profiles/{key}/similar?k=10 and GET /api/v1/profiles/{key} (half each,
random customers) for a fixed time after a warm-up. Each client is its own process with one
keep-alive connection, so the clients' Python does not share a GIL with each other.

Set-up (skipped with --reuse when the database already holds it): a synthetic shop, its profiles,
and a short GRU training run so profiles carry learned embeddings and the similar search runs in
the fused space (traits + embedding, 80-d HNSW). Its own database (portrait_api_load), so a rerun
can reuse it. One JSON line last: {"concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", ...}.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time

os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_api_load")

from _setup import ROOT, django_ready  # noqa: E402
from ingest_api import free_port, wait_until_up  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def client_run(port: int, token: str, keys: list[str], seed: int, warmup_s: float, duration_s: float, queue) -> None:
    """One client: requests back to back; latencies of those started after the warm-up and before
    the end, and the statuses that were not 200."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    start = time.perf_counter()
    latencies, errors = [], []
    while (now := time.perf_counter()) - start < warmup_s + duration_s:
        key = rng.choice(keys)
        path = f"/api/v1/profiles/{key}/similar?k=10" if rng.random() < 0.5 else f"/api/v1/profiles/{key}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            status = repr(exc)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        elapsed = time.perf_counter() - now
        if now - start >= warmup_s:
            latencies.append(elapsed)
            if status != 200:
                errors.append(f"{path}: {status}")
    queue.put((latencies, errors))


def shop_prepare(customers: int, events: int, epochs: int, seed: int) -> None:
    from django.conf import settings

    from ingestion.import_jobs import synthetic_shop_load
    from profiles.builds import profiles_build
    from pipeline.flows import training_run
    from training.services import training_run_create

    settings.MODELS_DIR = ROOT / "var" / "bench-models"
    log(f"loading {customers:,} customers / {events:,} events")
    synthetic_shop_load(customers=customers, events=events, seed=seed)
    log("building profiles")
    profiles_build()
    log(f"training a GRU for {epochs} epochs")
    run = training_run_create(arch="gru", config={"model": {"layers": 1, "max_len": 50, "content": False},
                                                  "train": {"epochs": epochs}})
    training_run(run_id=run.pk, rebuild=True)


def shop_ready(*, customers: int, events: int, epochs: int, seed: int, reuse: bool) -> None:
    """The bench database with a profiled shop: the one already there with --reuse (when it has
    learned embeddings), else a fresh one."""
    if reuse:
        django_ready(empty=False)
        from profiles.models import Profile

        if Profile.objects.exclude(embedding=None).exists():
            return
    django_ready(empty=True)
    shop_prepare(customers, events, epochs, seed)


def server_start(port: int, workers: int) -> subprocess.Popen:
    """gunicorn with sync workers on loopback, as production runs it; up when this returns."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=dict(os.environ, DB_CONN_MAX_AGE="600"), stdout=sys.stderr,
    )
    wait_until_up(port, server)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep the shop already in the bench database")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    shop_ready(customers=args.customers, events=args.events, epochs=args.epochs, seed=args.seed, reuse=args.reuse)
    from access.services import api_token_create
    from profiles.models import Profile
    from profiles.selectors import profiles_visible

    # customers an app may see (opted-out ones answer 404 by design)
    keys = list(profiles_visible().exclude(embedding=None).values_list("customer__key", flat=True))
    profiles = Profile.objects.count()
    # the bench measures serving, not the throttle: its token's own rate is far above the load
    _, token = api_token_create(name="bench-load", scopes=["profiles:read", "similarity:read"],
                                requests_per_minute=100_000_000)
    port = free_port()
    server = server_start(port, args.workers)
    try:
        log(f"{args.concurrency} clients × {args.duration:.0f} s against {args.workers} workers ({len(keys):,} profiles)")
        queue = multiprocessing.Queue()
        clients = [
            multiprocessing.Process(target=client_run,
                                    args=(port, token, keys, args.seed * 100 + i, args.warmup, args.duration, queue))
            for i in range(args.concurrency)
        ]
        for c in clients:
            c.start()
        results = [queue.get() for _ in clients]
        for c in clients:
            c.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(x for r in results for x in r[0])
    errors = [e for r in results for e in r[1]]
    if errors:
        log(f"{len(errors)} errors, first: {errors[0]}")

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 1)

    print(json.dumps({
        "concurrency": args.concurrency, "rps": round(len(latencies) / args.duration, 1),
        "p50_ms": percentile(0.50), "p95_ms": percentile(0.95), "p99_ms": percentile(0.99), "errors": len(errors),
        "requests": len(latencies), "workers": args.workers, "profiles": profiles,
    }))


if __name__ == "__main__":
    main()
