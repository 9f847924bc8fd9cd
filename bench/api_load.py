"""Serving under load: a production-style server (gunicorn, sync workers) on loopback, N concurrent
clients calling GET /api/v1/profiles/{key}/similar?k=10 and GET /api/v1/profiles/{key} (half each,
random customers) for a fixed time after a warm-up. Each client is its own process with one
keep-alive connection, so the clients' Python does not share a GIL with each other.

Set-up (skipped with --reuse when the database already holds it): a synthetic shop, its profiles,
and a short GRU training run so profiles carry learned embeddings and the similar search runs in
the fused space (traits + embedding, 80-d HNSW). Its own database (portrait_api_load), so a rerun
can reuse it. One JSON line last: {"concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", ...}.

Per endpoint ("endpoints": {"similar", "profile"}): client p50/p95; `server_ms`, the median time
inside Django from the server's `Server-Timing` header (config.server_timing, switched on for the
bench's server), `server_db_ms`, the part of it in queries, and `server_cpu_ms`, the worker's CPU time in it
(below server_ms by the waits for the database and, with more runnable processes than cores, for a core); `sql_ms`: the queries one request
of that endpoint runs, replayed alone on a plain connection (the measured time is cut into
`--rounds` segments with the server idle between them; the median over `--sql-samples` requests
replayed before each segment and after the last), `graph_ms` the in-memory graph's search in such a request, and
`server_over_sql` = server_ms / (sql_ms + graph_ms) (issue 20's target: ≤ 2).

`--replicas N`: after the single-server run, the same load again with N streaming replicas of the
embedded server (`pg_basebackup -R`, loopback ports) in DATABASE_REPLICA_URLS, so the profile and
similar reads go to them; both runs are in the JSON line ("replicas": {...}, ratios against the
single-server run), with the transactions each server ran during the replica run. On one machine the
replicas share its cores with the primary, the server and the clients: the figures say what routing
costs and that reads move, not what a replica on its own machine adds.
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

ENDPOINTS = {"similar": "/api/v1/profiles/{key}/similar?k=10", "profile": "/api/v1/profiles/{key}"}

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
        endpoint = "similar" if rng.random() < 0.5 else "profile"
        path = ENDPOINTS[endpoint].format(key=key)
        timing = None
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
            timing = server_timing(response.getheader("Server-Timing"))
        except (OSError, http.client.HTTPException) as exc:
            status = repr(exc)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        elapsed = time.perf_counter() - now
        if now - start >= warmup_s:
            latencies.append((endpoint, elapsed, timing))
            if status != 200:
                errors.append(f"{path}: {status}")
    queue.put((latencies, errors))


def server_timing(header: str | None) -> dict | None:
    """{"app": ms, "db": ms, "cpu": ms} from `Server-Timing: app;dur=…, db;dur=…, cpu;dur=…` (config.server_timing)."""
    if not header:
        return None
    parts = dict(part.strip().split(";dur=") for part in header.split(","))
    return {name: float(value) for name, value in parts.items()}


def endpoint_sql_ms(*, token: str, keys: list[str], samples: int) -> dict:
    """Each endpoint's SQL alone: the queries one request runs, captured in this process (Django's
    test client through the whole middleware stack), then replayed on a plain connection in one
    transaction that is rolled back, back to back, no Python between them. Per key, the replay's wall
    time from the first statement to the last (the transaction's BEGIN and ROLLBACK left out), so it
    counts one round trip per query and no more."""
    import psycopg
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from profiles.vector_index import MemoryIndex

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
    graph_seconds = [0.0]
    search = MemoryIndex.search

    def timed_search(self, *a, **kw):
        started = time.perf_counter()
        try:
            return search(self, *a, **kw)
        finally:
            graph_seconds[0] += time.perf_counter() - started

    MemoryIndex.search = timed_search
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    figures = {}
    with psycopg.connect(**params) as replay:
        for endpoint, template in ENDPOINTS.items():
            times, counts, graph_ms = [], [], []
            for key in keys[:samples]:
                graph_seconds[0] = 0.0
                with CaptureQueriesContext(connection) as captured:
                    assert client.get(template.format(key=key)).status_code == 200
                graph_ms.append(graph_seconds[0] * 1000)
                statements = [q["sql"] for q in captured.captured_queries]
                with replay.cursor() as cursor:
                    cursor.execute("SELECT 1")  # opens the transaction: its BEGIN round trip is not the endpoint's
                    started = time.perf_counter()
                    for sql in statements:
                        cursor.execute(sql)
                    times.append((time.perf_counter() - started) * 1000)
                replay.rollback()
                counts.append(len(statements))
            figures[endpoint] = {"times": times, "counts": counts, "graph_ms": graph_ms}
    MemoryIndex.search = search
    return figures


def sql_figures(*replays: dict) -> dict:
    """Per endpoint, the medians over the samples of several endpoint_sql_ms replays."""
    figures = {}
    for endpoint in ENDPOINTS:
        times = sorted(t for replay in replays for t in replay[endpoint]["times"])
        counts = [c for replay in replays for c in replay[endpoint]["counts"]]
        graph_ms = sorted(g for replay in replays for g in replay[endpoint]["graph_ms"])
        figures[endpoint] = {"sql_ms": round(times[len(times) // 2], 2), "queries": round(sum(counts) / len(counts), 1),
                             "graph_ms": round(graph_ms[len(graph_ms) // 2], 3)}
    return figures


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


def production_env() -> dict:
    """The server's environment as production sets it: DEBUG off (Django's debug cursor records and
    logs every query, whitenoise rescans static files) and every key given, these being the keys
    this process's DEBUG made under var/secrets, so the server reads the same pseudonyms."""
    from django.conf import settings

    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PSEUDONYM_KEY", "SUPPRESSION_KEY", "DEBUG")}
    return {**environment, "DEBUG": "0", "SECRET_KEY": settings.SECRET_KEY,
            "PSEUDONYM_KEYS": ",".join(f"{key_id}:{secret}" for key_id, secret in settings.PSEUDONYM_KEYS),
            "SUPPRESSION_KEYS": ",".join(f"{key_id}:{secret}" for key_id, secret in settings.SUPPRESSION_KEYS),
            "PII_ENCRYPTION_KEYS": ",".join(settings.PII_ENCRYPTION_KEYS)}


