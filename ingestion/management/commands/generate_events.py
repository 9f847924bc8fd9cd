import json
from pathlib import Path

from django.core.management.base import BaseCommand
from tqdm import tqdm

from ingestion.models import Customer


class Command(BaseCommand):
    help = (
        "Generate a synthetic shop with ground truth (latent segment per customer) and load it into the "
        "store, or with --output write its events to a CSV file (streamed; 1M customers / 50M events fit)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=10_000)
        parser.add_argument("--events", type=int, default=500_000)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--output", help="write events to this CSV instead of loading the store")
        parser.add_argument("--if-empty", action="store_true", help="do nothing when customers already exist")

    def handle(self, *args, **opts):
        if opts["output"]:
            written = write_events_csv(Path(opts["output"]), customers=opts["customers"], events=opts["events"], seed=opts["seed"])
            self.stdout.write(f"wrote {written} events to {opts['output']}")
            return
        if opts["if_empty"] and Customer.objects.exists():
            self.stdout.write("customers exist; demo data left as it is")
            return
        from ingestion.import_jobs import synthetic_shop_load

        bar = tqdm(total=opts["events"], unit="ev", unit_scale=True, desc="synthetic shop", disable=None)

        def on_progress(job):
            bar.update(job.progress_done - bar.n)

        try:
            job = synthetic_shop_load(customers=opts["customers"], events=opts["events"], seed=opts["seed"], on_progress=on_progress)
        finally:
            bar.close()
        self.stdout.write(
            f"synthetic shop loaded (import #{job.pk}): {job.rows_inserted} events inserted, {job.rows_duplicate} "
            f"already present, {job.rows_removed} removed by cleaning, {job.rows_flagged} flagged, "
            f"{job.rows_rejected} rejected, in {job.duration_s:.1f}s"
        )


CSV_COLUMNS = ["event_id", "customer_id", "item_id", "event_type", "timestamp", "quantity", "value", "currency",
               "rating", "session_id", "channel", "device", "order_id", "context"]


def write_events_csv(path: Path, *, customers: int, events: int, seed: int) -> int:
    from ingestion import generator

    config = generator.ShopConfig(customers=customers, events=events, seed=seed)
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for index, frame in enumerate(generator.generate_events(config)):
            frame = frame[CSV_COLUMNS].copy()
            frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            frame["context"] = frame["context"].map(lambda c: json.dumps(c, ensure_ascii=False) if c else "")
            frame.to_csv(handle, header=index == 0, index=False)
            written += len(frame)
    return written
