"""Writes of the ingestion app from the API and other apps: event batches and customer, item and
social-edge upserts. File imports run in `ingestion.import_jobs`."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import pandas as pd
from django.db import connection, transaction
from django.db.models import F

from ingestion import bulk
from ingestion.cleaning import (
    FIELDS,
    events_clean,
)
from ingestion.pseudonyms import anonymous_source, pii_decrypt, pii_encrypt, pseudonym_key_id
from ingestion.selectors import customer_keys_resolve
from ingestion.importers.sources import (
    age_band,
    cleaning_rules,
)
from ingestion.models import (
    Customer,
    Item,
    RefreshOutbox,
    SocialRelation,
)



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
    outbox_id: int | None = None  # the refresh these customers are owed (RefreshOutbox), None if none


def without_suppressed_subjects(events: pd.DataFrame, source: str, token_cache: dict | None = None) -> tuple[pd.DataFrame, int]:
    """The rows whose subject is not on the suppression list, and how many were dropped. Inside a
    writer's transaction, call it after `ingest_guard`: an erasure running now either sees these
    rows or they see its suppression. `token_cache`: see privacy.selectors.suppressed_external_ids."""
    from privacy.selectors import suppressed_external_ids

    if not len(events) or "customer_id" not in events:
        return events, 0
    suppressed = suppressed_external_ids(source=source, external_ids=events["customer_id"].dropna().unique(),
                                         token_cache=token_cache)
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
            events, refused_here = without_suppressed_subjects(cleaned.events, references.source)
            refused += refused_here
            allowed.append((events, references))
        tables = [bulk.events_table(events=events, references=references) for events, references in allowed if len(events)]
        result = bulk.events_merge_payload(
            payload=bulk.events_payload_encode(tables) if tables else b"",
            rows=sum(len(events) for events, _ in allowed), report_customers=True,
        )
        outbox_id = refresh_outbox_add(customer_ids=result.customer_ids)
    return BatchResult(
        received=len(rows),
        inserted=result.inserted,
        duplicates=sum(cleaned.duplicates for cleaned, _ in groups) + result.conflicts,
        removed=sum(cleaned.removed for cleaned, _ in groups),
        flagged=sum(cleaned.flagged for cleaned, _ in groups),
        customer_ids=result.customer_ids,
        refused=refused,
        outbox_id=outbox_id,
    )


# --- The refresh outbox ----------------------------------------------------------------------------

def refresh_outbox_add(*, customer_ids: list[int], bulk: bool = False) -> int | None:
    """Record, inside the caller's transaction (the one that stores the events), that these
    customers owe a profile refresh. Returns the entry's id, None when there are no customers."""
    if not customer_ids:
        return None
    return RefreshOutbox.objects.create(customer_ids=sorted({int(c) for c in customer_ids}), bulk=bulk).pk


def refresh_outbox_claim(*, ids: list[int] | None = None, limit: int = 100) -> list[RefreshOutbox]:
    """Inside a transaction: lock up to `limit` outbox entries (these ids, or the oldest), skipping
    those another drain holds, so two drains never queue the same entry at once."""
    entries = RefreshOutbox.objects.order_by("pk")
    if ids is not None:
        entries = entries.filter(pk__in=ids)
    return list(entries.select_for_update(skip_locked=True)[:limit])


def refresh_outbox_delete(*, ids: list[int]) -> int:
    """The entries' refreshes are on the broker: forget them. Returns how many were deleted."""
    return RefreshOutbox.objects.filter(pk__in=ids).delete()[0]


