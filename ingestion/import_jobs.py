"""The import-job engine: a file (or a generated shop) read in chunks, cleaned, stored by writer
threads with its quarantine and counters, resumable after a dead worker."""

import errno
import queue
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from ingestion import bulk
from ingestion.services import customers_upsert, items_upsert, social_edges_upsert, without_suppressed_subjects
from ingestion.cleaning import (
    CleanedEvents,
    CleaningRules,
    RowError,
    events_clean,
)
from ingestion.pseudonyms import customer_key, pii_encrypt_bytes
from ingestion.selectors import customer_keys_resolve
from ingestion.importers.sources import (
    EventSource,
    SourceError,
    cleaning_rules,
    open_event_source,
)
from ingestion.models import (
    Customer,
    CustomerGroundTruth,
    ImportFormat,
    ImportJob,
    ImportStatus,
    QuarantinedRow,
)
from privacy.suppression_tokens import customer_suppression_token

# A running job whose heartbeat is older than this is presumed dead and may be claimed again.
STALE_JOB_SECONDS = 300
# Database writer threads per import; with one more thread preparing chunks this fills 2 cores.
STORE_THREADS = 2




def import_job_create(
    *, path: str | Path, fmt: str, source: str | None = None, options: dict | None = None, created_by=None
) -> ImportJob:
    from ingestion.importers.sources import DEFAULT_SOURCES

    if fmt not in ImportFormat.values:
        raise SourceError(f"unknown format {fmt!r}")
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return ImportJob.objects.create(
        source=source or DEFAULT_SOURCES.get(fmt, "default"),
        format=fmt,
        file_path=str(path.resolve()),
        options=options or {},
        progress_total=size,
        created_by=created_by,
    )


def _import_job_claim(job_id: int) -> bool:
    """Atomically move a job to running; a dead worker's job (stale heartbeat) may be reclaimed.
    Counters restart at zero: rows landed by the dead attempt then count as duplicates."""
    stale = timezone.now() - timezone.timedelta(seconds=STALE_JOB_SECONDS)
    with transaction.atomic():
        claimed = ImportJob.objects.filter(
            Q(status=ImportStatus.PENDING) | Q(status=ImportStatus.RUNNING, heartbeat_at__lt=stale), pk=job_id
        ).update(
            status=ImportStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now(), finished_at=None,
            rows_read=0, rows_inserted=0, rows_duplicate=0, rows_rejected=0, rows_flagged=0, rows_removed=0,
            progress_done=0, report={}, error="",
        )
        if claimed:
            QuarantinedRow.objects.filter(job_id=job_id).delete()
    return bool(claimed)


@dataclass
class _ChunkOutcome:
    read: int
    cleaned: CleanedEvents
    malformed: list[RowError]
    raw_for_rejected: list[str]
    subjects_of_rejected: list[list[str]]  # the external ids each rejected row names
    blank_lines: int
    progress_done: int
    payload: bytes
    rows: int  # events in the payload
    refused: int  # rows of suppressed subjects, dropped before any customer was created
    external_ids: list[str]  # customers of the payload, re-checked against suppression at store time


def _prepare_chunk(frame: pd.DataFrame, chunk, rules: CleaningRules, references: bulk.ReferenceIds) -> _ChunkOutcome:
    # before cleaning, so a suppressed subject's rejected row is not quarantined (kept verbatim)
    frame, refused_raw = without_suppressed_subjects(frame, references.source)
    cleaned = events_clean(frame, rules=rules)
    events, refused = without_suppressed_subjects(cleaned.events, references.source)
    refused += refused_raw
    payload = bulk.events_payload(events=events, references=references) if len(events) else b""
    raw, subjects = [], []
    if cleaned.rejected:
        position_of_line = pd.Series(np.arange(len(frame)), index=frame["_line"].to_numpy())
        positions = [int(position_of_line[r.line]) for r in cleaned.rejected]
        raw = chunk.raw(positions)
        named = frame["customer_id"].iloc[positions] if "customer_id" in frame else pd.Series([None] * len(positions))
        subjects = [[str(e)] if isinstance(e, str) and e.strip() else [] for e in named]
    return _ChunkOutcome(
        read=len(frame) + len(chunk.malformed),
        cleaned=cleaned,
        malformed=chunk.malformed,
        raw_for_rejected=raw,
        subjects_of_rejected=subjects,
        blank_lines=chunk.blank_lines,
        progress_done=chunk.bytes_done,
        payload=payload,
        rows=len(events),
        refused=refused,
        external_ids=[str(e) for e in events["customer_id"].unique()] if len(events) else [],
    )


