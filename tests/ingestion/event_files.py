"""Event files for the fault tests: distinct, valid events that no cleaning rule touches."""

from datetime import UTC, datetime, timedelta
from pathlib import Path


def distinct_events_file(path: Path, rows: int) -> Path:
    """`rows` distinct, valid events and two bad rows (a bad date, an unknown type): 600 customers,
    one event a minute across the file (ten hours apart per customer), so no cleaning rule fires."""
    lines = ["customer_id,item_id,event_type,timestamp,value"]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(rows):
        stamp = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind, value = ("purchase", f"{5 + i % 50}.00") if i % 4 == 0 else ("view", "")
        lines.append(f"k{i % 600},sku-{i % 97},{kind},{stamp},{value}")
    lines += ["k1,sku-1,view,not-a-date,", "k2,sku-2,teleport,2025-01-01T00:00:00Z,"]
    path.write_text("\n".join(lines) + "\n")
    return path
