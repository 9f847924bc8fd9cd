"""Bulk import throughput against the floor of this machine.

Generates N synthetic events to a CSV file, then in one run measures
  1. raw COPY of that file into a bare table (same columns, no keys, no indexes): the floor,
  2. the same COPY into a table with the event table's indexes: the floor for keeping them, and
  3. the full import path (streamed read, cleaning, pseudonymisation, staging COPY, merge into the
     indexed event table, customer/item creation, quarantine and job accounting).
Prints one JSON line last.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from _setup import django_ready

BARE_TABLE = """
CREATE TABLE bench_raw_event (
    event_id text, customer_id text, item_id text, event_type text, "timestamp" timestamptz,
    quantity integer, value numeric(14, 2), currency text, rating double precision, session_id text,
    channel text, device text, order_id text, context jsonb
)
"""


INDEXES = """
ALTER TABLE bench_raw_event ALTER COLUMN event_id TYPE uuid USING event_id::uuid;
ALTER TABLE bench_raw_event ADD PRIMARY KEY (event_id);
CREATE INDEX ON bench_raw_event (customer_id, "timestamp");
CREATE INDEX ON bench_raw_event USING brin ("timestamp");
"""


def raw_copy(path: Path, *, indexed: bool = False) -> float:
    """COPY the file as it is into a bare table; with `indexed`, into one carrying the event table's
    three indexes (primary key, per-customer time, BRIN on time): the floor for any path that keeps them."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_event")
        cursor.execute(BARE_TABLE)
        if indexed:
            cursor.execute(INDEXES)
    with open(path) as handle:
        columns = ", ".join(f'"{c}"' for c in handle.readline().strip().split(","))
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor, open(path, "rb") as handle:
        with cursor.copy(f"COPY bench_raw_event ({columns}) FROM STDIN (FORMAT csv, HEADER true)") as copy:
            while block := handle.read(1 << 20):
                copy.write(block)
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_raw_event")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: events / 50")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    django_ready()
    from ingestion.management.commands.generate_events import write_events_csv
    from ingestion.import_jobs import import_job_create, import_job_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        started = time.perf_counter()
        written = write_events_csv(path, customers=args.customers or max(100, args.events // 50), events=args.events, seed=args.seed)
        generate_s = time.perf_counter() - started

        raw_s = raw_copy(path)
        indexed_s = raw_copy(path, indexed=True)

        job = import_job_create(path=path, fmt="csv", source="bench")
        started = time.perf_counter()
        job = import_job_run(job_id=job.pk)
        import_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6

    result = {
        "events": written,
        "import_events_per_s": round(written / import_s),
        "raw_copy_events_per_s": round(written / raw_s),
        "indexed_copy_events_per_s": round(written / indexed_s),
        "ratio": round(raw_s / import_s, 3),
        "import_s": round(import_s, 2),
        "raw_copy_s": round(raw_s, 2),
        "inserted": job.rows_inserted,
        "removed_by_cleaning": job.rows_removed,
        "rejected": job.rows_rejected,
        "file_mb": round(size_mb, 1),
        "generate_s": round(generate_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
