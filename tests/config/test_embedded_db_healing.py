"""The embedded database survives a `kill -9` of its postmaster without a hand fix.

Each test runs a throw-away embedded server of its own (EMBEDDED_DATABASE_DIR under tmp), so killing
it leaves the suite's database alone: the next manage.py command restarts it with its data, a web
server answers 503 + Retry-After while it is away and 200 once it is back, and a Celery task that
lost it is retried and succeeds.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
from django.conf import settings

from config.celery import app as celery_app
from config.embedded_db import postmaster_pid
from tests.conftest import TEST_BROKER_URL, celery_worker_running, manage_py, private_embedded_server

ROOT = Path(settings.BASE_DIR)
DATABASE = "portrait_heal"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A migrated embedded server in its own data directory, with a row to find after each kill."""
    with private_embedded_server(tmp_path_factory.mktemp("healing") / "pgdata", database=DATABASE) as server:
        with psycopg.connect(server["url"], autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS heal_marker (note text)")
            conn.execute("INSERT INTO heal_marker VALUES ('written before the kill')")
        yield server


def kill_postmaster(pgdata: Path) -> int:
    pid = postmaster_pid(pgdata)
    assert pid is not None, "the embedded server should be running before the kill"
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=10) if psutil.pid_exists(pid) else None
    assert postmaster_pid(pgdata) is None
    return pid


def marker_rows(url: str) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT note FROM heal_marker")]


SHELL_READ = "from django.db import connection; c = connection.cursor(); c.execute('SELECT note FROM heal_marker'); print(c.fetchall())"


def test_a_killed_server_with_a_busy_orphan_backend_is_restarted_by_the_next_manage_py_command(server):
    busy = threading.Thread(target=_long_cpu_query, args=(server["url"],), daemon=True)
    busy.start()
    time.sleep(1.0)
    killed = kill_postmaster(server["pgdata"])
    # The backend computing its query outlives the postmaster and holds its shared memory: without
    # clearing it PostgreSQL refuses to start ("pre-existing shared memory block is still in use").
    orphans = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres" and _cwd(p) == str(server["pgdata"])]
    assert orphans, "expected the busy backend to outlive its postmaster"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server["url"], connect_timeout=3).close()

    out = manage_py(server["env"], "shell", "-c", SHELL_READ)

    assert "written before the kill" in out
    assert postmaster_pid(server["pgdata"]) not in (None, killed)
    assert marker_rows(server["url"]) == ["written before the kill"]


def test_a_pid_file_naming_another_live_process_does_not_keep_the_server_down(server):
    kill_postmaster(server["pgdata"])
    pid_file = server["pgdata"] / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    lines[0] = str(os.getpid())  # the dead postmaster's pid reused by an unrelated process
    pid_file.write_text("\n".join(lines) + "\n")

    out = manage_py(server["env"], "shell", "-c", SHELL_READ)

    assert "written before the kill" in out


@pytest.fixture
def web(server):
    port = _free_port()
    env = dict(server["env"], DEBUG="false", ALLOWED_HOSTS="127.0.0.1", DB_CONN_MAX_AGE="60",
               CELERY_BROKER_URL=TEST_BROKER_URL, CACHE_URL="redis://127.0.0.1:6379/14")
    token = manage_py(env, "shell", "-c", "from access.services import api_token_create as c; "
                   "print(c(name='healing test', scopes=['profiles:read'])[1])").strip().splitlines()[-1]
    log = ROOT / "var" / "test-healing-web.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--access-logfile", "-"],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while _get(f"{base}/healthz")[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield {"base": base, "token": token, "log": log}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_web_server_answers_503_with_retry_after_while_the_database_is_away_then_recovers(server, web):
    api = f"{web['base']}/api/v1/profiles/nobody-by-this-id?by=external_id"
    auth = {"Authorization": f"Bearer {web['token']}"}
    assert _get(api, auth)[0] == 404  # the database answered: no such profile
    assert _get(f"{web['base']}/healthz")[0] == 200

    kill_postmaster(server["pgdata"])
    status, headers, body = _get(api, auth)

    assert status == 503, body
    assert int(headers["Retry-After"]) > 0
    assert b"database_unavailable" in body
    # No hand fix: the web process restarted the server itself; every answer until then is a 503.
    seen = []
    deadline = time.monotonic() + 90
    while True:
        status = _get(api, auth)[0]
        seen.append(status)
        if status == 404 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen[-1] == 404, f"statuses after the kill: {seen}\n{web['log'].read_text()[-3000:]}"
    assert set(seen) <= {503, 404}, seen
    assert _get(f"{web['base']}/healthz")[0] == 200
    assert marker_rows(server["url"]) == ["written before the kill"]


@pytest.mark.worker
def test_a_celery_task_that_lost_the_database_is_retried_and_succeeds_once_the_worker_restarted_it(server):
    env = dict(server["env"], CELERY_BROKER_URL=TEST_BROKER_URL, CELERY_RESULT_BACKEND=TEST_BROKER_URL,
               CACHE_URL="redis://127.0.0.1:6379/14")
    celery_app.control.purge()
    log = ROOT / "var" / "test-healing-worker.log"
    with celery_worker_running(env, queues="default", log=log):
        assert celery_app.send_task("privacy.tasks.privacy_requests_retry_task", queue="default").get(timeout=60) == 0

        kill_postmaster(server["pgdata"])
        result = celery_app.send_task("privacy.tasks.privacy_requests_retry_task", queue="default")

        assert result.get(timeout=120) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "Retry in" in text  # the first attempt hit the dead server and was retried
        assert "restarting it" in text  # by the worker's own heal, not by this test
        assert marker_rows(server["url"]) == ["written before the kill"]


def _long_cpu_query(url: str) -> None:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '60s'")
            conn.execute("SELECT sum(x) FROM (SELECT generate_series(1, 2000000000) AS x) AS s")
    except psycopg.Error:
        pass  # killed with its postmaster


def _cwd(process) -> str | None:
    try:
        return process.cwd()
    except psutil.Error:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, headers: dict | None = None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
    except (urllib.error.URLError, ConnectionError) as error:
        return None, {}, str(error).encode()
