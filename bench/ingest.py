"""Bulk import throughput against the floor of this machine.

Generates N synthetic events to a CSV file, then in one run measures
  1. raw COPY of that file into a bare table (same columns, no keys, no indexes): the floor,
  2. the full import path (streamed read, cleaning, pseudonymisation, customer/item creation, a
     binary COPY of each chunk straight into the indexed event table, quarantine and job
     accounting), and
  3. the rows that import stored, COPY-ed into an empty copy of the event table with its real keys
     and indexes (hash partitions by customer, primary key (customer_id, event_id), the per-customer
     time B-tree and the time BRIN): the floor for any path that keeps them
     (`indexed_copy_events_per_s`; `import_over_indexed_copy` = import rate / that rate), in CSV as
     the issue set it, and again in PostgreSQL's binary COPY format, which the import itself sends
     (`indexed_binary_copy_events_per_s`, `import_over_indexed_binary_copy`: the stricter floor).
Then the same file imported again (`reimport_events_per_s`): every chunk meets stored events and
takes the merge path (staging COPY, INSERT … ON CONFLICT DO NOTHING), and nothing is added.
With --bad-share S, the same file again with a share S of its lines spoiled (a third each: an
unknown event type, an unreadable timestamp, a negative quantity), so that they are quarantined
(encrypted, one COPY per chunk), and a customers file of the same share of bad rows (a gender
nobody spells so) through `--kind customers`: `rejected_rows_per_s` against the clean import of
the same run. Prints one JSON line last.
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


def raw_copy(path: Path) -> float:
    """COPY the file as it is into a bare table: the floor of reading the bytes in."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_event")
        cursor.execute(BARE_TABLE)
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


