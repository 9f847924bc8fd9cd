import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.cleaning import FIELDS
from ingestion.importers.sources import SourceError
from ingestion.models import ImportFormat
from ingestion.selectors import import_job_customer_ids
from pipeline import flows
from ingestion.import_jobs import ImportOutOfSpace, import_job_create, import_job_run


def _pairs(values: list[str], flag: str, known: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or name not in known:
            raise CommandError(f"{flag} expects FIELD=VALUE with FIELD one of {', '.join(known)}; got {value!r}")
        pairs[name] = target
    return pairs


def _row_fields(kind: str) -> list[str]:
    from ingestion import row_validation

    validator = {"customers": row_validation.CustomerRow, "items": row_validation.ItemRow, "edges": row_validation.SocialEdgeRow}[kind]
    return list(validator().fields)


class Command(BaseCommand):
    help = (
        "Import a file of events (CSV, JSONL, Parquet, CDNOW, MovieLens) or of customers, items or social "
        "edges (--kind) in the foreground with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--format", required=True, choices=[f for f in ImportFormat.values if f not in ("api", "synthetic")])
        parser.add_argument("--source", help="namespace of external ids (default: the format's, or 'default')")
        parser.add_argument("--kind", default="events", choices=["events", "customers", "items", "edges"],
                            help="what the file holds (customers/items/edges: csv, jsonl or parquet)")
        parser.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", help="column mapping")
        parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="constant for a field")
        parser.add_argument("--mapping-file", help="JSON file with {'mapping': {...}, 'constants': {...}, ...}")
        parser.add_argument("--delimiter")
        parser.add_argument("--timestamp-format", help="'unix', 'unix_ms' or a strftime format (default ISO 8601)")
        parser.add_argument("--timezone", help="time zone of timestamps without an offset (default UTC)")
        parser.add_argument("--currency", help="currency of values without one")
        parser.add_argument("--no-profiles", action="store_true",
                            help="leave profiles alone (by default the imported customers are refreshed here, or "
                                 "all profiles built when there are none yet or too many customers to refresh)")

    def handle(self, *args, **opts):
        options: dict = {}
        if opts["mapping_file"]:
            options.update(json.loads(Path(opts["mapping_file"]).read_text()))
        known = FIELDS if opts["kind"] == "events" else tuple(_row_fields(opts["kind"]))
        options.setdefault("mapping", {}).update(_pairs(opts["map"], "--map", known))
        options.setdefault("constants", {}).update(_pairs(opts["set"], "--set", known))
        if opts["kind"] != "events":
            options["kind"] = opts["kind"]
        for key, name in (("delimiter", "delimiter"), ("timestamp_format", "timestamp_format"),
                          ("timezone", "timezone"), ("default_currency", "currency")):
            if opts[name]:
                options[key] = opts[name]
        try:
            job = import_job_create(path=opts["path"], fmt=opts["format"], source=opts["source"], options=options)
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        bar = tqdm(total=job.progress_total, unit="B", unit_scale=True, desc=f"import #{job.pk}", disable=None)

        def on_progress(current):
            bar.update(current.progress_done - bar.n)
            bar.set_postfix(inserted=current.rows_inserted, rejected=current.rows_rejected)

        try:
            job = import_job_run(job_id=job.pk, on_progress=on_progress)
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        except ImportOutOfSpace as exc:  # the job's error says what was committed and what to do
            job.refresh_from_db()
            raise CommandError(job.error) from exc
        finally:
            bar.close()
        self.stdout.write(
            f"import #{job.pk} {job.status}: read {job.rows_read}, inserted {job.rows_inserted}, "
            f"duplicates {job.rows_duplicate}, rejected {job.rows_rejected} (quarantined with line numbers), "
            f"removed by cleaning {job.rows_removed}, flagged {job.rows_flagged} in {job.duration_s:.1f}s"
        )
        for rule, count in job.report.items():
            if count:
                self.stdout.write(f"  {rule}: {count}")
        if job.rows_inserted and not opts["no_profiles"]:
            outcome = flows.events_landed(customer_ids=import_job_customer_ids(import_job_id=job.pk), bulk=True)
            self.stdout.write(f"profiles: {outcome['action']} for {outcome['customers']} customers")
