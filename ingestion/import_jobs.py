"""The import-job engine: a file (or a generated shop) read in chunks, cleaned, stored by writer
threads with its quarantine and counters, resumable after a dead worker."""

import errno
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from rest_framework import serializers

from config.citus_mode import shard_writes_sequential

from ingestion import bulk, normalise
from ingestion.services import customers_upsert, items_upsert, social_edges_upsert, without_suppressed_subjects
from ingestion.cleaning import (
    CleanedEvents,
    RowError,
    events_clean,
)
from ingestion.pseudonyms import customer_key, pii_encrypt_many
from ingestion.selectors import customer_keys_resolve
from ingestion.importers.sources import (
    EventSource,
    SourceError,
    cleaning_rules,
    open_event_source,
    value_maps_check,
)
from ingestion.models import (
    Customer,
    CustomerGroundTruth,
    ImportChunk,
    ImportFormat,
    ImportJob,
    ImportStatus,
    QuarantinedRow,
)
from privacy.suppression_tokens import customer_suppression_token

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
    Counters, quarantined rows and the chunk records stay: they were committed together, chunk by
    chunk, and the resumed run goes on from them (`_chunks_committed`)."""
    # a running job whose heartbeat is older than IMPORT_STALE_SECONDS is presumed dead
    stale = timezone.now() - timezone.timedelta(seconds=settings.IMPORT_STALE_SECONDS)
    claimed = ImportJob.objects.filter(
        Q(status=ImportStatus.PENDING) | Q(status=ImportStatus.RUNNING, heartbeat_at__lt=stale), pk=job_id
    ).update(status=ImportStatus.RUNNING, started_at=Coalesce(F("started_at"), timezone.now()),
             heartbeat_at=timezone.now(), finished_at=None)
    return bool(claimed)


def _import_job_restart(job_id: int) -> None:
    """Forget a job's committed chunks and counts, for a resumed run that finds the file cut into
    other chunks than before (a changed file or block size): it reads the file from the start, and
    the events already stored count as duplicates."""
    with transaction.atomic():
        ImportJob.objects.filter(pk=job_id).update(
            rows_read=0, rows_inserted=0, rows_duplicate=0, rows_rejected=0, rows_flagged=0, rows_removed=0,
            progress_done=0, report={})
        QuarantinedRow.objects.filter(job_id=job_id).delete()
        ImportChunk.objects.filter(job_id=job_id).delete()


class _ChunkingChanged(Exception):
    pass


@dataclass
class _ChunkOutcome:
    read: int
    cleaned: CleanedEvents
    malformed: list[RowError]
    blank_lines: int
    progress_done: int
    payload: bytes
    rows: int  # events in the payload
    refused: int  # rows of suppressed subjects, dropped before any customer was created
    external_ids: list[str]  # customers of the payload, re-checked against suppression at store time
    number: int = 0  # the chunk's place in the file, from 0
    signature: tuple[int, int] = (0, 0)  # _chunk_signature
    created: Counter | None = None  # customers and items this chunk's references created
    quarantine: bytes = b""  # the rejected and malformed rows, encrypted, as COPY text
    quarantined: int = 0


def mapped_chunk_check(frame: pd.DataFrame, event_source: EventSource) -> tuple[pd.DataFrame, list]:
    """Value maps, then the built-in normalisation of the customer columns, on a mapped chunk:
    the frame with our values, and the problems (row mask, field, message) of the rows to refuse."""
    if not event_source.value_maps and not event_source.customer_fields:
        return frame, []
    frame = frame.copy()
    problems = normalise.value_maps_apply(frame, event_source.value_maps)
    if event_source.customer_fields:
        problems += normalise.customer_fields_normalise(frame)
    return frame, problems


@dataclass
class _CleanedChunk:
    frame: pd.DataFrame
    chunk: object  # the reader's SourceChunk: its raw lines, malformed rows, progress
    cleaned: CleanedEvents
    events: pd.DataFrame  # cleaned.events less suppressed subjects
    refused: int
    signature: tuple[int, int]
    number: int


def _clean_chunk(frame: pd.DataFrame, chunk, event_source: EventSource, references: bulk.ReferenceIds,
                 attributes: "LatestCustomerAttributes", number: int) -> _CleanedChunk:
    """The reading thread's part of a chunk: screening and cleaning, Python work that needs the
    database only to look at the suppression list (the store screens again, under the guard)."""
    signature = _chunk_signature(frame, chunk)
    # before cleaning, so a suppressed subject's rejected row is not quarantined (kept verbatim)
    frame, refused_raw = without_suppressed_subjects(frame, references.source, references.suppression_tokens)
    frame, prior = mapped_chunk_check(frame, event_source)
    cleaned = events_clean(frame, rules=event_source.rules, prior=prior)
    attributes.add(frame, cleaned.events)
    events, refused = without_suppressed_subjects(cleaned.events, references.source, references.suppression_tokens)
    return _CleanedChunk(frame, chunk, cleaned, events, refused_raw + refused, signature, number)


def _chunk_outcome(cleaned_chunk: _CleanedChunk, references: bulk.ReferenceIds, job_id: int) -> _ChunkOutcome:
    """The resolving thread's part, one chunk after another in file order: customer and item ids
    (created if new) and arrival numbers, which wait on the database, then the COPY payload and the
    encrypted quarantine. Apart from the reading thread, so its cleaning of the next chunk goes on
    while these queries wait."""
    frame, chunk, cleaned, events = cleaned_chunk.frame, cleaned_chunk.chunk, cleaned_chunk.cleaned, cleaned_chunk.events
    customers_before, items_before = references.customers_created, references.items_created
    payload = bulk.events_payload(events=events, references=references, import_job_id=job_id) if len(events) else b""
    created = Counter(customers_created_from_events=references.customers_created - customers_before,
                      items_created_from_events=references.items_created - items_before)
    raw, subjects = [], []
    if len(cleaned.rejected_lines):
        order = np.argsort(chunk.frame["_line"].to_numpy(), kind="stable")
        positions = order[np.searchsorted(chunk.frame["_line"].to_numpy()[order], cleaned.rejected_lines)]
        raw = chunk.raw(positions)
        subjects = cleaned.rejected_customer_ids
    # encrypted here, not in the writers, so they only send it (and hold no GIL meanwhile)
    quarantine, quarantined = _quarantine_payload(
        job_id=job_id, source=references.source,
        lines=[r.line for r in chunk.malformed] + cleaned.rejected_lines.tolist(),
        raws=[r.raw for r in chunk.malformed] + raw,
        reasons=[r.reason for r in chunk.malformed] + cleaned.rejected_reasons(),
        subjects=[None] * len(chunk.malformed) + list(subjects))
    return _ChunkOutcome(
        read=len(frame) + len(chunk.malformed),
        cleaned=cleaned,
        malformed=chunk.malformed,
        blank_lines=chunk.blank_lines,
        progress_done=chunk.bytes_done,
        payload=payload,
        rows=len(events),
        refused=cleaned_chunk.refused,
        external_ids=events["customer_id"].unique().tolist() if len(events) else [],
        number=cleaned_chunk.number,
        signature=cleaned_chunk.signature,
        created=created,
        quarantine=quarantine,
        quarantined=quarantined,
    )


class LatestCustomerAttributes:
    """The customer columns of an event file, one value per customer and attribute: the value on the
    customer's latest line by event time (a tie: the later line) among the lines that landed as
    events; an empty cell gives no value, so an older line's value stands. Kept per import as one
    row per (customer, attribute), written once the events are in."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self.rows = 0  # lines that carried customer attributes
        self._latest: pd.DataFrame | None = None

    def add(self, frame: pd.DataFrame, events: pd.DataFrame) -> None:
        present = [f for f in self.fields if f in frame]
        if not present or events.empty:
            return
        kept = events[["_line", "customer_id", "occurred_at"]]
        rows = frame[["_line", *present]].merge(kept, on="_line")
        self.rows += len(rows)
        long = rows.melt(id_vars=["_line", "customer_id", "occurred_at"], value_vars=present,
                         var_name="field", value_name="value").dropna(subset=["value"])
        if self._latest is not None:
            long = pd.concat([self._latest, long], ignore_index=True)
        self._latest = (long.sort_values(["occurred_at", "_line"], kind="stable")
                        .drop_duplicates(["customer_id", "field"], keep="last"))

    def customer_rows(self) -> list[dict]:
        """Rows for customers_upsert: {external_id, attribute: value, ...} per customer."""
        if self._latest is None or self._latest.empty:
            return []
        rows: dict[str, dict] = {}
        for customer, field_name, value in self._latest[["customer_id", "field", "value"]].itertuples(index=False):
            if field_name == "age":
                value = int(value)
            elif field_name in normalise.BOOLEAN_FIELDS:
                value = bool(value)
            rows.setdefault(customer, {"external_id": customer})[field_name] = value
        return list(rows.values())


