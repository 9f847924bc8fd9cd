"""Chaos: the soak (bench/soak.py: the same shop, mixed load, operator and lag probe, real gunicorn
and a real Celery worker running beat) with three faults injected at 1/4, 2/4 and 3/4 of the run:

1. worker_kill: the whole Celery worker (main process, pool, beat) killed with SIGKILL, started
   again after WORKER_DOWN_S as a supervisor (systemd) would;
2. postgres_restart: the embedded PostgreSQL restarted (config.embedded_db.embedded_server_restart,
   down POSTGRES_DOWN_S); skipped, and said so in the JSON, when DATABASE_URL names another server;
3. redis_restart: the run's own redis-server (never the machine's shared one: a private server on a
   free loopback port, no persistence, carrying the broker, the result backend and the cache of
   gunicorn, the worker and this process) stopped for REDIS_DOWN_S and started again, empty.

The clients ride the faults out as API clients should (soak.Load with ride_out_faults): an event
batch that gets 503 or a connection error is sent again, same batch and event ids, after
Retry-After, until stored; a read that gets 503 is counted, not an error; a 500 or any other
unexpected status is an error. Tasks are redelivered after TASK_VISIBILITY_TIMEOUT_S (set short
here, as the fault tests do, so a killed worker's tasks come back within the run). A worker that
exits by itself (kombu can crash it when Redis goes away) is restarted as a supervisor would and
listed in `worker_crashes`.

After the load, up to DRAIN_S for the system to settle: the refresh outbox empty, the broker's
queues empty, no import job, training run, profile build or privacy request left unfinished.
What is still unfinished then is `stuck_jobs`. `events_lost` = events_sent - events_stored;
`profiles_behind`: API customers whose profile does not include every event stored for them
(a refresh lost on the way). `recovery_s` per fault: seconds from the fault's start to the end of
the first 10-s window, wholly after the fault was undone (the process started again, the server
up), whose p95 of successful client requests is within 1.5x `steady_p95_ms` (the p95 of
successful requests before the first fault).
One JSON line last: the soak's keys plus faults_injected, events_lost, stuck_jobs, profiles_behind,
recovery_s, steady_p95_ms, retried_503, unavailable_reads, worker_crashes, dead_letters, segments_failed,
targets.
"""

import json
import math
import os
import signal
import subprocess
import tempfile
import threading
import time

os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_chaos")

from ingest_api import free_port  # noqa: E402

