"""REST ingestion throughput: starts the real server (gunicorn), posts 10,000-event batches.

Bodies are encoded before the clock starts so the figure is the server's (parse, validate,
clean, pseudonymise, store), not the client's JSON encoder. Prints one JSON line last.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _setup import ROOT, django_ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()
    django_ready()
    from access.services import api_token_create
    from ingestion import generator

    _, token = api_token_create(name="bench", scopes=["events:write"])
    total = args.batches * args.batch_size
    config = generator.ShopConfig(customers=max(100, total // 50), events=total, seed=11)
    rows = []
    for frame in generator.generate_events(config):
        frame = frame.copy()
        frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for record in frame.to_dict("records"):
            rows.append({k: v for k, v in record.items() if v is not None and v == v and v != ""})
    bodies = [json.dumps({"events": rows[i:i + args.batch_size]}).encode() for i in range(0, len(rows), args.batch_size)]

    port = free_port()
    env = dict(os.environ, API_MAX_BODY_BYTES=str(64 * 1024 * 1024))
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
         "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    try:
        wait_until_up(port, server)
        latencies: list[float] = []
        inserted = [0]

        def post(body: bytes) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            started = time.perf_counter()
            connection.request("POST", "/api/v1/events", body=body,
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
            inserted[0] += json.loads(payload)["inserted"]
            connection.close()

        post(bodies[0])  # warm-up: imports, connections (its events count as inserted, not timed)
        latencies.clear()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(post, bodies[1:]))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    timed_events = sum(len(json.loads(b)["events"]) for b in bodies[1:])
    latencies.sort()
    print(json.dumps({
        "api_events_per_s": round(timed_events / elapsed),
        "events": timed_events,
        "batch_size": args.batch_size,
        "clients": args.clients,
        "server_workers": args.workers,
        "p50_batch_ms": round(latencies[len(latencies) // 2] * 1000),
        "p99_batch_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000),
        "inserted_total": inserted[0],
    }))


if __name__ == "__main__":
    main()