def customer_attributes_store(*, source: str, attributes: LatestCustomerAttributes, report: Counter) -> None:
    """Upsert the customers an event file described, in batches (one transaction each)."""
    rows = attributes.customer_rows()
    for start in range(0, len(rows), CATALOGUE_BATCH_ROWS):
        customers_upsert(rows=rows[start:start + CATALOGUE_BATCH_ROWS], source=source)
    if attributes.rows:
        report["customer_attribute_lines"] += attributes.rows
        report["customers_updated_from_lines"] += len(rows)


def _quarantine_payload(*, job_id: int, source: str, lines: list[int], raws: list[str], reasons: list[str],
                        subjects: list) -> tuple[bytes, int]:
    """Rejected rows as COPY text for `bulk.quarantined_rows_copy`, and how many: each row encrypted
    under the PII key, with the customer tokens of the subjects it names (erasure's key). Per row,
    `subjects` holds None, an external id, or a list of them."""
    tokens: dict[str, str] = {}  # per call only: raw external ids are not kept beyond it

    def token(external_id: str) -> str:
        if external_id not in tokens:
            tokens[external_id] = customer_suppression_token(customer_key=customer_key(source=source, external_id=external_id))
        return tokens[external_id]

    named = ["" if not s else token(s) if isinstance(s, str) else ",".join(sorted({token(x) for x in s}))
             for s in subjects]
    payload = bulk.quarantined_rows_payload(
        job_id=job_id, lines=lines, encrypted=pii_encrypt_many([raw.encode() for raw in raws]), subject_tokens=named,
        reasons=[_storable(r) if "\x00" in r else r for r in reasons], created_at=timezone.now())
    return payload, len(lines)


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep the row verbatim otherwise, with NUL made visible."""
    return text.replace("\x00", "\\x00")


@dataclass
class _StoreMode:
    """How a job's writers store chunks: COPY straight into the event table until a chunk meets an
    event already stored (a re-import, a resumed job), then merging (INSERT … ON CONFLICT) for the
    rest of the job, so a re-import does not pay for a failed COPY per chunk."""

    merging: bool = False


def _store_chunk(
    job_id: int, references: bulk.ReferenceIds, outcome: _ChunkOutcome, report: Counter, report_lock: threading.Lock,
    store_mode: _StoreMode,
) -> None:
    """One transaction: the chunk's events, its quarantined rows and the job's counters."""
    from privacy.guard import ingest_guard
    from privacy.selectors import suppressed_external_ids

    with transaction.atomic(), connection.cursor() as cursor:
        shard_writes_sequential(cursor)  # the job's rows are written after the chunk's multi-shard insert
        ingest_guard(cursor)
        merged = None if store_mode.merging else bulk.events_copy_payload(payload=outcome.payload, rows=outcome.rows)
        stored_by = "chunks_copied" if merged is not None else "chunks_merged"
        if merged is None:
            # some of the chunk's events are stored already: merge this chunk and the rest of the file
            store_mode.merging = True
            merged = bulk.events_merge_payload(payload=outcome.payload, rows=outcome.rows)
        # a subject suppressed since the chunk was prepared: take back what this chunk wrote
        late = suppressed_external_ids(source=references.source, external_ids=outcome.external_ids,
                                       token_cache=references.suppression_tokens)
        refused = outcome.refused
        if late:
            late_ids = [references.customers[e] for e in late]
            cursor.execute("DELETE FROM ingestion_event WHERE import_job_id = %s AND customer_id = ANY(%s)", [job_id, late_ids])
            refused += cursor.rowcount
            merged.inserted -= cursor.rowcount
            cursor.execute(
                "DELETE FROM ingestion_customer c WHERE c.id = ANY(%s)"
                " AND NOT EXISTS (SELECT 1 FROM ingestion_event e WHERE e.customer_id = c.id) RETURNING c.id",
                [late_ids],
            )
            cursor.execute("DELETE FROM ingestion_customerkey WHERE customer_id = ANY(%s)", [[row[0] for row in cursor.fetchall()]])
        bulk.quarantined_rows_copy(cursor, outcome.quarantine)
        counts = Counter(outcome.cleaned.counts)
        counts.update(malformed_line=len(outcome.malformed), blank_line_skipped=outcome.blank_lines,
                      duplicate_already_stored=merged.conflicts, refused_suppressed_subject=refused, **{stored_by: 1})
        counts.update(outcome.created or {})
        ImportChunk.objects.create(job_id=job_id, number=outcome.number, last_line=outcome.signature[0],
                                   lines=outcome.signature[1], report=dict(counts))
        with report_lock:
            report.update(counts)
            report_snapshot = dict(sorted(report.items()))
        ImportJob.objects.filter(pk=job_id).update(
            rows_read=F("rows_read") + outcome.read,
            rows_inserted=F("rows_inserted") + merged.inserted,
            rows_duplicate=F("rows_duplicate") + outcome.cleaned.duplicates + merged.conflicts,
            rows_rejected=F("rows_rejected") + outcome.quarantined,
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
        _import_job_restart(job_id)  # catalogue rows are upserts: a rerun counts from zero
        return _catalogue_job_execute(job, on_progress)
    return _import_job_execute(
        job,
        lambda: open_event_source(path=Path(job.file_path), fmt=job.format, source=job.source, options=job.options),
        on_progress,
    )


class _ChunkThreads:
    """A stage of an import's pipeline: `count` threads, each with its own database connection,
    taking chunks from a bounded queue while the caller prepares the next ones; the first error is
    raised to the caller. The writers store whole chunks, one transaction each, in primary-key
    order, so two writers never lock the same keys in opposite orders."""

    def __init__(self, count: int, work: Callable[[object], None]):
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=count)
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, name=f"import-store-{n}", daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if not self._errors:
                    try:
                        self._work(item)
                    except BaseException as exc:  # handed to the caller in put()/close()
                        self._errors.append(exc)
        finally:
            connection.close()

    def put(self, item) -> None:
        self._raise_first_error()
        self._queue.put(item)

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
    resumes it from its last committed chunk."""
    try:
        yield
    except Exception as exc:
        if _out_of_space(exc):
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportStatus.FAILED, finished_at=timezone.now(), error=_out_of_space_message(job.pk, exc)[:10_000],
            )
            raise ImportOutOfSpace(str(exc)) from exc
        if isinstance(exc, (OperationalError, InterfaceError)):
            _job_pending_again(job.pk, f"retrying after: {exc}")
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


