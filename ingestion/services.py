"""Writes of the ingestion app: import jobs, API batches, customer/item/edge upserts."""

import queue
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from ingestion import bulk
from ingestion.cleaning import (
    FIELDS,
    CleanedEvents,
    CleaningRules,
    RowError,
    events_clean,
)
from ingestion.pseudonyms import anonymous_source, customer_key, pii_encrypt
from ingestion.importers.sources import (
    EventSource,
    SourceError,
    age_band,
    cleaning_rules,
    open_event_source,
)
from ingestion.models import (
    Customer,
    CustomerGroundTruth,
    ImportFormat,
    ImportJob,
    ImportStatus,
    Item,
    QuarantinedRow,
    SocialRelation,
)

# A running job whose heartbeat is older than this is presumed dead and may be claimed again.
STALE_JOB_SECONDS = 300
# Database writer threads per import; with one more thread preparing chunks this fills 2 cores.
STORE_THREADS = 2


# --- Import jobs -------------------------------------------------------------------------------


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
    blank_lines: int
    progress_done: int
    payload: bytes
    rows: int  # events in the payload
    refused: int  # rows of suppressed subjects, dropped before any customer was created
    external_ids: list[str]  # customers of the payload, re-checked against suppression at store time


def _prepare_chunk(frame: pd.DataFrame, chunk, rules: CleaningRules, references: bulk.ReferenceIds) -> _ChunkOutcome:
    # before cleaning, so a suppressed subject's rejected row is not quarantined (kept verbatim)
    frame, refused_raw = _without_suppressed(frame, references.source)
    cleaned = events_clean(frame, rules=rules)
    events, refused = _without_suppressed(cleaned.events, references.source)
    refused += refused_raw
    payload = bulk.events_payload(events=events, references=references) if len(events) else b""
    raw = []
    if cleaned.rejected:
        position_of_line = pd.Series(np.arange(len(frame)), index=frame["_line"].to_numpy())
        positions = [int(position_of_line[r.line]) for r in cleaned.rejected]
        raw = chunk.raw(positions)
    return _ChunkOutcome(
        read=len(frame) + len(chunk.malformed),
        cleaned=cleaned,
        malformed=chunk.malformed,
        raw_for_rejected=raw,
        blank_lines=chunk.blank_lines,
        progress_done=chunk.bytes_done,
        payload=payload,
        rows=len(events),
        refused=refused,
        external_ids=[str(e) for e in events["customer_id"].unique()] if len(events) else [],
    )


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
            QuarantinedRow(job_id=job_id, line_number=r.line, raw=_storable(r.raw), reason=_storable(r.reason))
            for r in outcome.malformed
        ] + [
            QuarantinedRow(job_id=job_id, line_number=r.line, raw=_storable(raw), reason=_storable(r.reason))
            for r, raw in zip(outcome.cleaned.rejected, outcome.raw_for_rejected, strict=True)
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


@contextmanager
def _job_outcome_recorded(job: ImportJob, on_progress: Callable[[ImportJob], None] | None):
    """Record how a claimed job ends: succeeded; failed with the error; or, when the database went
    away, pending again so the task's retry resumes it."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.PENDING, error=f"retrying after: {exc}"[:10_000])
        raise
    except Exception as exc:
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
        quarantine.append(QuarantinedRow(job=job, line_number=line, raw=_storable(chunk.raw([position])[0]), reason=reason))
    quarantine += [
        QuarantinedRow(job=job, line_number=r.line, raw=_storable(r.raw), reason=_storable(r.reason)) for r in chunk.malformed
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


# --- API batches -------------------------------------------------------------------------------


class BatchRejected(Exception):
    """A batch with at least one invalid row; nothing of it was written."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} invalid row(s)")
        self.errors = errors


@dataclass
class BatchResult:
    received: int
    inserted: int
    duplicates: int
    removed: int
    flagged: int
    customer_ids: list[int]  # internal ids of the customers that got new events, sorted
    refused: int = 0  # rows of suppressed subjects: not stored, no customer created