def refresh_outbox_failed(*, ids: list[int], error: str) -> int:
    """Queueing these entries failed (the broker is away): count the attempt and keep the reason."""
    return RefreshOutbox.objects.filter(pk__in=ids).update(attempts=F("attempts") + 1, last_error=error[:2000])


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
    Returns the number of customers written; rows of suppressed subjects are not written, and a
    subject who restricted processing stays opted out of profiling whatever the row says."""
    from privacy.selectors import restricted_external_ids, suppressed_external_ids
    from privacy.guard import ingest_guard

    rows = list(rows)
    with transaction.atomic(), connection.cursor() as cursor:
        ingest_guard(cursor)
        external_ids = [str(r["external_id"]) for r in rows]
        refused = suppressed_external_ids(source=source, external_ids=external_ids)
        restricted = restricted_external_ids(source=source, external_ids=external_ids)
        rows = [{**r, "consent_profiling": False} if str(r["external_id"]) in restricted else r
                for r in rows if str(r["external_id"]) not in refused]
        return _customers_write(rows, source)


def _customers_write(rows: list[dict], source: str) -> int:
    # a customer made under an older pseudonym key is updated under its key, never made again
    key_of = customer_keys_resolve(source=source, external_ids=[str(row["external_id"]) for row in rows])
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
        values_by_key.setdefault(key_of[str(row["external_id"])], {}).update(values)
    return bulk.customers_upsert_by_key(values_by_key, source=source, key_id=pseudonym_key_id())


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


# --- Erasure and restriction (called by privacy requests) ----------------------------------------

# Every relation to Customer in this app's models, and the erase service below that deletes its
# rows (privacy.erasure checks that each such relation in every app is covered or exempted).
CUSTOMER_RELATIONS_ERASED = {
    "ingestion.Customer.merged_into": "customers_erase",
    "ingestion.CustomerKey.customer": "customers_erase",
    "ingestion.Event.customer": "customers_erase",
    "ingestion.CustomerGroundTruth.customer": "customers_erase",
    "ingestion.SocialEdge.source_customer": "social_edges_erase",
    "ingestion.SocialEdge.target_customer": "social_edges_erase",
}


def quarantined_rows_erase(*, subject_tokens: list[str], identifiers: list[str], mentions) -> int:
    """Delete quarantined rows that name the subject: by the customer tokens stored beside each row,
    then (the rows are encrypted) by decrypting the rest and matching `identifiers` in their text
    (`mentions(text, identifier)` decides: a whole token, not a substring), which finds an email or
    phone in a row whose id column was broken. Rows live only QUARANTINE_RETENTION_DAYS, which
    bounds the scan. Returns the rows deleted."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingestion_quarantinedrow WHERE subject_tokens && %s::varchar[]", [subject_tokens])
        removed = cursor.rowcount
        cursor.execute("SELECT id, raw_encrypted FROM ingestion_quarantinedrow")
        ids = [pk for pk, raw in cursor.fetchall()
               if any(mentions(pii_decrypt(raw) or "", identifier) for identifier in identifiers)]
        if ids:
            cursor.execute("DELETE FROM ingestion_quarantinedrow WHERE id = ANY(%s)", [ids])
            removed += cursor.rowcount
    return removed


def quarantined_rows_purge(*, older_than) -> int:
    """Delete rejected rows quarantined before `older_than` (the retention period); returns how many."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingestion_quarantinedrow WHERE created_at < %s", [older_than])
        return cursor.rowcount


def social_edges_erase(*, customer_ids: list[int]) -> int:
    """Delete every social edge at either end of these customers; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingestion_socialedge WHERE source_customer_id = ANY(%s) "
                       "OR target_customer_id = ANY(%s)", [customer_ids, customer_ids])
        return cursor.rowcount


def customers_erase(*, customer_ids: list[int]) -> dict[str, int]:
    """Delete these customers with their events and ground truth (a set-based delete, counted for
    the receipt, where the ORM cascade would go one row at a time). Call it last: the rows of other
    apps that reference them go first. Returns the rows deleted per table."""
    counts = {}
    with connection.cursor() as cursor:
        for name, table in (("events", "ingestion_event"), ("ground_truth", "ingestion_customergroundtruth")):
            cursor.execute(f"DELETE FROM {table} WHERE customer_id = ANY(%s)", [customer_ids])  # noqa: S608
            counts[name] = cursor.rowcount
        cursor.execute("UPDATE ingestion_customer SET merged_into_id = NULL WHERE merged_into_id = ANY(%s)", [customer_ids])
        cursor.execute("DELETE FROM ingestion_customer WHERE id = ANY(%s)", [customer_ids])
        counts["customers"] = cursor.rowcount
        cursor.execute("DELETE FROM ingestion_customerkey WHERE customer_id = ANY(%s)", [customer_ids])
        # no refresh owed in the outbox names an erased customer any more
        cursor.execute(
            "UPDATE ingestion_refreshoutbox SET customer_ids = ARRAY(SELECT unnest(customer_ids) EXCEPT "
            "SELECT unnest(%s::bigint[]) ORDER BY 1) WHERE customer_ids && %s::bigint[]", [customer_ids, customer_ids])
        cursor.execute("DELETE FROM ingestion_refreshoutbox WHERE cardinality(customer_ids) = 0")
    return counts


def customer_consent_give(*, customer_ids: list[int]) -> int:
    """A lifted restriction: the customers consent to profiling again (the next build or refresh
    profiles them). Returns the customers updated."""
    return Customer.objects.filter(pk__in=customer_ids).update(consent_profiling=True)


def customer_consent_withdraw(*, customer_ids: list[int]) -> int:
    """Profiling opt-out: the customers stay (orders may need their events), every read, training run
    and fit leaves them out. Returns the customers updated."""
    return Customer.objects.filter(pk__in=customer_ids).update(consent_profiling=False)
