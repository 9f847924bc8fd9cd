"""Segment-Spec ingestion against the native API, in one run on one server: the same synthetic events
sent once by segment-analytics-python to POST /v1/batch and once by a plain client to POST
/api/v1/events, with the same batch size (the SDK's upload size, 100 by default) and the same
number of sending threads. Each side has its own customers and event ids, so neither finds the
other's rows. The rounds alternate which side goes first. The SDK's clock runs from the first
`track` call to the end of `flush()`, so its client-side work (queueing, encoding each batch) counts,
as the native client's encoding does. One JSON line last:
{"sdk_events_per_s", "native_events_per_s", "ratio", ...}; target ratio ≥ 0.8.
"""

import argparse
import http.client
import json
import logging
import sys
import time
import uuid
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor

from _setup import django_ready
from api_load import server_start
from ingest_api import free_port

# what a shop's tracking plan sends for each of our event types
SPEC_EVENTS = {"view": "Product Viewed", "add_to_cart": "Product Added", "remove_from_cart": "Product Removed",
               "search": "Products Searched", "click": "Product Clicked", "share": "Product Shared",
               "purchase": "Order Completed", "refund": "Order Refunded", "cancel": "Order Cancelled",
               "rating": "Product Reviewed"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthetic_rows(count: int, seed: int) -> list[dict]:
    from ingestion import generator
    from ingestion.models import EventType

    names = {t.value: t.name.lower() for t in EventType}
    config = generator.ShopConfig(customers=max(100, count // 20), events=count, seed=seed)
    rows = []
    for frame in generator.generate_events(config):
        frame = frame.copy()
        frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for record in frame.to_dict("records"):
            row = {k: v for k, v in record.items() if v is not None and v == v and v != ""}
            if isinstance(row.get("event_type"), int):
                row["event_type"] = names[row["event_type"]]
            rows.append(row)
    return rows[:count]


def native_rows(rows: list[dict], tag: str) -> list[dict]:
    return [{**row, "customer_id": f"{tag}-{row['customer_id']}", "event_id": str(uuid.uuid4())} for row in rows]


def spec_call(row: dict) -> dict:
    """The track call a shop's Segment tracking plan would send for one of our event rows."""
    name = SPEC_EVENTS[row["event_type"]]
    product = {"product_id": row.get("item_id"), "quantity": row.get("quantity", 1)}
    if name == "Order Completed":
        unit = float(row["value"]) / float(row.get("quantity") or 1)
        properties = {"order_id": row.get("order_id"), "currency": row.get("currency"),
                      "products": [{**product, "price": unit}]}
    elif name in ("Order Refunded", "Order Cancelled"):
        properties = {"order_id": row.get("order_id"), "total": row.get("value"), "currency": row.get("currency")}
    else:
        properties = {**product, "price": row.get("value"), "rating": row.get("rating")}
    return {"event": name, "properties": {k: v for k, v in properties.items() if v is not None},
            "timestamp": datetime.fromisoformat(row["timestamp"])}


def native_send(port: int, token: str, rows: list[dict], batch_size: int, threads: int) -> float:
    def post(batch: list[dict]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("POST", "/api/v1/events", body=json.dumps({"events": batch}),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"native: HTTP {response.status}: {payload[:300]!r}")

    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, batches))
    return time.perf_counter() - started


def sdk_send(port: int, token: str, rows: list[dict], tag: str, batch_size: int, threads: int, gzip: bool) -> float:
    from segment.analytics import Client

    errors = []
    client = Client(token, host=f"http://127.0.0.1:{port}", upload_size=batch_size, thread=threads, gzip=gzip,
                    max_queue_size=len(rows) + 1, max_retries=0,
                    on_error=lambda exc, batch: errors.append(f"{exc} ({len(batch)} messages)"))
    calls = [spec_call(row) for row in rows]
    started = time.perf_counter()
    for row, call in zip(rows, calls, strict=True):
        client.track(user_id=f"{tag}-{row['customer_id']}", message_id=str(uuid.uuid4()), **call)
    client.flush()
    elapsed = time.perf_counter() - started
    client.shutdown()
    if errors:
        raise RuntimeError(f"sdk: {len(errors)} failed uploads, first: {errors[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="events per side per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100, help="events per request, both sides")
    parser.add_argument("--threads", type=int, default=2, help="sending threads, both sides")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--gzip", action="store_true", help="the SDK compresses its batches")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("segment").setLevel(logging.CRITICAL)  # failures are counted through on_error

    django_ready()
    from access.services import api_token_create
    from ingestion.models import Event

    _, token = api_token_create(name="bench-sdk", scopes=["events:write"], requests_per_minute=100_000_000)
    rows = synthetic_rows(args.events, args.seed)
    # the SDK's 32 KB per message and a purchase's derived per-line id do not change the count: one
    # Order Completed with one product is one purchase
    port = free_port()
    server = server_start(port, args.workers)
    native_s, sdk_s, stored_before = 0.0, 0.0, Event.objects.count()
    try:
        warm = native_rows(rows[:200], "warm")
        native_send(port, token, warm, args.batch_size, args.threads)
        sdk_send(port, token, rows[:200], "warm-sdk", args.batch_size, args.threads, args.gzip)
        stored_before = Event.objects.count()
        for r in range(args.rounds):
            sides = ["native", "sdk"] if r % 2 == 0 else ["sdk", "native"]
            for side in sides:
                if side == "native":
                    elapsed = native_send(port, token, native_rows(rows, f"n{r}"), args.batch_size, args.threads)
                    native_s += elapsed
                else:
                    elapsed = sdk_send(port, token, rows, f"s{r}", args.batch_size, args.threads, args.gzip)
                    sdk_s += elapsed
                log(f"round {r + 1} {side}: {len(rows) / elapsed:,.0f} events/s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    stored = Event.objects.count() - stored_before
    sent = 2 * args.rounds * len(rows)
    sdk_rate = args.rounds * len(rows) / sdk_s
    native_rate = args.rounds * len(rows) / native_s
    print(json.dumps({
        "sdk_events_per_s": round(sdk_rate),
        "native_events_per_s": round(native_rate),
        "ratio": round(sdk_rate / native_rate, 3),
        "target_ratio": 0.8,
        "events_per_side": args.rounds * len(rows),
        "stored": stored,
        "sent": sent,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "server_workers": args.workers,
        "sdk_gzip": args.gzip,
    }))


if __name__ == "__main__":
    main()