def _quarantined(*, job_id: int, line: int, raw: str, reason: str, source: str, subjects=()) -> QuarantinedRow:
    """A rejected row, encrypted, with the customer tokens of the subjects it names (erasure's key)."""
    tokens = sorted({customer_suppression_token(customer_key=customer_key(source=source, external_id=s)) for s in subjects})
    return QuarantinedRow(job_id=job_id, line_number=line, raw_encrypted=pii_encrypt_bytes(raw.encode()),
                          subject_tokens=tokens, reason=_storable(reason))


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep the row verbatim otherwise, with NUL made visible."""
    return text.replace("\x00", "\\x00")


def _store_chunk(
    job_id: int, references: bulk.ReferenceIds, outcome: _ChunkOutcome, report: Counter, report_lock: threading.Lock
) -> None:
    """One transaction: the chunk's events, its quarantined rows and the job's counters."""
    from privacy.guard import ingest_guard
    from privacy.selectors import suppressed_external_ids

    with transaction.atomic(), connection.cursor() as cursor:
        ingest_guard(cursor)
        merged = bulk.events_merge_payload(payload=outcome.payload, rows=outcome.rows, import_job_id=job_id)
        # a subject suppressed since the chunk was prepared: take back what this chunk wrote
        late = suppressed_external_ids(source=references.source, external_ids=outcome.external_ids)
        refused = outcome.refused
        if late:
            late_ids = [references.customers[e] for e in late]
            cursor.execute("DELETE FROM ingestion_event WHERE import_job_id = %s AND customer_id = ANY(%s)", [job_id, late_ids])
            refused += cursor.rowcount
            merged.inserted -= cursor.rowcount
            cursor.execute(
                "DELETE FROM ingestion_customer c WHERE c.id = ANY(%s)"
                " AND NOT EXISTS (SELECT 1 FROM ingestion_event e WHERE e.customer_id = c.id)",
                [late_ids],
            )
        quarantine = [
            _quarantined(job_id=job_id, line=r.line, raw=r.raw, reason=r.reason, source=references.source)
            for r in outcome.malformed
        ] + [
            _quarantined(job_id=job_id, line=r.line, raw=raw, reason=r.reason, source=references.source, subjects=subjects)
            for r, raw, subjects in zip(outcome.cleaned.rejected, outcome.raw_for_rejected, outcome.subjects_of_rejected,
                                        strict=True)
        ]
        QuarantinedRow.objects.bulk_create(quarantine, batch_size=5000)
        with report_lock:
            report.update(outcome.cleaned.counts)
            report["malformed_line"] += len(outcome.malformed)
            report["blank_line_skipped"] += outcome.blank_lines
            report["duplicate_already_stored"] += merged.conflicts
            if refused:
                report["refused_suppressed_subject"] += refused
            report["customers_created_from_events"] = references.customers_created
            report["items_created_from_events"] = references.items_created
            report_snapshot = dict(sorted(report.items()))
        ImportJob.objects.filter(pk=job_id).update(
            rows_read=F("rows_read") + outcome.read,
            rows_inserted=F("rows_inserted") + merged.inserted,
            rows_duplicate=F("rows_duplicate") + outcome.cleaned.duplicates + merged.conflicts,
            rows_rejected=F("rows_rejected") + len(quarantine),
            rows_flagged=F("rows_flagged") + outcome.cleaned.flagged,
            rows_removed=F("rows_removed") + outcome.cleaned.removed,
            progress_done=Greatest(F("progress_done"), outcome.progress_done),
            heartbeat_at=timezone.now(),
            report=report_snapshot,
        )


def import_job_run(*, job_id: int, on_progress: Callable[[ImportJob], None] | None = None) -> ImportJob | None:
    """Run a pending file import to the end. Returns None if another worker holds it."""
    if not _import_job_claim(job_id):
        return None
    job = ImportJob.objects.get(pk=job_id)
    if job.options.get("kind", "events") != "events":
        return _catalogue_job_execute(job, on_progress)
    return _import_job_execute(
        job,
        lambda: open_event_source(path=Path(job.file_path), fmt=job.format, source=job.source, options=job.options),
        on_progress,
    )


class _StoreThreads:
    """Database writers for an import: each thread owns a connection and stores whole chunks, one
    transaction each, while the caller prepares the next ones. Chunks merge in primary-key order,
    so two writers never lock the same keys in opposite orders."""

    def __init__(self, count: int, store: Callable[[_ChunkOutcome], None]):
        self._store = store
        self._queue: queue.Queue = queue.Queue(maxsize=count)
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, name=f"import-store-{n}", daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            while (outcome := self._queue.get()) is not None:
                if not self._errors:
                    try:
                        self._store(outcome)
                    except BaseException as exc:  # handed to the caller in put()/close()
                        self._errors.append(exc)
        finally:
            connection.close()

    def put(self, outcome: _ChunkOutcome) -> None:
        self._raise_first_error()
        self._queue.put(outcome)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._raise_first_error()

    def _raise_first_error(self) -> None:
        if self._errors:
            raise self._errors[0]


class ImportOutOfSpace(Exception):
    """The database server (or the file system under the import) ran out of disk space. Not an
    OperationalError: retrying cannot help until someone frees space, so the task must not retry."""


def _out_of_space(exc: BaseException) -> bool:
    """PostgreSQL's disk_full (SQLSTATE 53100: "could not extend file …: No space left on device")
    or an OSError ENOSPC, anywhere in the exception's chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if getattr(seen, "sqlstate", None) == "53100":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _out_of_space_message(job_id: int, exc: BaseException) -> str:
    job = ImportJob.objects.get(pk=job_id)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"Out of disk space: {detail}. Whole chunks committed before it: {job.rows_read} rows read, "
        f"{job.rows_inserted} events stored; nothing of the chunk that failed was kept. Free disk space on the "
        f"database server, then import the file again (rows already stored count as duplicates)."
    )


