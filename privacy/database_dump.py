"""pg_dump / pg_restore of the configured database (the embedded server or any DATABASE_URL), with
PostgreSQL 18's client programs from the embedded server's wheel."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from django.db import connections


class DumpError(RuntimeError):
    """pg_dump or pg_restore failed; the message carries its last lines of output."""


def _connection_arguments() -> tuple[list[str], dict]:
    database = connections["default"].settings_dict
    arguments = ["-d", database["NAME"]]
    if database.get("HOST"):
        arguments += ["-h", database["HOST"]]
    if database.get("PORT"):
        arguments += ["-p", str(database["PORT"])]
    if database.get("USER"):
        arguments += ["-U", database["USER"]]
    environment = dict(os.environ, PGCONNECT_TIMEOUT="10")
    if database.get("PASSWORD"):
        environment["PGPASSWORD"] = database["PASSWORD"]
    return arguments, environment


def _run(program: str, arguments: list[str], environment: dict) -> None:
    from config.embedded_db import postgres_program

    done = subprocess.run([str(postgres_program(program)), *arguments], env=environment, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise DumpError(f"{program} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def database_dump(*, path: Path) -> int:
    """The whole database into `path` (pg_dump's custom format, compressed). Returns its size."""
    arguments, environment = _connection_arguments()
    path.parent.mkdir(parents=True, exist_ok=True)
    _run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--file={path}", *arguments], environment)
    return path.stat().st_size


def database_restore(*, path: Path) -> None:
    """Replace the database's contents with the dump's, in one transaction (a failure leaves the
    database as it was). Stop web servers and workers first: their open transactions block it.

    The public schema is dropped and the dump replayed into a fresh one, instead of pg_restore's
    --clean: its drops fail on a hash-partitioned table (the event table), whose partitions' keys and
    indexes it drops after their parent's have taken them."""
    from config.embedded_db import postgres_program

    if not path.is_file():
        raise DumpError(f"no such backup file: {path}")
    arguments, environment = _connection_arguments()
    connections.close_all()
    # pg_restore's messages go to a file: a pipe nobody reads until the end could fill and stall it
    with tempfile.TemporaryFile(mode="w+") as script_errors:
        script = subprocess.Popen(
            [str(postgres_program("pg_restore")), "--no-owner", "--no-privileges", "--file=-", str(path)],
            stdout=subprocess.PIPE, stderr=script_errors, env=environment,
        )
        replay = subprocess.Popen(
            [str(postgres_program("psql")), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
             "--command=DROP SCHEMA public CASCADE", "--command=CREATE SCHEMA public", "--file=-", *arguments],
            stdin=script.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        script.stdout.close()  # psql alone reads it now: pg_restore sees a closed pipe if psql stops
        output, errors = replay.communicate()
        if script.wait() != 0:
            script_errors.seek(0)
            raise DumpError(f"pg_restore failed ({script.returncode}): {script_errors.read()[-2000:]}")
    if replay.returncode != 0:
        raise DumpError(f"psql failed ({replay.returncode}): {(errors or output)[-2000:]}")