def _job_pending_again(job_id: int, error: str) -> None:
    """Hand a job whose database went away back to the queue's retry: on a fresh connection, waiting
    up to DATABASE_RECONNECT_WAIT_S for a restarting server. If the server stays away, the job keeps
    its running status and stale heartbeat, and beat's stale-import sweep queues it later."""
    deadline = time.monotonic() + settings.DATABASE_RECONNECT_WAIT_S
    pause = 0.5
    while True:
        connection.close()
        try:
            ImportJob.objects.filter(pk=job_id, status=ImportStatus.RUNNING).update(
                status=ImportStatus.PENDING, error=error[:10_000])
            return
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                return
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _chunks_committed(job_id: int) -> dict[int, tuple[int, int]]:
    """The signature of each chunk a previous run of the job committed, by chunk number."""
    return {number: (last_line, lines) for number, last_line, lines
            in ImportChunk.objects.filter(job_id=job_id).values_list("number", "last_line", "lines")}


def _chunk_signature(frame: pd.DataFrame, chunk) -> tuple[int, int]:
    """Which lines a chunk holds: its last line number and how many lines (rows and malformed lines).
    Not the byte offset: the CSV reader reads ahead, so the offset after a chunk is not where it ends."""
    numbers = [int(frame["_line"].max())] if len(frame) else []
    numbers += [r.line for r in chunk.malformed]
    return (max(numbers, default=-1), len(frame) + len(chunk.malformed))