@contextmanager
def _job_outcome_recorded(job: ImportJob, on_progress: Callable[[ImportJob], None] | None):
    """Record how a claimed job ends: succeeded; failed with the error (out of disk space says so
    and what was committed); or, when the database went away, pending again so the task's retry
    resumes it."""
    try:
        yield
    except Exception as exc:
        if _out_of_space(exc):
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportStatus.FAILED, finished_at=timezone.now(), error=_out_of_space_message(job.pk, exc)[:10_000],
            )
            raise ImportOutOfSpace(str(exc)) from exc
        if isinstance(exc, (OperationalError, InterfaceError)):
            ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.PENDING, error=f"retrying after: {exc}"[:10_000])
            raise
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportStatus.FAILED, finished_at=timezone.now(),
            error="".join(traceback.format_exception_only(exc)).strip()[:10_000],
        )
        raise
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.SUCCEEDED, finished_at=timezone.now())
    job.refresh_from_db()
    if on_progress:
        on_progress(job)


def _import_job_execute(
    job: ImportJob, open_source: Callable[[], EventSource], on_progress: Callable[[ImportJob], None] | None
) -> ImportJob:
    """Stream a claimed job's source through cleaning into the store, recording the outcome.

    The calling thread reads, cleans and serialises chunks; STORE_THREADS writers (each with its
    own connection) COPY and merge them meanwhile, so Python and PostgreSQL use both cores. A chunk
    is one transaction, so a crash leaves whole chunks; re-running is safe because every event id
    is deterministic.
    """
    job_id = job.pk
    report: Counter = Counter()
    report_lock = threading.Lock()
    with _job_outcome_recorded(job, on_progress):
        event_source = open_source()
        catalogue_upsert(source=job.source, event_source=event_source, report=report)
        references = bulk.ReferenceIds(job.source)
        writers = _StoreThreads(
            STORE_THREADS, lambda outcome: _store_chunk(job_id, references, outcome, report, report_lock)
        )
        try:
            for frame, chunk in event_source.chunks:
                writers.put(_prepare_chunk(frame, chunk, event_source.rules, references))
                if on_progress:
                    job.refresh_from_db()
                    on_progress(job)
        finally:
            writers.close()
    return job