def server_start(port: int, workers: int, **env) -> subprocess.Popen:
    """gunicorn with sync workers on loopback, as production runs it (production_env); up when this returns."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=dict(production_env(), DB_CONN_MAX_AGE="600", SERVER_TIMING="1", **env), stdout=sys.stderr,
    )
    wait_until_up(port, server)
    # the port is the master's; a worker answers once it has imported the app (seconds on a busy machine)
    deadline = time.monotonic() + 180
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not answer /healthz")
        time.sleep(0.5)
    return server


def load_run(*, token: str, keys: list[str], args, between=None, **env) -> dict:
    """One server, `args.concurrency` clients for the warm-up and `args.duration`: the figures. With
    `between`, the measured time is cut into `args.rounds` segments with the server idle between them,
    and `between()` runs before each (the SQL replays: so drift in the machine's speed weighs on the
    replayed and the served side alike)."""
    port = free_port()
    server = server_start(port, args.workers, **env)
    rounds = args.rounds if between is not None else 1
    results = []
    try:
        log(f"{args.concurrency} clients × {args.duration:.0f} s against {args.workers} workers ({len(keys):,} profiles)"
            f" in {rounds} segment(s)")
        for index in range(rounds):
            if between is not None:
                between()
            # a later segment's workers are warm: a second to open the clients' connections
            warmup = args.warmup if index == 0 else min(args.warmup, 1.0)
            queue = multiprocessing.Queue()
            clients = [
                multiprocessing.Process(target=client_run,
                                        args=(port, token, keys, args.seed * 100 + index * 1000 + i, warmup,
                                              args.duration / rounds, queue))
                for i in range(args.concurrency)
            ]
            for c in clients:
                c.start()
            results.extend(queue.get() for _ in clients)
            for c in clients:
                c.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    samples = [x for r in results for x in r[0]]
    latencies = sorted(elapsed for _, elapsed, _ in samples)
    errors = [e for r in results for e in r[1]]
    if errors:
        log(f"{len(errors)} errors, first: {errors[0]}")

    def percentile(values: list[float], p: float, scale: float = 1000, digits: int = 1) -> float:
        return round(values[min(len(values) - 1, int(len(values) * p))] * scale, digits)

    endpoints = {}
    for endpoint in ENDPOINTS:
        mine = sorted(elapsed for name, elapsed, _ in samples if name == endpoint)
        timed = [timing for name, _, timing in samples if name == endpoint and timing]
        app = sorted(t["app"] for t in timed)
        db = sorted(t["db"] for t in timed)
        cpu = sorted(t["cpu"] for t in timed if "cpu" in t)
        endpoints[endpoint] = {"requests": len(mine), "p50_ms": percentile(mine, 0.50), "p95_ms": percentile(mine, 0.95),
                               "server_ms": percentile(app, 0.50, 1, digits=2) if app else None,
                               "server_db_ms": percentile(db, 0.50, 1, digits=2) if db else None,
                               "server_cpu_ms": percentile(cpu, 0.50, 1, digits=2) if cpu else None}
    return {"rps": round(len(latencies) / args.duration, 1), "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99), "errors": len(errors),
            "requests": len(latencies), "endpoints": endpoints}


def _transactions(url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                            [database]).fetchone()[0]


def replicas_run(*, count: int, token: str, keys: list[str], args) -> dict:
    """The same load with `count` streaming replicas of the embedded server in DATABASE_REPLICA_URLS."""
    from django.conf import settings
    from django.db import connection

    from config.db_router import primary_wal_lsn
    from config.embedded_db import embedded_replica_start, embedded_replica_stop

    database = connection.settings_dict["NAME"]
    primary_url = "postgresql://postgres@/{}?host={}".format(database, connection.settings_dict["HOST"])
    replicas, urls = [], []
    try:
        for _ in range(count):
            port = free_port()
            directory = ROOT / "var" / f"bench-replica-{port}"
            started = time.perf_counter()
            urls.append(f"{embedded_replica_start(settings.EMBEDDED_DATABASE_DIR, directory, port=port)}/{database}")
            replicas.append(directory)
            log(f"replica on 127.0.0.1:{port} started in {time.perf_counter() - started:.1f} s")
        target = primary_wal_lsn()
        for url in urls:  # caught up before the clock starts
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                while conn.execute("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint").fetchone()[0] < target:
                    time.sleep(0.05)
        before = {"primary": _transactions(primary_url, database), **{u: _transactions(u, database) for u in urls}}
        figures = load_run(token=token, keys=keys, args=args, DATABASE_REPLICA_URLS=",".join(urls))
        after = {"primary": _transactions(primary_url, database), **{u: _transactions(u, database) for u in urls}}
    finally:
        for directory in replicas:
            embedded_replica_stop(directory)
    figures["primary_transactions"] = after["primary"] - before["primary"]
    figures["replica_transactions"] = sum(after[u] - before[u] for u in urls)
    return figures


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
    parser.add_argument("--replicas", type=int, default=0,
                        help="then run the same load with this many streaming replicas taking the reads")
    parser.add_argument("--sql-samples", type=int, default=50,
                        help="requests per endpoint whose SQL is replayed alone, before each segment and after the last")
    parser.add_argument("--rounds", type=int, default=4,
                        help="segments the measured time is cut into, the SQL replayed before each and after the last")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--memory-graph", action=argparse.BooleanOptionalAction, default=True,
                        help="answer /similar from the in-memory graph, as the product ships (--no-memory-graph: pgvector)")
    args = parser.parse_args()
    os.environ["SIMILARITY_MEMORY_INDEX"] = "1" if args.memory_graph else "0"  # this process's requests too (sql_ms)

    shop_ready(customers=args.customers, events=args.events, epochs=args.epochs, seed=args.seed, reuse=args.reuse)
    if args.memory_graph:
        # as the worker does after a build (profiles.tasks.similarity_snapshots_refresh_task)
        from profiles.memory_search import memory_snapshots_refresh

        log(f"in-memory similarity snapshots written: {memory_snapshots_refresh()}")
    from access.services import api_token_create
    from profiles.models import Profile
    from profiles.selectors import profiles_visible

    # customers an app may see (opted-out ones answer 404 by design)
    keys = list(profiles_visible().exclude(embedding=None).values_list("customer__key", flat=True))
    profiles = Profile.objects.count()
    # the bench measures serving, not the throttle: its token's own rate is far above the load
    _, token = api_token_create(name="bench-load", scopes=["profiles:read", "similarity:read"],
                                requests_per_minute=100_000_000)
    # the endpoints' SQL alone, before each segment of the load and after the last (so nothing else
    # competes for the cores, and a machine whose speed drifts during the run weighs on both sides of
    # server_over_sql alike)
    replays = []
    # customers drawn as the clients draw them: the first rows of the table are not typical (at 20,000
    # they are customers whose profile statements took ~4.5 ms replayed against ~2.3 for a random one)
    replay_keys = random.Random(args.seed).sample(keys, min(len(keys), args.sql_samples))

    def replay() -> None:
        replays.append(endpoint_sql_ms(token=token, keys=replay_keys, samples=args.sql_samples))

    single = load_run(token=token, keys=keys, args=args, between=replay,
                      SIMILARITY_MEMORY_INDEX="1" if args.memory_graph else "0")
    replay()
    for endpoint, figures in sql_figures(*replays).items():
        single["endpoints"][endpoint].update(figures)
        server_ms = single["endpoints"][endpoint]["server_ms"]
        work_ms = figures["sql_ms"] + figures["graph_ms"]
        single["endpoints"][endpoint]["server_over_sql"] = round(server_ms / work_ms, 2) if server_ms else None
    single["memory_graph"] = args.memory_graph
    result = {"concurrency": args.concurrency, **single, "workers": args.workers, "profiles": profiles}
    if args.replicas:
        with_replicas = replicas_run(count=args.replicas, token=token, keys=keys, args=args)
        result["replicas"] = {"count": args.replicas, **with_replicas,
                              "rps_ratio": round(with_replicas["rps"] / single["rps"], 3) if single["rps"] else None,
                              "p95_ratio": round(with_replicas["p95_ms"] / single["p95_ms"], 3) if single["p95_ms"] else None,
                              "cores": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