# One private redis-server for the run; every process finds it through the environment.
REDIS_PORT = free_port()
os.environ["SOAK_BROKER_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["CACHE_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/1"
os.environ.setdefault("TASK_VISIBILITY_TIMEOUT_S", "60")

from api_load import server_start  # noqa: E402
from build_profiles import log, worker_start, worker_stop  # noqa: E402
from soak import Load, parser_build, percentile, shop_ready, shop_seed  # noqa: E402

WORKER_DOWN_S = 5.0
POSTGRES_DOWN_S = 5.0
REDIS_DOWN_S = 20.0
DRAIN_S = 180.0
WINDOW_S = 10.0
RECOVERY_FACTOR = 1.5
RECOVERY_TARGET_S = 60.0
QUEUES = "default,ingest,profiles,segments"


class RedisServer:
    """The run's own redis-server on REDIS_PORT: no RDB, no AOF, so a restart starts it empty."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                                        stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(200):
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Faults:
    """Injects the three faults at their times on a thread of its own; records when each began and
    when it was undone (seconds since the load started)."""

    def __init__(self, load: Load, redis_server: RedisServer, beat_schedule: str):
        self.load, self.redis_server, self.beat_schedule = load, redis_server, beat_schedule
        self.injected: list[dict] = []
        self.skipped: list[dict] = []
        self.crashes: list[dict] = []  # worker exits nobody injected, each restarted by `supervise`
        self.worker_lock = threading.Lock()  # one of worker_kill and supervise replaces the worker at a time
        self.done = threading.Event()

    def plan(self) -> list[tuple[float, str]]:
        length = self.load.args.minutes * 60
        return [(length * 1 / 4, "worker_kill"), (length * 2 / 4, "postgres_restart"), (length * 3 / 4, "redis_restart")]

    def since_start(self) -> float:
        return round(time.monotonic() - self.load.started, 1)

    def run(self) -> None:
        for at, kind in self.plan():
            time.sleep(max(0.0, self.load.started + at - time.monotonic()))
            began = self.since_start()
            log(f"  fault at {began:.0f} s: {kind}")
            try:
                detail = getattr(self, kind)()
            except Exception as exc:  # a fault that could not be injected is reported, not hidden
                self.load.failed(f"fault {kind}", repr(exc))
                continue
            if detail.get("skipped"):
                self.skipped.append({"kind": kind, **detail})
                continue
            self.injected.append({"kind": kind, "at_s": began, "restored_s": self.since_start(), **detail})
            log(f"  {kind} undone at {self.injected[-1]['restored_s']:.0f} s")

    def worker_kill(self) -> dict:
        with self.worker_lock:
            worker = self.load.processes["worker"]
            os.killpg(worker.pid, signal.SIGKILL)  # own session: main process, pool processes and beat
            worker.wait()
            return self.worker_restart()

    def worker_restart(self) -> dict:
        """What a supervisor (systemd, Restart=always) does: start the worker again after a pause."""
        time.sleep(WORKER_DOWN_S)
        restarted_at = self.since_start()
        self.load.processes["worker"] = worker_start(QUEUES, concurrency=2, beat_schedule=self.beat_schedule)
        return {"down_s": WORKER_DOWN_S, "restarted_at_s": restarted_at, "worker_ready_s": self.since_start()}

    def supervise(self) -> None:
        """Until `done`: a worker that exits by itself (a crash the faults caused) is restarted as
        a supervisor would, and recorded in `crashes`."""
        while not self.done.wait(1.0):
            with self.worker_lock:
                worker = self.load.processes["worker"]
                if worker.poll() is None:
                    continue
                crashed_at = self.since_start()
                log(f"  the worker exited by itself at {crashed_at:.0f} s (rc {worker.returncode}); restarting it")
                try:
                    os.killpg(worker.pid, signal.SIGKILL)  # pool processes it may have left
                except ProcessLookupError:
                    pass
                try:
                    self.crashes.append({"at_s": crashed_at, "rc": worker.returncode, **self.worker_restart()})
                except RuntimeError as exc:  # did not come up (worker_start stopped it): the next round tries again
                    log(f"  the restarted worker did not come up: {exc}")

    def postgres_restart(self) -> dict:
        from django.conf import settings

        from config.embedded_db import embedded_server_restart

        if not hasattr(settings, "EMBEDDED_DATABASE_DIR"):
            log("  DATABASE_URL names a server this bench does not own: the PostgreSQL restart is skipped")
            return {"skipped": "DATABASE_URL is set: not the embedded server, not restarted by the bench"}
        embedded_server_restart(settings.EMBEDDED_DATABASE_DIR, down_s=POSTGRES_DOWN_S)
        return {"down_s": POSTGRES_DOWN_S}

    def redis_restart(self) -> dict:
        self.redis_server.stop()
        time.sleep(REDIS_DOWN_S)
        self.redis_server.start()
        return {"down_s": REDIS_DOWN_S}


def recovery(samples: list[tuple[float, float, bool]], steady_s: float, fault: dict, end_s: float) -> float | None:
    """Seconds from the fault's start to the end of the first WINDOW_S window wholly after it was
    undone whose p95 of successful requests is within RECOVERY_FACTOR x steady; None if never."""
    ok = sorted((t, x) for t, x, succeeded in samples if succeeded)
    window_end = math.ceil(fault["restored_s"] + WINDOW_S)
    while window_end <= end_s:
        window = [x for t, x in ok if window_end - WINDOW_S < t <= window_end]
        if len(window) >= 5 and percentile(window, 0.95) <= RECOVERY_FACTOR * steady_s * 1000:
            return round(window_end - fault["at_s"], 1)
        window_end += 1
    return None


def broker_backlog() -> int:
    """Tasks waiting or unacknowledged on the run's broker."""
    import redis

    from config.queues import Queue

    client = redis.Redis.from_url(os.environ["SOAK_BROKER_URL"])
    return sum(client.llen(q.value) for q in Queue) + client.hlen("unacked")


def unfinished() -> dict[str, int]:
    """Work the store says is not done: the soak starts none of the jobs, so any is the run's."""
    from ingestion.models import ImportJob, ImportStatus, RefreshOutbox
    from privacy.models import PrivacyRequest, RequestState
    from profiles.models import BuildStatus, ProfileBuild
    from training.models import RunStatus, TrainingRun

    return {
        "import_jobs": ImportJob.objects.filter(status__in=[ImportStatus.PENDING, ImportStatus.RUNNING]).count(),
        "training_runs": TrainingRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).count(),
        "profile_builds": ProfileBuild.objects.filter(status=BuildStatus.RUNNING).count(),
        "privacy_requests": PrivacyRequest.objects.exclude(
            state__in=[RequestState.COMPLETED, RequestState.CLOSED]).count(),
        "outbox_rows": RefreshOutbox.objects.count(),
        "broker_tasks": broker_backlog(),
    }