CATALOGUE_KINDS = ("customers", "items", "edges")
CATALOGUE_BATCH_ROWS = 5000


def _catalogue_job_execute(job: ImportJob, on_progress: Callable[[ImportJob], None] | None) -> ImportJob:
    """A file of customers, items or social edges: each row validated like the API's, invalid rows
    quarantined with line and field errors, valid ones upserted in batches (one transaction each)."""
    from ingestion import row_validation
    from ingestion.importers import readers

    kind = job.options["kind"]
    validator, upsert = {
        "customers": (row_validation.CustomerRow, lambda rows: customers_upsert(rows=rows, source=job.source)),
        "items": (row_validation.ItemRow, lambda rows: items_upsert(rows=rows)),
        "edges": (row_validation.SocialEdgeRow, lambda rows: social_edges_upsert(rows=rows, source=job.source)),
    }.get(kind, (None, None))
    with _job_outcome_recorded(job, on_progress):
        if validator is None:
            raise SourceError(f"unknown kind {kind!r}; one of events, {', '.join(CATALOGUE_KINDS)}")
        path = Path(job.file_path)
        chunks = {
            "csv": lambda: readers.read_delimited(path, delimiter=job.options.get("delimiter", ","), block_bytes=1 << 20),
            "jsonl": lambda: readers.read_jsonl(path, chunk_rows=CATALOGUE_BATCH_ROWS),
            "parquet": lambda: readers.read_parquet(path, chunk_rows=CATALOGUE_BATCH_ROWS),
        }.get(job.format)
        if chunks is None:
            raise SourceError(f"{kind} files must be csv, jsonl or parquet, not {job.format}")
        renames = {column: field_name for field_name, column in (job.options.get("mapping") or {}).items()}
        for chunk in chunks():
            _catalogue_chunk_store(job, chunk, renames, validator, upsert)
            if on_progress:
                job.refresh_from_db()
                on_progress(job)
    return job


def _catalogue_chunk_store(job: ImportJob, chunk, renames: dict, validator, upsert) -> None:
    import json

    records = chunk.frame.rename(columns=renames).to_dict("records")
    valid, quarantine = [], []
    for position, record in enumerate(records):
        line = int(record.pop("_line"))
        row = {k: v for k, v in record.items() if not (v is None or v == "" or (isinstance(v, float) and np.isnan(v)))}
        errors: dict = {}
        if isinstance(row.get("attributes"), str):
            try:
                row["attributes"] = json.loads(row["attributes"])
            except ValueError:
                errors["attributes"] = ["not valid JSON"]
        serializer = validator(data=row)
        if not errors and serializer.is_valid():
            valid.append(serializer.validated_data)
            continue
        errors.update({f: [str(m) for m in messages] for f, messages in (serializer.errors if not errors else {}).items()})
        reason = "; ".join(f"{f}: {', '.join(m)}" for f, m in errors.items())
        subjects = [str(row[f]) for f in ("external_id", "source_id", "target_id") if str(row.get(f, "")).strip()]
        quarantine.append(_quarantined(job_id=job.pk, line=line, raw=chunk.raw([position])[0], reason=reason,
                                       source=job.source, subjects=subjects))
    quarantine += [
        _quarantined(job_id=job.pk, line=r.line, raw=r.raw, reason=r.reason, source=job.source) for r in chunk.malformed
    ]
    with transaction.atomic():
        written = upsert(valid) if valid else 0
        QuarantinedRow.objects.bulk_create(quarantine)
        ImportJob.objects.filter(pk=job.pk).update(
            rows_read=F("rows_read") + len(records) + len(chunk.malformed),
            rows_inserted=F("rows_inserted") + written,
            rows_rejected=F("rows_rejected") + len(quarantine),
            progress_done=chunk.bytes_done,
            heartbeat_at=timezone.now(),
        )


