"""Start (or reuse) the embedded PostgreSQL + pgvector server used when DATABASE_URL is unset.

One server per checkout, data under var/pgdata, reached over a Unix socket. Web, workers and tests
all call `embedded_database_url()` and share it; it keeps running after they exit so the next
process attaches in milliseconds (`make db-stop` stops it).
"""

import logging
import os
from pathlib import Path

_TUNING = {
    # The defaults of initdb are sized for a laptop from 2005; bulk ingestion needs room for WAL.
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "work_mem": "32MB",
    "maintenance_work_mem": "512MB",
    "max_connections": "200",
    "wal_buffers": "64MB",
}


def _tune(pgdata: Path) -> bool:
    """Append the tuning to postgresql.auto.conf when it changed (later lines win); True if the
    server must restart to apply it."""
    marker = pgdata / "portrait_tuning"
    wanted = repr(sorted(_TUNING.items()))
    if marker.exists() and marker.read_text() == wanted:
        return False
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        for key, value in _TUNING.items():
            conf.write(f"{key} = '{value}'\n")
    marker.write_text(wanted)
    return True


def embedded_database_url(var_dir: Path, database: str = "portrait") -> str:
    import warnings

    # pgserver locates its lock under XDG_RUNTIME_DIR and warns when it falls back to /tmp.
    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver
    from pgserver._commands import pg_ctl

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = var_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    if _tune(pgdata):
        pg_ctl(["-w", "restart"], pgdata=pgdata, user=server.system_user, timeout=60)
        server.ensure_postgres_running()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    os.environ.setdefault("PORTRAIT_EMBEDDED_PGDATA", str(pgdata))
    return server.get_uri(database)