def indexed_copy(job_id: int, directory: Path, fmt: str = "csv") -> tuple[float, int]:
    """The rows import `job_id` stored, written out, then COPY-ed (timed) into an empty table built
    like the event table: the same partitions, keys and indexes (ingestion.shard_shape). Returns the
    seconds and the rows. `fmt` csv or binary (PostgreSQL's binary COPY, as the import sends)."""
    from django.conf import settings
    from django.db import connection, transaction

    from ingestion.shard_shape import event_table_partitioned

    dump = directory / "stored.csv"
    with connection.cursor() as cursor, open(dump, "wb") as handle:
        with cursor.copy(f"COPY (SELECT * FROM ingestion_event WHERE import_job_id = {int(job_id)}) TO STDOUT (FORMAT {fmt})") as copy:
            for block in copy:
                handle.write(block)
    # the migration's own SQL, renamed: a partitioned copy of the (empty) shape of the event table
    shape = (event_table_partitioned(settings.EVENT_PARTITIONS)
             .replace("ingestion_event", "bench_indexed_event").replace("event_customer_time", "bench_customer_time")
             .replace("event_time_brin", "bench_time_brin"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_indexed_event")
        cursor.execute("CREATE SEQUENCE IF NOT EXISTS bench_indexed_event_arrival_seq")
        cursor.execute("CREATE TABLE bench_indexed_event (LIKE ingestion_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cursor.execute("ALTER TABLE bench_indexed_event ADD CONSTRAINT bench_indexed_event_pkey PRIMARY KEY (customer_id, event_id)")
        cursor.execute("CREATE INDEX bench_customer_time ON bench_indexed_event (customer_id, occurred_at)")
        cursor.execute("CREATE INDEX bench_time_brin ON bench_indexed_event USING brin (occurred_at)")
        cursor.execute(shape)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor, open(dump, "rb") as handle:
        with cursor.copy(f"COPY bench_indexed_event FROM STDIN (FORMAT {fmt})") as copy:
            while block := handle.read(1 << 20):
                copy.write(block)
        rows = cursor.rowcount
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_indexed_event")
        cursor.execute("DROP SEQUENCE IF EXISTS bench_indexed_event_arrival_seq")
    dump.unlink()
    return elapsed, rows


def spoil(path: Path, target: Path, *, share: float, seed: int) -> int:
    """A copy of the generated CSV with `share` of its lines made invalid; returns how many."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    bad = rng.random(len(frame)) < share
    kind = rng.integers(0, 3, len(frame))
    frame.loc[bad & (kind == 0), "event_type"] = "teleport"
    frame.loc[bad & (kind == 1), "timestamp"] = "not-a-date"
    frame.loc[bad & (kind == 2), "quantity"] = "-1"
    frame.to_csv(target, index=False)
    return int(bad.sum())


def customers_file(target: Path, *, rows: int, share: float, seed: int) -> int:
    """A customers CSV as a shop exports it (Male/Female, Yes/No), `share` of its rows with a gender
    that cannot be normalised; returns the bad rows."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    bad = rng.random(rows) < share
    frame = pd.DataFrame({
        "Customer ID": [f"k{n}" for n in range(rows)],
        "Age": rng.integers(18, 80, rows).astype(str),
        "Gender": np.where(bad, "Robot", np.where(rng.random(rows) < 0.5, "Male", "Female")),
        "Loyalty Member": np.where(rng.random(rows) < 0.3, "Yes", "No"),
        "Email": [f"k{n}@example.com" for n in range(rows)],
    })
    frame.to_csv(target, index=False)
    return int(bad.sum())


def timed_import(path: Path, **kwargs):
    from ingestion.import_jobs import import_job_create, import_job_run

    job = import_job_create(path=path, fmt="csv", **kwargs)
    started = time.perf_counter()
    job = import_job_run(job_id=job.pk)
    return job, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: events / 50")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-share", type=float, default=None,
                        help="also import a copy with this share of lines invalid (0 < S <= 1) and a customers file alike")
    parser.add_argument("--customers-rows", type=int, default=50_000, help="rows of the customers file (--bad-share)")
    args = parser.parse_args()
    django_ready()
    from ingestion.management.commands.generate_events import write_events_csv

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        started = time.perf_counter()
        written = write_events_csv(path, customers=args.customers or max(100, args.events // 50), events=args.events, seed=args.seed)
        generate_s = time.perf_counter() - started

        raw_s = raw_copy(path)
        job, import_s = timed_import(path, source="bench")
        indexed_s, indexed_rows = indexed_copy(job.pk, Path(tmp))
        binary_s, _ = indexed_copy(job.pk, Path(tmp), fmt="binary")
        # the same file again: every chunk meets stored events, so every chunk takes the merge path
        again, reimport_s = timed_import(path, source="bench")
        size_mb = path.stat().st_size / 1e6
        bad_run = {}
        if args.bad_share:
            spoiled = Path(tmp) / "spoiled.csv"
            spoil(path, spoiled, share=args.bad_share, seed=args.seed)
            bad_job, bad_s = timed_import(spoiled, source="bench")
            people = Path(tmp) / "customers.csv"
            customers_file(people, rows=args.customers_rows, share=args.bad_share, seed=args.seed)
            people_job, people_s = timed_import(people, source="bench", options={
                "kind": "customers", "mapping": {"external_id": "Customer ID", "age": "Age", "gender": "Gender",
                                                 "is_loyalty_member": "Loyalty Member", "email": "Email"}})
            bad_run = {
                "bad_share": args.bad_share,
                "rejected_rows": bad_job.rows_rejected,
                "rejected_rows_per_s": round(bad_job.rows_rejected / bad_s),
                "bad_file_rows_per_s": round(bad_job.rows_read / bad_s),
                "bad_file_import_s": round(bad_s, 2),
                "rejected_over_clean": round(bad_job.rows_rejected / bad_s / (written / import_s), 3),
                "customers_rows": people_job.rows_read,
                "customers_rejected": people_job.rows_rejected,
                "customers_rows_per_s": round(people_job.rows_read / people_s),
                "customers_rejected_rows_per_s": round(people_job.rows_rejected / people_s),
                "customers_import_s": round(people_s, 2),
            }

    result = {
        "events": written,
        "import_events_per_s": round(written / import_s),
        "raw_copy_events_per_s": round(written / raw_s),
        "indexed_copy_events_per_s": round(indexed_rows / indexed_s),
        "indexed_copy_rows": indexed_rows,
        "import_over_indexed_copy": round((written / import_s) / (indexed_rows / indexed_s), 3),
        "indexed_binary_copy_events_per_s": round(indexed_rows / binary_s),
        "import_over_indexed_binary_copy": round((written / import_s) / (indexed_rows / binary_s), 3),
        "ratio": round(raw_s / import_s, 3),
        "import_s": round(import_s, 2),
        "raw_copy_s": round(raw_s, 2),
        "inserted": job.rows_inserted,
        "chunks_copied": job.report.get("chunks_copied", 0),
        "chunks_merged": job.report.get("chunks_merged", 0),
        "reimport_events_per_s": round(written / reimport_s),
        "reimport_inserted": again.rows_inserted,
        "reimport_duplicates": again.rows_duplicate,
        "removed_by_cleaning": job.rows_removed,
        "rejected": job.rows_rejected,
        "file_mb": round(size_mb, 1),
        "generate_s": round(generate_s, 2),
        **bad_run,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