def drain() -> tuple[dict[str, int], float]:
    """Wait up to DRAIN_S for nothing to be left unfinished; returns what is left and the wait."""
    from django.db import connections

    started = time.monotonic()
    while True:
        connections.close_all()  # this process's connection died with the PostgreSQL restart
        left = unfinished()
        if not any(left.values()) or time.monotonic() - started > DRAIN_S:
            return left, round(time.monotonic() - started, 1)
        time.sleep(2)


def profiles_behind(live_keys: list[str]) -> int:
    """API customers whose profile does not count every event stored for them."""
    from django.db.models import Count, F

    from ingestion.models import Customer

    return (Customer.objects.filter(key__in=live_keys, profile__isnull=False)
            .annotate(stored=Count("events")).filter(stored__gt=F("profile__events_included")).count())


def task_failures(since, segments: list[int]) -> dict[str, int]:
    """Work that failed rather than waited: tasks dead-lettered since `since` (pipeline.DeadLetter)
    and the run's segments whose last refresh failed."""
    from pipeline.models import DeadLetter
    from segments.models import Segment, SegmentStatus

    return {"dead_letters": DeadLetter.objects.filter(created_at__gte=since).count(),
            "segments_failed": Segment.objects.filter(pk__in=segments, status=SegmentStatus.FAILED).count()}


def main() -> None:
    parser = parser_build(__doc__)
    parser.set_defaults(minutes=10.0)
    args = parser.parse_args()
    redis_server = RedisServer(REDIS_PORT)
    redis_server.start()
    server = faults = None
    processes: dict = {}
    beat_schedule = os.path.join(tempfile.mkdtemp(prefix="chaos-beat-"), "schedule")
    try:
        shop_ready(args)
        from django.db import connections
        from django.utils import timezone

        port = free_port()
        server = server_start(port, args.workers)
        processes = {"web": server, "worker": worker_start(QUEUES, concurrency=2, beat_schedule=beat_schedule)}
        shop = shop_seed(args, port)
        log(f"chaos: {args.minutes} min, {args.clients} clients + operator + lag probe, {len(shop.readable):,} "
            f"readable profiles; redis-server of its own on port {REDIS_PORT}")
        load = Load(args, shop, port, processes, ride_out_faults=True, lag_timeout_s=120.0)
        load_began = timezone.now()
        faults = Faults(load, redis_server, beat_schedule)
        supervisor = threading.Thread(target=faults.supervise)
        supervisor.start()
        load.run(faults.run)
        connections.close_all()
        left, drained_s = drain()
        result = load.result()
        behind = profiles_behind(list(shop.live_keys.values()))
        failures = task_failures(load_began, shop.segments)
    finally:
        if faults is not None:
            faults.done.set()
            supervisor.join()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if processes.get("worker") is not None:
            worker_stop(processes["worker"])
        redis_server.stop()

    end_s = args.minutes * 60
    first_fault = faults.injected[0]["at_s"] if faults.injected else end_s
    steady = [x for t, x, succeeded in load.samples if succeeded and t < first_fault]
    steady_p95 = percentile(steady, 0.95)
    recovered = {f["kind"]: recovery(load.samples, steady_p95 / 1000, f, end_s) for f in faults.injected} if steady_p95 else {}
    result.update(
        faults_injected=faults.injected,
        faults_skipped=faults.skipped,
        worker_crashes=faults.crashes,
        events_lost=result["events_sent"] - result["events_stored"],
        stuck_jobs=left,
        drain_s=drained_s,
        profiles_behind=behind,
        **failures,
        steady_p95_ms=steady_p95,
        recovery_s=recovered,
        retried_503=load.counts["retried_503"],
        retried_connection_errors=load.counts["retried_connection"],
        unavailable_reads=load.counts["unavailable_reads"],
        task_visibility_timeout_s=int(os.environ["TASK_VISIBILITY_TIMEOUT_S"]),
    )
    result["targets"] = {
        "events_lost == 0": result["events_lost"] == 0,
        "no stuck job": not any(left.values()),
        f"every recovery_s <= {RECOVERY_TARGET_S:.0f}": bool(recovered) and all(
            r is not None and r <= RECOVERY_TARGET_S for r in recovered.values()),
        "errors == 0": result["errors"] == 0,
    }
    for target, met in result["targets"].items():
        log(f"target {target}: {'met' if met else 'NOT met'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
