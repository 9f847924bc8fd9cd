"""SQL mechanics of bulk event writes: COPY a cleaned chunk into a session-local staging table,
then merge it into the store with INSERT … ON CONFLICT DO NOTHING, all inside the caller's
transaction. Customers and items the chunk mentions but the store lacks are created on the way,
so an event never waits for (or loses to) a late catalogue feed.
"""

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from django.db import connection

STAGE_COLUMNS = (
    "event_id", "customer_key", "item_sku", "event_type", "occurred_at", "quantity", "value", "currency",
    "rating", "session_id", "channel", "device", "order_id", "context", "flags",
)

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage_event (
    event_id uuid, customer_key text, item_sku text, event_type smallint, occurred_at timestamptz,
    quantity integer, value numeric(14, 2), currency text, rating double precision, session_id text,
    channel text, device text, order_id text, context jsonb, flags smallint
) ON COMMIT DELETE ROWS
"""

_MERGE_CUSTOMERS = """
INSERT INTO ingestion_customer (key, source)
SELECT DISTINCT customer_key, %s FROM ingest_stage_event ORDER BY 1
ON CONFLICT (key) DO NOTHING
"""

_MERGE_ITEMS = """
INSERT INTO ingestion_item (sku)
SELECT DISTINCT item_sku FROM ingest_stage_event WHERE item_sku IS NOT NULL ORDER BY 1
ON CONFLICT (sku) DO NOTHING
"""

_MERGE_EVENTS = """
INSERT INTO ingestion_event (
    event_id, customer_id, item_id, event_type, occurred_at, quantity, value, currency, rating,
    session_id, channel, device, order_id, context, flags, import_job_id
)
SELECT s.event_id, c.id, i.id, s.event_type, s.occurred_at, s.quantity, s.value, s.currency, s.rating,
       s.session_id, s.channel, s.device, s.order_id, s.context, s.flags, %s
FROM ingest_stage_event s
JOIN ingestion_customer c ON c.key = s.customer_key
LEFT JOIN ingestion_item i ON i.sku = s.item_sku
ON CONFLICT (event_id) DO NOTHING
"""


@dataclass
class MergeResult:
    inserted: int
    conflicts: int  # already in the store: an idempotent retry or re-import
    customers_created: int
    items_created: int


def _strings(column: pd.Series) -> pa.Array:
    values = column.to_numpy(dtype=object)
    return pa.array(np.where(pd.isna(values), None, values), pa.string())


def _chunk_as_csv(events: pd.DataFrame, customer_keys: np.ndarray) -> bytes:
    table = pa.table(
        {
            "event_id": _strings(events["event_id"]),
            "customer_key": pa.array(customer_keys, pa.string()),
            "item_sku": _strings(events["item_id"]),
            "event_type": pa.array(events["event_type"].to_numpy(dtype="int16"), pa.int16()),
            "occurred_at": pa.array(events["occurred_at"]),
            "quantity": pa.array(events["quantity"].to_numpy(dtype="int64"), pa.int64()),
            "value": pa.array(events["value"].to_numpy(dtype="float64"), pa.float64(), from_pandas=True),
            "currency": _strings(events["currency"]),
            "rating": pa.array(events["rating"].to_numpy(dtype="float64"), pa.float64(), from_pandas=True),
            "session_id": _strings(events["session_id"]),
            "channel": _strings(events["channel"]),
            "device": _strings(events["device"]),
            "order_id": _strings(events["order_id"]),
            "context": _strings(events["context"]),
            "flags": pa.array(events["flags"].to_numpy(dtype="int16"), pa.int16()),
        }
    )
    buffer = io.BytesIO()
    # pyarrow quotes every string and leaves nulls unquoted-empty: exactly PostgreSQL's CSV rules
    # for '' versus NULL.
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def events_copy_merge(*, events: pd.DataFrame, customer_keys: np.ndarray, source: str, import_job_id: int | None) -> MergeResult:
    """Must run inside a transaction (the staging table empties at commit)."""
    if events.empty:
        return MergeResult(0, 0, 0, 0)
    payload = _chunk_as_csv(events, customer_keys)
    with connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        with cursor.copy(f"COPY ingest_stage_event ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(payload)
        cursor.execute(_MERGE_CUSTOMERS, [source])
        customers_created = cursor.rowcount
        cursor.execute(_MERGE_ITEMS)
        items_created = cursor.rowcount
        cursor.execute(_MERGE_EVENTS, [import_job_id])
        inserted = cursor.rowcount
    return MergeResult(inserted, len(events) - inserted, customers_created, items_created)
