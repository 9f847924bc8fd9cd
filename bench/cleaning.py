"""CPU cost of reading and cleaning a generated event CSV, without a database.

Generates N events to a CSV (or reuses --path when it exists), reads it with the product's CSV
source and cleans every chunk with `events_clean`, timing each part in process CPU
(`time.process_time`): the import's Python cost per file, apart from the store. Prints one JSON
line last.

    DEBUG=1 python bench/cleaning.py [--events N] [--path FILE]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--path", type=Path, help="the CSV to read; generated there first when missing")
    args = parser.parse_args()

    import django

    django.setup()
    from ingestion.cleaning import events_clean
    from ingestion.importers.sources import open_event_source
    from ingestion.management.commands.generate_events import write_events_csv

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "events.csv"
        if not path.exists():
            write_events_csv(path, customers=args.customers, events=args.events, seed=args.seed)
        source = open_event_source(path=path, fmt="csv", source="bench", options={})
        rows = kept = rejected = 0
        read_s = clean_s = 0.0
        chunks = iter(source.chunks)
        while True:
            started = time.process_time()
            try:
                frame, _ = next(chunks)
            except StopIteration:
                break
            read_s += time.process_time() - started
            started = time.process_time()
            cleaned = events_clean(frame, rules=source.rules)
            clean_s += time.process_time() - started
            rows += len(frame)
            kept += len(cleaned.events)
            rejected += len(cleaned.rejected_lines)

    print(json.dumps({"rows": rows, "kept": kept, "rejected": rejected,
                      "read_cpu_s": round(read_s, 3), "clean_cpu_s": round(clean_s, 3),
                      "total_cpu_s": round(read_s + clean_s, 3)}))


if __name__ == "__main__":
    main()