def catalogue_upsert(*, source: str, event_source: EventSource, report: Counter) -> None:
    if event_source.catalogue.customers:
        report["customers_upserted"] += customers_upsert(rows=event_source.catalogue.customers, source=source)
    if event_source.catalogue.items:
        report["items_upserted"] += items_upsert(rows=event_source.catalogue.items)


# --- Synthetic shop ----------------------------------------------------------------------------

SYNTHETIC_SOURCE = "synthetic"


def synthetic_shop_load(
    *, customers: int, events: int, seed: int = 0, on_progress: Callable[[ImportJob], None] | None = None,
    start: datetime | None = None,
) -> ImportJob:
    """Generate a shop (items, customers with PII and ground truth, social edges, events) and load it
    through the same cleaning and store path as any import. Idempotent for a given seed and start
    (by default the generator's own, 2025-01-01)."""
    from ingestion import generator

    config = generator.ShopConfig(customers=customers, events=events, seed=seed,
                                  **({"start": start} if start is not None else {}))
    items_upsert(rows=generator.generate_items(config).to_dict("records"))
    for batch, truth in generator.generate_customers(config):
        rows = batch.to_dict("records")
        customers_upsert(rows=rows, source=SYNTHETIC_SOURCE)
        keys = {key: external_id for external_id, key in
                customer_keys_resolve(source=SYNTHETIC_SOURCE, external_ids=[r["external_id"] for r in rows]).items()}
        ids = {keys[k]: pk for k, pk in Customer.objects.filter(key__in=list(keys)).values_list("key", "id")}
        bulk.upsert_by_key(CustomerGroundTruth, "customer", {
            ids[t.external_id]: {
                "segment": t.segment,
                "churned_at": None if pd.isna(t.churned_at) else t.churned_at.to_pydatetime(),
                "parameters": t.parameters,
            }
            for t in truth.itertuples(index=False)
        }, {})
    edges = generator.generate_social_edges(config)
    for start in range(0, len(edges), 200_000):  # bounded memory: dicts for one slice at a time
        social_edges_upsert(rows=edges.iloc[start:start + 200_000].to_dict("records"), source=SYNTHETIC_SOURCE)

    job = ImportJob.objects.create(
        source=SYNTHETIC_SOURCE, format=ImportFormat.SYNTHETIC, progress_total=events,
        options={"customers": customers, "events": events, "seed": seed},
    )
    _import_job_claim(job.pk)
    job.refresh_from_db()
    return _import_job_execute(job, lambda: _synthetic_event_source(config), on_progress)


def _synthetic_event_source(config) -> EventSource:
    from ingestion import generator
    from ingestion.importers.readers import SourceChunk

    def chunks():
        done = 0
        for frame in generator.generate_events(config):
            frame = frame.copy()
            frame["_line"] = np.arange(done + 1, done + 1 + len(frame), dtype=np.int64)
            done += len(frame)
            yield frame, SourceChunk(frame=frame, bytes_done=done)

    return EventSource(rules=cleaning_rules(source=SYNTHETIC_SOURCE, options={}), bytes_total=config.events, chunks=chunks())


def import_files_erase(*, matches) -> int:
    """Delete uploaded import files for which `matches(path)` is true; their jobs keep their counts
    and forget the path (the file was the only copy of the raw rows). Files outside the upload area
    (a server path given to the command) are the operator's and stay. Returns the files deleted."""
    from django.conf import settings

    removed = 0
    root = Path(settings.MEDIA_ROOT).resolve()
    for job in ImportJob.objects.exclude(file_path="").only("pk", "file_path"):
        path = Path(job.file_path)
        if not path.is_file() or root not in path.resolve().parents:
            continue
        if matches(path):
            path.unlink()
            ImportJob.objects.filter(pk=job.pk).update(file_path="")
            removed += 1
    return removed