def _import_job_execute(
    job: ImportJob, open_source: Callable[[], EventSource], on_progress: Callable[[ImportJob], None] | None
) -> ImportJob:
    """Stream a claimed job's source through cleaning into the store, recording the outcome.

    The calling thread reads and cleans chunks; a resolving thread gives them ids, arrival numbers
    and their COPY payload; STORE_THREADS writers (each with its own connection) store them
    meanwhile, so Python and PostgreSQL use both cores. A chunk
    is one transaction with its ImportChunk record, so a crash leaves whole chunks and the next run
    of the job stores only the others; were a chunk stored twice, its deterministic event ids would
    add nothing.
    """
    with _job_outcome_recorded(job, on_progress):
        try:
            _import_job_stream(job, open_source, on_progress, committed=_chunks_committed(job.pk))
        except _ChunkingChanged:
            _import_job_restart(job.pk)
            _import_job_stream(job, open_source, on_progress, committed={})
    return job


def _import_job_stream(job: ImportJob, open_source: Callable[[], EventSource],
                       on_progress: Callable[[ImportJob], None] | None, *,
                       committed: dict[int, tuple[int, int]]) -> None:
    """One pass over the source. A chunk in `committed` (a previous run of this job stored it) is
    read but not stored again; its customer columns still count for the latest attributes."""
    job_id = job.pk
    report: Counter = Counter()
    for counts in ImportChunk.objects.filter(job_id=job_id).values_list("report", flat=True):
        report.update(counts)
    if committed:
        report["chunks_resumed"] = len(committed)
    report_lock = threading.Lock()
    event_source = open_source()
    catalogue_upsert(source=job.source, event_source=event_source, report=report)
    references = bulk.ReferenceIds(job.source)
    attributes = LatestCustomerAttributes(event_source.customer_fields)
    store_mode = _StoreMode(merging=bool(committed))
    writers = _ChunkThreads(
        STORE_THREADS, lambda outcome: _store_chunk(job_id, references, outcome, report, report_lock, store_mode)
    )
    # one thread, so chunks are resolved (and their arrival numbers drawn) in file order
    resolver = _ChunkThreads(1, lambda cleaned_chunk: writers.put(_chunk_outcome(cleaned_chunk, references, job_id)))
    try:
        for number, (frame, chunk) in enumerate(event_source.chunks):
            if number in committed:
                if committed[number] != _chunk_signature(frame, chunk):
                    raise _ChunkingChanged(number)
                if attributes.fields:
                    attributes_only = without_suppressed_subjects(frame, references.source)[0]
                    attributes_only, prior = mapped_chunk_check(attributes_only, event_source)
                    attributes.add(attributes_only,
                                   events_clean(attributes_only, rules=event_source.rules, prior=prior).events)
                continue
            resolver.put(_clean_chunk(frame, chunk, event_source, references, attributes, number))
            if on_progress:
                job.refresh_from_db()
                on_progress(job)
    finally:
        try:
            resolver.close()
        finally:
            writers.close()
    customer_attributes_store(source=job.source, attributes=attributes, report=report)
    ImportJob.objects.filter(pk=job_id).update(report=dict(sorted(report.items())))


