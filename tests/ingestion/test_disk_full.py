"""Disk full while importing: the events table lives on a small file system of its own (a tmpfs
tablespace: where a real disk-full hits an import is the database server extending the events
table, not the read-only upload), so the import runs out of space mid-file. The job fails saying
so and how far it got, whole chunks only are stored, and once space returns a re-run of the same
file completes with the counts of a clean import."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ingestion.import_jobs import ImportOutOfSpace, import_job_create, import_job_run
from ingestion.models import Customer, Event, ImportStatus, QuarantinedRow

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 30_000
CHUNK_ROWS = 2_000
CUSTOMERS = 500


def _server_uid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        pytest.skip("the database server is not on this machine: a tablespace on a local tmpfs cannot hold its table")
    return proc.stat().st_uid


def _mount(directory: Path, size: str, *, uid: int | None = None, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size},mode=0700,uid={uid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], check=True,
                   capture_output=True, text=True, timeout=30)


def _event_partitions(cursor) -> list[str]:
    cursor.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'ingestion_event'::regclass")
    partitions = [row[0] for row in cursor.fetchall()]
    assert partitions
    return partitions


@pytest.fixture
def small_events_disk(transactional_db):
    """The events table moved onto a 1 MiB tmpfs tablespace; returns a function that grows the
    file system to 64 MiB (space returns). Moved back, dropped and unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    uid = _server_uid()
    directory = Path(tempfile.mkdtemp(prefix="portrait-small-disk-"))
    try:
        _mount(directory, "1m", uid=uid)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        directory.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {getattr(exc, 'stderr', exc)}")
    moved = False
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLESPACE portrait_small_disk LOCATION '{directory}'")
            # the table is hash-partitioned by customer: its partitions hold the rows
            for partition in _event_partitions(cursor):
                cursor.execute(f"ALTER TABLE {partition} SET TABLESPACE portrait_small_disk")
            moved = True
        yield lambda: _mount(directory, "64m", remount=True)
    finally:
        with connection.cursor() as cursor:
            if moved:
                for partition in _event_partitions(cursor):
                    cursor.execute(f"ALTER TABLE {partition} SET TABLESPACE pg_default")
            cursor.execute("DROP TABLESPACE IF EXISTS portrait_small_disk")
        subprocess.run(["umount", str(directory)], check=True, timeout=30)
        directory.rmdir()


@pytest.fixture
def events_file(tmp_path) -> Path:
    """ROWS valid, distinct purchases of CUSTOMERS customers: every row is stored by a clean import."""
    path = tmp_path / "events.jsonl"
    with open(path, "w") as handle:
        for n in range(ROWS):
            minute = n * 7
            handle.write(json.dumps({
                "event_id": f"e{n}", "customer_id": f"c{n % CUSTOMERS}", "item_id": f"sku-{n % 50}",
                "event_type": "purchase", "quantity": 1, "value": f"{5 + n % 40}.00", "currency": "EUR",
                "timestamp": f"2025-{1 + minute // 40_000 % 12:02d}-{1 + minute // 1440 % 27:02d}T"
                             f"{minute // 60 % 24:02d}:{minute % 60:02d}:00Z",
            }) + "\n")
    return path


def _import(path: Path, source: str):
    return import_job_create(path=path, fmt="jsonl", source=source, options={"chunk_rows": CHUNK_ROWS})


def test_import_out_of_disk_fails_clearly_keeps_whole_chunks_and_completes_when_space_returns(
    small_events_disk, events_file,
):
    job = _import(events_file, "shop")

    with pytest.raises(ImportOutOfSpace):
        import_job_run(job_id=job.pk)

    job.refresh_from_db()
    stored = Event.objects.filter(import_job=job).count()
    assert job.status == ImportStatus.FAILED, (job.status, job.error)
    assert job.finished_at is not None
    assert job.error.startswith("Out of disk space:"), job.error
    assert "No space left on device" in job.error
    assert f"{job.rows_read} rows read, {stored} events stored" in job.error
    # ran out mid-file, and kept whole chunks only: what is stored is exactly what the counters committed
    assert 0 < job.rows_read < ROWS
    assert job.rows_read % CHUNK_ROWS == 0
    assert stored == job.rows_inserted == job.rows_read
    assert not QuarantinedRow.objects.filter(job=job).exists()
    print(f"failed after {job.rows_read} of {ROWS} rows: {job.error}")

    # the command says the same, as a one-line error rather than a traceback
    with pytest.raises(CommandError, match=r"^Out of disk space: .* 0 rows read, 0 events stored"):
        call_command("import_events", str(events_file), "--format", "jsonl", "--source", "shop")

    small_events_disk()  # space returns
    rerun = import_job_run(job_id=_import(events_file, "shop").pk)

    assert rerun.status == ImportStatus.SUCCEEDED, rerun.error
    assert rerun.rows_read == ROWS
    assert rerun.rows_inserted == ROWS - stored
    assert rerun.rows_duplicate == stored

    clean = import_job_run(job_id=_import(events_file, "clean").pk)

    assert clean.status == ImportStatus.SUCCEEDED, clean.error
    assert clean.rows_inserted == ROWS
    assert Event.objects.filter(customer__source="shop").count() == Event.objects.filter(customer__source="clean").count()
    assert Customer.objects.filter(source="shop").count() == Customer.objects.filter(source="clean").count() == CUSTOMERS
