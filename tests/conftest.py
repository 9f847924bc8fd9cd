"""Shared fixtures: API clients with scoped tokens, staff users by role, a small synthetic shop, the
real data sets, a real Celery worker."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from access.services import api_token_create
from config.celery import app as celery_app

DATASETS = Path(os.environ.get("PORTRAIT_DATASETS", Path(settings.BASE_DIR).parent / "shared" / "datasets"))

# Erasures in tests journal to a file of this run, never into var/ beside a developer's real journal
# (the environment variable reaches the worker and command processes tests start).
os.environ["ERASURE_JOURNAL_PATH"] = str(Path(tempfile.mkdtemp(prefix="portrait-tests-")) / "erasure-journal.jsonl")
settings.ERASURE_JOURNAL_PATH = Path(os.environ["ERASURE_JOURNAL_PATH"])
# and the in-memory similarity snapshots (profiles.memory_search) to a directory of this run
os.environ["SIMILARITY_INDEX_DIR"] = str(Path(os.environ["ERASURE_JOURNAL_PATH"]).parent / "similarity-index")
settings.SIMILARITY_INDEX_DIR = os.environ["SIMILARITY_INDEX_DIR"]

# The live server answers each request on a short-lived thread; a persistent connection would
# outlive its thread and keep the test database busy at teardown.
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def memory_graphs_forgotten():
    """Each test starts with no in-memory similarity graph loaded (profiles.memory_search): one test's
    graph is of its own database's rows."""
    from profiles.memory_search import memory_indexes_forget

    memory_indexes_forget()
    yield
    memory_indexes_forget()