CATALOGUE_KINDS = ("customers", "items", "edges")
CATALOGUE_BATCH_ROWS = 5000


def _catalogue_validator(kind: str):
    from ingestion import row_validation

    validators = {"customers": row_validation.CustomerRow, "items": row_validation.ItemRow,
                  "edges": row_validation.SocialEdgeRow}
    if kind not in validators:
        raise SourceError(f"unknown kind {kind!r}; one of events, {', '.join(CATALOGUE_KINDS)}")
    return validators[kind]


def _catalogue_chunks(*, path: Path, fmt: str, options: dict):
    from ingestion.importers import readers

    value_maps_check(options.get("value_maps"))
    chunks = {
        "csv": lambda: readers.read_delimited(path, delimiter=options.get("delimiter", ","), block_bytes=1 << 20),
        "jsonl": lambda: readers.read_jsonl(path, chunk_rows=CATALOGUE_BATCH_ROWS),
        "parquet": lambda: readers.read_parquet(path, chunk_rows=CATALOGUE_BATCH_ROWS),
    }.get(fmt)
    if chunks is None:
        raise SourceError(f"{options['kind']} files must be csv, jsonl or parquet, not {fmt}")
    return chunks()


def _catalogue_job_execute(job: ImportJob, on_progress: Callable[[ImportJob], None] | None) -> ImportJob:
    """A file of customers, items or social edges: each row validated like the API's, invalid rows
    quarantined with line and field errors, valid ones upserted in batches (one transaction each)."""
    kind = job.options["kind"]
    upsert = {
        "customers": lambda rows: customers_upsert(rows=rows, source=job.source),
        "items": lambda rows: items_upsert(rows=rows),
        "edges": lambda rows: social_edges_upsert(rows=rows, source=job.source),
    }.get(kind)
    with _job_outcome_recorded(job, on_progress):
        validator = _catalogue_validator(kind)
        renames = {column: field_name for field_name, column in (job.options.get("mapping") or {}).items()}
        for chunk in _catalogue_chunks(path=Path(job.file_path), fmt=job.format, options=job.options):
            _catalogue_chunk_store(job, chunk, renames, validator, upsert)
            if on_progress:
                job.refresh_from_db()
                on_progress(job)
    return job