def _without_suppressed(events: pd.DataFrame, source: str) -> tuple[pd.DataFrame, int]:
    """The rows whose subject is not on the suppression list, and how many were dropped. Inside a
    writer's transaction, call it after `ingest_guard`: an erasure running now either sees these
    rows or they see its suppression."""
    from privacy.selectors import suppressed_external_ids

    if not len(events) or "customer_id" not in events:
        return events, 0
    suppressed = suppressed_external_ids(source=source, external_ids=events["customer_id"].dropna().unique())
    if not suppressed:
        return events, 0
    keep = ~events["customer_id"].isin(suppressed)
    return events[keep], int((~keep).sum())


ANONYMOUS_ID_FIELD = "anonymous_id"


def _given(value) -> bool:
    return value is not None and str(value).strip() != ""


def _batch_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame({"_line": []})
    for column in frame.columns:
        if column not in ("context", "_line") and frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else _scalar_text(v))
    return frame


def events_ingest_batch(*, rows: list, source: str = "default") -> BatchResult:
    """Validate a whole batch, then write it in one transaction, or raise BatchRejected listing
    every bad row (by index) with its field errors. Repeated event ids are counted, not errors.

    A row names its customer by exactly one of `customer_id` (an external id of `source`) and
    `anonymous_id` (a visitor not yet identified, kept in the source's anonymous namespace). The
    two groups are cleaned apart, so an anonymous event's derived id lives in that namespace too,
    and stored together."""
    errors = []
    identity_errors = []
    records: dict[bool, list[dict]] = {False: [], True: []}  # keyed by "is anonymous"
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"index": index, "errors": {"row": ["must be a JSON object"]}})
            continue
        unknown = set(row) - set(FIELDS) - {ANONYMOUS_ID_FIELD}
        if unknown:
            errors.append({"index": index, "errors": {name: ["unknown field"] for name in sorted(unknown)}})
        known, anonymous = _given(row.get("customer_id")), _given(row.get(ANONYMOUS_ID_FIELD))
        if known and anonymous:
            identity_errors.append({"index": index, "errors": {ANONYMOUS_ID_FIELD: ["give customer_id or anonymous_id, not both"]}})
        elif not known and not anonymous:
            identity_errors.append({"index": index, "errors": {"customer_id": ["required (or anonymous_id for a visitor not yet identified)"]}})
        record = {**{k: v for k, v in row.items() if k in FIELDS}, "_line": index}
        if anonymous and not known:
            record["customer_id"] = row[ANONYMOUS_ID_FIELD]
        records[anonymous and not known].append(record)
    groups = []
    for is_anonymous, group_records in records.items():
        group_source = anonymous_source(source) if is_anonymous else source
        rules = cleaning_rules(
            source=group_source,
            options={},
            derive_event_id=("customer_id", "event_type", "item_id", "occurred_at", "value", "quantity"),
        )
        cleaned = events_clean(_batch_frame(group_records), rules=rules)
        for rejected in cleaned.rejected:
            field_errors = rejected.errors
            if is_anonymous and "customer_id" in field_errors:
                field_errors = {ANONYMOUS_ID_FIELD if f == "customer_id" else f: m for f, m in field_errors.items()}
            errors.append({"index": rejected.line, "errors": field_errors})
        groups.append((cleaned, bulk.ReferenceIds(group_source)))
    errors += identity_errors  # last, so they replace cleaning's plain "customer_id: required"
    if errors:
        merged: dict[int, dict] = {}
        for e in errors:
            merged.setdefault(e["index"], {}).update(e["errors"])
        raise BatchRejected([{"index": i, "errors": merged[i]} for i in sorted(merged)])
    from privacy.guard import ingest_guard

    refused = 0
    with transaction.atomic(), connection.cursor() as cursor:
        ingest_guard(cursor)
        allowed = []
        for cleaned, references in groups:
            events, refused_here = _without_suppressed(cleaned.events, references.source)
            refused += refused_here
            allowed.append((events, references))
        payload = b"".join(
            bulk.events_payload(events=events, references=references) for events, references in allowed if len(events)
        )
        result = bulk.events_merge_payload(
            payload=payload, rows=sum(len(events) for events, _ in allowed), import_job_id=None, report_customers=True,
        )
    return BatchResult(
        received=len(rows),
        inserted=result.inserted,
        duplicates=sum(cleaned.duplicates for cleaned, _ in groups) + result.conflicts,
        removed=sum(cleaned.removed for cleaned, _ in groups),
        flagged=sum(cleaned.flagged for cleaned, _ in groups),
        customer_ids=result.customer_ids,
        refused=refused,
    )