@pytest.fixture(autouse=True)
def cache_empty():
    """Each test starts with an empty cache (throttle counters, popular items of another test's shop)
    and no coordination marks in the broker's Redis (ids repeat across tests' databases)."""
    from django.core.cache import cache

    from access.throttling import leases
    from config.broker_redis import broker_redis

    cache.clear()
    leases.forget()
    client = broker_redis()
    for pattern in ("portrait:segment-refresh-queued:*", "portrait:profile-refresh-pending:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def token_listener_closed():
    """Each test starts with no cached API token, and no listening connection of the token cache
    outlives it (PostgreSQL refuses to drop the test database while one is open)."""
    from access.token_cache import token_cache

    token_cache.close()
    yield
    token_cache.close()


@pytest.fixture
def datasets() -> Path:
    assert DATASETS.is_dir(), f"the shared data sets are expected at {DATASETS} (see README, 'Data')"
    return DATASETS


@pytest.fixture
def make_api_client(db):
    def make(*scopes: str) -> APIClient:
        _, raw = api_token_create(name="test client", scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make


@pytest.fixture
def events_client(make_api_client) -> APIClient:
    return make_api_client("events:write")


STAFF_PASSWORD = "pw-for-tests-only"


@pytest.fixture
def make_staff(django_user_model):
    """make_staff(name, group=None): a superuser when no group is named, else a staff member of that
    group (Compliance, Operators), read back so its permission cache starts empty."""

    def make(name: str, group: str | None = None):
        if group is None:
            return django_user_model.objects.create_superuser(name, f"{name}@example.com", STAFF_PASSWORD)
        user = django_user_model.objects.create_user(name, password=STAFF_PASSWORD, is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        return django_user_model.objects.get(pk=user.pk)

    return make


@pytest.fixture
def compliance_user(make_staff):
    return make_staff("cora", "Compliance")


@pytest.fixture
def operator_user(make_staff):
    return make_staff("otto", "Operators")


@dataclass(frozen=True)
class Shop:
    job: Any  # the ImportJob of the synthetic load
    build: Any  # the ProfileBuild, None when profiles were not built


def shop_load(*, customers: int, events: int, seed: int, profiles: bool = True, **build_options) -> Shop:
    """The generator's shop loaded through the normal ingestion path, then (unless profiles=False)
    one batch build of profiles; build_options go to profiles_build (chunk_customers=...)."""
    from ingestion.import_jobs import synthetic_shop_load
    from profiles.builds import profiles_build

    job = synthetic_shop_load(customers=customers, events=events, seed=seed)
    return Shop(job=job, build=profiles_build(**build_options) if profiles else None)


@pytest.fixture(scope="session")
def make_shop():
    """make_shop(customers=..., events=..., seed=...): a small synthetic shop with profiles. Call it
    where the database is open: in a test, or under django_db_blocker.unblock() in a module fixture
    (session-scoped, so fixtures of any scope may use it)."""
    return shop_load


# Tests talk to their own Redis database, so a developer's running `make run` worker never takes
# a test's task and a test never takes a demo's. Set before anything opens a broker connection.
TEST_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
celery_app.conf.broker_url = celery_app.conf.result_backend = TEST_BROKER_URL
# Throttle counters and read caches likewise (before the first cache access opens a client).
settings.CACHES["default"]["LOCATION"] = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/14")


def process_env(**overrides: str) -> dict:
    """The environment of a worker or web process a test starts: the test database, the test-only
    Redis databases (broker and cache) and models directory, then `overrides`."""
    database = settings.DATABASES["default"]
    env = dict(os.environ, CELERY_BROKER_URL=TEST_BROKER_URL, CELERY_RESULT_BACKEND=TEST_BROKER_URL,
               CACHE_URL=settings.CACHES["default"]["LOCATION"], MODELS_DIR=str(settings.MODELS_DIR))
    if os.environ.get("DATABASE_URL"):
        base, _, _ = os.environ["DATABASE_URL"].rpartition("/")
        env["DATABASE_URL"] = f"{base}/{database['NAME']}"
    else:
        env["EMBEDDED_DATABASE_NAME"] = database["NAME"]
    return {**env, **overrides}


@pytest.fixture
def celery_worker(transactional_db):
    """A real `celery worker` process on the test database and a test-only Redis database, so a
    developer's running `make run` worker never steals the test's tasks."""
    env = process_env()
    celery_app.control.purge()  # tasks left by an earlier, interrupted run
    with celery_worker_running(env, queues="default,ingest,profiles,segments,training",
                               log=Path(settings.BASE_DIR) / "var" / "test-worker.log") as process:
        yield process


@contextlib.contextmanager
def celery_worker_running(env: dict, *, queues: str, log: Path, pool: str = "solo", include: str | None = None,
                          beat: bool = False):
    """A `celery worker` process (one task at a time; solo pool unless told) with this environment,
    ready when entered, stopped on exit; its output goes to `log`. `include`: more task modules to
    load (tests' own tasks); `beat`: run Celery beat inside it (its schedule file under var/)."""
    log.parent.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", "1",
         "--pool", pool, "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
         *(["--include", include] if include else []),
         *(["--beat", "--schedule", str(log.with_suffix(".beat-schedule"))] if beat else [])],
        cwd=settings.BASE_DIR, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            assert process.poll() is None, f"celery worker exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"celery worker not ready in 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield process
    finally:
        process_stop(process, timeout=20)


def process_stop(process: subprocess.Popen, *, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def web_server_running(env: dict, *, workers: int, log: Path):
    """gunicorn (sync workers, as production runs it) on a free loopback port with this environment;
    yields its base URL once /healthz answers 200, stopped on exit; its output goes to `log`."""
    import urllib.request

    log.parent.mkdir(exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--timeout", "120", "--access-logfile", "-"],
        cwd=settings.BASE_DIR, env=dict(env, ALLOWED_HOSTS="127.0.0.1"), stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"gunicorn exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"gunicorn not up in 60 s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.3)
        yield base
    finally:
        process_stop(process, timeout=30)


def manage_py(env: dict, *args: str, timeout: float = 180) -> str:
    """Run `manage.py args` in a process with this environment; its stdout (fails on a non-zero exit)."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@contextlib.contextmanager
def private_embedded_server(pgdata: Path, *, database: str):
    """A migrated embedded server of its own (EMBEDDED_DATABASE_DIR `pgdata`), for tests that kill or
    restart it without touching the suite's database. Yields {"pgdata", "url", "env"}: `env` points
    processes (manage.py, gunicorn, Celery) at it and at the test-only Redis databases."""
    from config.embedded_db import embedded_database_url, embedded_server_stop

    url = embedded_database_url(pgdata, database=database)
    env = dict(os.environ, EMBEDDED_DATABASE_DIR=str(pgdata), EMBEDDED_DATABASE_NAME=database,
               CELERY_BROKER_URL=TEST_BROKER_URL, CELERY_RESULT_BACKEND=TEST_BROKER_URL,
               CACHE_URL=settings.CACHES["default"]["LOCATION"])
    env.pop("DATABASE_URL", None)
    env.pop("PORTRAIT_EMBEDDED_PGDATA", None)
    manage_py(env, "migrate", "--noinput", "-v", "0")
    try:
        yield {"pgdata": pgdata, "url": url, "env": env}
    finally:
        embedded_server_stop(pgdata)


def wait_until(predicate, timeout: float, what: str, log: Path | None = None, *, poll_s: float = 0.05):
    """Poll `predicate` until it returns something true and return that; fail after `timeout`
    seconds saying `what` was not reached, with the tail of `log` (a worker's output) if given."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s\n{log.read_text()[-3000:] if log else ''}"
        time.sleep(poll_s)
    return value