def _catalogue_rows_check(options: dict, chunk, renames: dict, validator) -> tuple[list[dict], list[tuple], pd.DataFrame]:
    """Value maps and (customers) the built-in normalisation first, then each remaining row
    validated as the API does: the valid rows, the rejected ones as (position, line, reason,
    external ids named, field errors), and the mapped frame."""
    import json

    frame = chunk.frame.rename(columns=renames).reset_index(drop=True)
    problems = normalise.value_maps_apply(frame, options.get("value_maps") or {})
    if options.get("kind") == "customers":
        problems += normalise.customer_fields_normalise(frame)
    refused: dict[int, dict[str, list[str]]] = {}
    for mask, field_name, message in problems:
        for position in np.flatnonzero(mask):
            refused.setdefault(int(position), {}).setdefault(field_name, []).append(message)
    valid, rejected = [], []
    # one serializer for every row (as a ListSerializer does): a new one per row deep-copies its
    # fields each time, which cost ~4 ms a row
    checker = validator()
    for position, record in enumerate(frame.to_dict("records")):
        line = int(record.pop("_line"))
        row = {k: v for k, v in record.items() if not (v is None or v == "" or (isinstance(v, float) and np.isnan(v)))}
        errors: dict = dict(refused.get(position, {}))
        if not errors and isinstance(row.get("attributes"), str):
            try:
                row["attributes"] = json.loads(row["attributes"])
            except ValueError:
                errors["attributes"] = ["not valid JSON"]
        if not errors:
            try:
                valid.append(checker.run_validation(row))
                continue
            except serializers.ValidationError as exc:
                errors = {f: [str(m) for m in (messages if isinstance(messages, list) else [messages])]
                          for f, messages in exc.detail.items()}
        reason = "; ".join(f"{f}: {', '.join(m)}" for f, m in errors.items())
        subjects = [str(row[f]) for f in ("external_id", "source_id", "target_id") if str(row.get(f, "")).strip()]
        rejected.append((position, line, reason, subjects, errors))
    return valid, rejected, frame


def _catalogue_chunk_store(job: ImportJob, chunk, renames: dict, validator, upsert) -> None:
    """One transaction per chunk: the valid rows upserted, the rejected ones quarantined with one COPY."""
    valid, rejected, frame = _catalogue_rows_check(job.options, chunk, renames, validator)
    raws = chunk.raw([position for position, *_ in rejected]) if rejected else []
    quarantine, quarantined = _quarantine_payload(
        job_id=job.pk, source=job.source,
        lines=[line for _, line, *_ in rejected] + [r.line for r in chunk.malformed],
        raws=raws + [r.raw for r in chunk.malformed],
        reasons=[reason for _, _, reason, *_ in rejected] + [r.reason for r in chunk.malformed],
        subjects=[subjects for _, _, _, subjects, _ in rejected] + [None] * len(chunk.malformed))
    with transaction.atomic(), connection.cursor() as cursor:
        written = upsert(valid) if valid else 0
        bulk.quarantined_rows_copy(cursor, quarantine)
        ImportJob.objects.filter(pk=job.pk).update(
            rows_read=F("rows_read") + len(frame) + len(chunk.malformed),
            rows_inserted=F("rows_inserted") + written,
            rows_rejected=F("rows_rejected") + quarantined,
            progress_done=chunk.bytes_done,
            heartbeat_at=timezone.now(),
        )


def catalogue_upsert(*, source: str, event_source: EventSource, report: Counter) -> None:
    if event_source.catalogue.customers:
        report["customers_upserted"] += customers_upsert(rows=event_source.catalogue.customers, source=source)
    if event_source.catalogue.items:
        report["items_upserted"] += items_upsert(rows=event_source.catalogue.items)


# --- Preview ------------------------------------------------------------------------------------

PREVIEW_SAMPLE_ROWS = 10_000