def _scalar_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return "<object>"  # fails validation of any scalar field with a clear message
    return str(value)


# --- Customers, items, social edges ------------------------------------------------------------

CUSTOMER_FIELDS = (
    "age", "age_band", "gender", "region", "signup_date", "is_loyalty_member", "consent_profiling",
    "consent_marketing", "attributes",
)
PII_FIELDS = {"email": "email_encrypted", "name": "name_encrypted", "phone": "phone_encrypted"}


def customers_upsert(*, rows: Iterable[dict], source: str) -> int:
    """Create or update customers by external id. Only the fields a row carries are updated (a
    repeated id in one batch: later fields win); PII is encrypted before it reaches the database.
    Returns the number of customers written; rows of suppressed subjects are not written."""
    from privacy.selectors import suppressed_external_ids
    from privacy.guard import ingest_guard

    rows = list(rows)
    with transaction.atomic(), connection.cursor() as cursor:
        ingest_guard(cursor)
        refused = suppressed_external_ids(source=source, external_ids=[str(r["external_id"]) for r in rows])
        return _customers_write([r for r in rows if str(r["external_id"]) not in refused], source)


def _customers_write(rows: list[dict], source: str) -> int:
    values_by_key: dict[str, dict] = {}
    for row in rows:
        values = {name: row[name] for name in CUSTOMER_FIELDS if name in row}
        for clear, encrypted in PII_FIELDS.items():
            if clear in row:
                values[encrypted] = pii_encrypt(row[clear])
        if isinstance(values.get("signup_date"), str):
            values["signup_date"] = date.fromisoformat(values["signup_date"])
        if values.get("age") is not None and not values.get("age_band"):
            values["age_band"] = age_band(int(values["age"]))
        values_by_key.setdefault(customer_key(source=source, external_id=str(row["external_id"])), {}).update(values)
    return bulk.upsert_by_key(Customer, "key", values_by_key, {"source": source})


ITEM_FIELDS = ("title", "category_path", "brand", "price", "currency", "attributes")


def items_upsert(*, rows: Iterable[dict]) -> int:
    """Create or update items by SKU; a repeated SKU in one batch: later fields win."""
    values_by_key: dict[str, dict] = {}
    for row in rows:
        values_by_key.setdefault(str(row["sku"]), {}).update({n: row[n] for n in ITEM_FIELDS if n in row})
    return bulk.upsert_by_key(Item, "sku", values_by_key, {})


def social_edges_upsert(*, rows: Iterable[dict], source: str) -> int:
    """rows: {source_id, target_id, relation ('follow'|'referral'|'share'), occurred_at?, weight?}.
    Customers an edge names but the store lacks are created, as for events; self-loops and edges
    touching a suppressed subject are skipped and an edge already stored is left as it is. Returns
    the number of edges offered and not skipped."""
    from privacy.selectors import suppressed_external_ids
    from privacy.guard import ingest_guard

    rows = [r for r in rows if str(r["source_id"]) != str(r["target_id"])]
    if not rows:
        return 0
    relations = {r.name.lower(): r.value for r in SocialRelation}
    references = bulk.ReferenceIds(source)
    with transaction.atomic(), connection.cursor() as cursor:
        ingest_guard(cursor)
        named = {str(r["source_id"]) for r in rows} | {str(r["target_id"]) for r in rows}
        refused = suppressed_external_ids(source=source, external_ids=named)
        rows = [r for r in rows if str(r["source_id"]) not in refused and str(r["target_id"]) not in refused]
        if not rows:
            return 0
        sources = references.customer_ids(cursor, pd.Series([str(r["source_id"]) for r in rows]))
        targets = references.customer_ids(cursor, pd.Series([str(r["target_id"]) for r in rows]))
        bulk.social_edges_copy_insert(
            cursor,
            zip(sources.tolist(), targets.tolist(), (relations[r["relation"]] for r in rows),
                (r.get("occurred_at") for r in rows), (r.get("weight", 1.0) for r in rows), strict=True),
        )
    return len(rows)


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
        keys = {customer_key(source=SYNTHETIC_SOURCE, external_id=str(r["external_id"])): r["external_id"] for r in rows}
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
