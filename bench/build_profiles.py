"""Batch profile build throughput: loads a synthetic shop, then builds every profile.

Inline (default): `profiles_build` in this process, chunk after chunk. With --celery: the same
build fanned out by `profiles.tasks.profile_build_queue` to a real worker (prefork, 2 processes) that this
script starts on a Redis database of its own. Either way the figure covers the feature-set fit
and every chunk, not the shop load (reported apart as load_s). Prints one JSON line last.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from _setup import ROOT, django_ready

# The bench's own broker database: the dispatching side and the worker must agree on it, and
# neither may take work from (or leave work for) the demo's workers.
BENCH_BROKER = "redis://127.0.0.1:6379/13"
os.environ["CELERY_BROKER_URL"] = BENCH_BROKER
os.environ["CELERY_RESULT_BACKEND"] = BENCH_BROKER


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def broker_empty() -> None:
    """Drop queued tasks and pending-refresh marks a previous (interrupted) run left behind."""
    import redis

    redis.Redis.from_url(BENCH_BROKER).flushdb()


def worker_start(queues: str, concurrency: int = 2, *, beat_schedule: str | None = None) -> subprocess.Popen:
    """A Celery worker on the bench database; returns once it answers a ping. Own process group,
    so `worker_stop` can end its pool processes too. With `beat_schedule` (a file) it runs beat
    too (-B), as a deployment's periodic tasks need (the refresh outbox's drain, the import watchdog)."""
    from config.celery import BROKER_ERRORS, app

    beat = ["-B", "-s", beat_schedule] if beat_schedule else []
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", str(concurrency),
         "--pool", "prefork", "-n", f"bench-{os.getpid()}@%h", "-l", "warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat", *beat],
        cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=sys.stderr,  # stdout is the JSON's
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited during start-up (rc {worker.returncode})")
        try:
            if app.control.ping(timeout=1.0):  # only this worker listens on the bench database
                return worker
        except BROKER_ERRORS:  # the broker is (re)starting too (bench/chaos.py): the worker waits for it
            time.sleep(1.0)
    worker_stop(worker)
    raise RuntimeError("celery worker did not answer a ping within 90 s")


def worker_stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()  # warm shutdown: finishes the tasks in hand
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    try:  # pool processes orphaned by a crash of the main process
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def build_inline(chunk: int):
    from profiles.builds import profiles_build

    def progress(build) -> None:
        log(f"  chunk {build.chunks_done}/{build.chunks_total}: {build.profiles_written:,} profiles")

    return profiles_build(chunk_customers=chunk, on_chunk=progress)


def build_celery(chunk: int, timeout: float):
    from profiles.models import BuildStatus
    from profiles.tasks import profile_build_queue

    build = profile_build_queue(chunk_customers=chunk)
    log(f"  fitted; {build.chunks_total} chunks dispatched")
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        build.refresh_from_db()
        if build.status != BuildStatus.RUNNING:
            return build
        if build.chunks_done != seen:
            seen = build.chunks_done
            log(f"  chunk {build.chunks_done}/{build.chunks_total}: {build.profiles_written:,} profiles")
        if time.monotonic() > deadline:
            raise RuntimeError(f"build #{build.pk} still running after {timeout:.0f} s")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=None, help="customers per chunk (default: the setting)")
    parser.add_argument("--celery", action="store_true", help="build across a Celery worker (-c 2)")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for a Celery build")
    args = parser.parse_args()
    django_ready()
    from django.conf import settings

    from ingestion.import_jobs import synthetic_shop_load

    chunk = args.chunk or settings.PROFILE_BUILD_CHUNK_CUSTOMERS
    log(f"loading {args.customers:,} customers / {args.events:,} events")
    started = time.perf_counter()
    job = synthetic_shop_load(customers=args.customers, events=args.events, seed=args.seed)
    load_s = time.perf_counter() - started
    log(f"  loaded in {load_s:.1f} s (import job {job.status})")

    worker = None
    try:
        if args.celery:
            broker_empty()
            worker = worker_start("profiles")
        log(f"building ({'celery' if args.celery else 'inline'}, {chunk:,} customers per chunk)")
        started = time.perf_counter()
        build = build_celery(chunk, args.timeout) if args.celery else build_inline(chunk)
        seconds = time.perf_counter() - started
    finally:
        if worker is not None:
            worker_stop(worker)
    if build.status != "succeeded":
        raise SystemExit(f"build #{build.pk} {build.status}: {build.error}")
    build.refresh_from_db()
    # The fit ends when its feature set is saved; both stamps come from this process's clock.
    fit_s = (build.feature_set.created_at - build.started_at).total_seconds()
    print(json.dumps({
        "customers": args.customers,
        "events": args.events,
        "profiles_per_s": round(build.profiles_written / seconds),
        "seconds": round(seconds, 2),
        "mode": "celery" if args.celery else "inline",
        "load_s": round(load_s, 2),
        "fit_s": round(fit_s, 2),
        "profiles": build.profiles_written,
        "chunks": build.chunks_total,
    }))


if __name__ == "__main__":
    main()