@dataclass
class ImportPreview:
    """What an import would make of a file's first lines; nothing is written to make it."""

    fields: list[str]  # the fields the mapping fills, in the order shown
    rows: list[dict]  # the first lines: {"line", "values": {field: our value}, "errors": {field: [reasons]}}
    sampled: int  # lines looked at (the first chunk, at most PREVIEW_SAMPLE_ROWS)
    rejected: int  # of those, lines the import would quarantine
    error_counts: dict[str, dict[str, int]]  # field → reason → lines
    value_counts: dict[str, list[tuple[str, str, int]]]  # enumerated field → (file's value, ours or "", lines)


def _value_counts(raw: pd.DataFrame, mapped: pd.DataFrame, fields) -> dict[str, list[tuple[str, str, int]]]:
    from ingestion.cleaning import EVENT_TYPE_ALIASES
    from ingestion.models import EventType

    out = {}
    for field_name in fields:
        if field_name not in raw or field_name not in mapped:
            continue
        ours = mapped[field_name]
        if field_name == "event_type":
            codes = ours.map(lambda v: EVENT_TYPE_ALIASES.get(str(v).strip().lower()) if isinstance(v, str) else None)
            ours = codes.map(lambda c: EventType(int(c)).name.lower() if c is not None and c == c else None)
        pairs = pd.DataFrame({"file": raw[field_name].astype("str").str.strip().fillna(""),
                              "ours": ours.map(lambda v: "" if v is None or v != v else str(v))})
        counts = pairs.value_counts(sort=True)
        out[field_name] = [(str(f), str(o), int(n)) for (f, o), n in counts.head(50).items()]
    return out


def _errors_by_field(rejected: list[tuple[int, dict[str, list[str]]]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for _, errors in rejected:
        for field_name, messages in errors.items():
            for message in messages:
                counts.setdefault(field_name, Counter())[message] += 1
    return {f: dict(c.most_common()) for f, c in counts.items()}


def _shown_value(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def import_preview(*, path: str | Path, fmt: str, source: str | None = None, options: dict,
                   rows: int = 20) -> ImportPreview:
    """The first lines of a file with the mapping, value maps and normalisation applied, each
    line's field errors, the errors counted by field and the values of the enumerated columns
    counted (the file's value beside ours) over the first chunk. Reads only: no job, customer,
    item, event or quarantined row is created."""
    from ingestion.importers.sources import DEFAULT_SOURCES

    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    source = source or DEFAULT_SOURCES.get(fmt, "default")
    kind = options.get("kind", "events")
    if kind != "events":
        validator = _catalogue_validator(kind)
        renames = {column: field_name for field_name, column in (options.get("mapping") or {}).items()}
        chunk = next(iter(_catalogue_chunks(path=path, fmt=fmt, options={**options, "kind": kind})), None)
        if chunk is None:
            return ImportPreview([], [], 0, 0, {}, {})
        chunk.frame = chunk.frame.head(PREVIEW_SAMPLE_ROWS)
        raw = chunk.frame.rename(columns=renames).reset_index(drop=True)
        _, rejected, mapped = _catalogue_rows_check({**options, "kind": kind}, chunk, renames, validator)
        fields = [c for c in mapped.columns if c != "_line" and c in validator().fields]
        errors = [(line, field_errors) for _, line, _, _, field_errors in rejected]
    else:
        event_source = open_event_source(path=path, fmt=fmt, source=source, options=options)
        first = next(iter(event_source.chunks), None)
        if first is None:
            return ImportPreview([], [], 0, 0, {}, {})
        raw = first[0].head(PREVIEW_SAMPLE_ROWS).reset_index(drop=True)
        raw, _ = without_suppressed_subjects(raw, source)
        raw = raw.reset_index(drop=True)
        mapped, prior = mapped_chunk_check(raw, event_source)
        cleaned = events_clean(mapped, rules=event_source.rules, prior=prior)
        fields = [c for c in mapped.columns if c != "_line"]
        errors = [(r.line, r.errors) for r in cleaned.rejected]
    by_line = dict(errors)
    shown = [
        {"line": int(record["_line"]), "values": {f: _shown_value(record.get(f)) for f in fields},
         "errors": by_line.get(int(record["_line"]), {})}
        for record in mapped.head(rows).to_dict("records")
    ]
    return ImportPreview(
        fields=fields, rows=shown, sampled=len(mapped), rejected=len(errors),
        error_counts=_errors_by_field(errors),
        value_counts=_value_counts(raw, mapped, [f for f in normalise.ENUMERATED_FIELDS if f in fields]),
    )


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
