import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.importers.sources import EVENT_FILE_FIELDS, SourceError
from ingestion.normalise import value_map_option_parse
from ingestion.models import ImportFormat
from ingestion.selectors import import_job_customer_ids
from pipeline import flows
from ingestion.import_jobs import ImportOutOfSpace, ImportPreview, import_job_create, import_job_run, import_preview


def _pairs(values: list[str], flag: str, known: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or name not in known:
            raise CommandError(f"{flag} expects FIELD=VALUE with FIELD one of {', '.join(known)}; got {value!r}")
        pairs[name] = target
    return pairs


def _value_maps(values: list[str], known: tuple[str, ...], mapping: dict) -> dict[str, dict[str, str]]:
    """--value-map FIELD=[COLUMN:]SOURCE=OURS,...: the map, and the column (if named) into `mapping`."""
    maps = {}
    for value in values:
        try:
            name, column, table = value_map_option_parse(value)
        except ValueError as exc:
            raise CommandError(f"--value-map {exc}") from exc
        if name not in known:
            raise CommandError(f"--value-map: unknown field {name!r}; one of {', '.join(known)}")
        if column is not None:
            if mapping.get(name, column) != column:
                raise CommandError(f"--value-map names column {column!r} for {name}, --map names {mapping[name]!r}")
            mapping[name] = column
        maps.setdefault(name, {}).update(table)
    return maps


def preview_lines(preview: ImportPreview) -> list[str]:
    """The dry run's report: first lines with our values and their errors, errors by field, and
    the values of the enumerated columns beside ours."""
    lines = [f"dry run: nothing was written. {preview.sampled} lines looked at (the first chunk); "
             f"{preview.rejected} would be quarantined."]
    if preview.rows:
        lines.append("first lines, as they would be imported:")
        lines.append("\t".join(["line", *preview.fields]))
        for row in preview.rows:
            lines.append("\t".join([str(row["line"]), *(row["values"][f] for f in preview.fields)]))
            for field_name, messages in row["errors"].items():
                lines.append(f"\t! {field_name}: {'; '.join(messages)}")
    if preview.error_counts:
        lines.append("errors by field (lines):")
        for field_name, reasons in preview.error_counts.items():
            for reason, count in reasons.items():
                lines.append(f"  {field_name}: {reason}: {count}")
    if preview.value_counts:
        lines.append("values of enumerated columns (in the file → ours: lines; ours empty = refused):")
        for field_name, values in preview.value_counts.items():
            shown = "; ".join(f"{file_value or '(empty)'} → {ours or '—'}: {count}" for file_value, ours, count in values)
            lines.append(f"  {field_name}: {shown}")
    return lines


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
        parser.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                            help="column mapping; an event file may also map customer columns (age, gender, "
                                 "is_loyalty_member, …): each customer keeps the values of their latest line")
        parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="constant for a field")
        parser.add_argument("--value-map", action="append", default=[], metavar="FIELD=[COLUMN:]SOURCE=OURS,...",
                            help='our value for each of the file\'s values of a field, e.g. event_type="Order Status":'
                                 "Completed=purchase,Cancelled=cancellation (a value it lacks is quarantined)")
        parser.add_argument("--dry-run", action="store_true",
                            help="show the first lines as they would be imported, the errors and the values of "
                                 "enumerated columns; write nothing")
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
        known = EVENT_FILE_FIELDS if opts["kind"] == "events" else tuple(_row_fields(opts["kind"]))
        options.setdefault("mapping", {}).update(_pairs(opts["map"], "--map", known))
        options.setdefault("constants", {}).update(_pairs(opts["set"], "--set", known))
        for name, table in _value_maps(opts["value_map"], known, options["mapping"]).items():
            options.setdefault("value_maps", {}).setdefault(name, {}).update(table)
        if opts["kind"] != "events":
            options["kind"] = opts["kind"]
        for key, name in (("delimiter", "delimiter"), ("timestamp_format", "timestamp_format"),
                          ("timezone", "timezone"), ("default_currency", "currency")):
            if opts[name]:
                options[key] = opts[name]
        if opts["dry_run"]:
            try:
                preview = import_preview(path=opts["path"], fmt=opts["format"], source=opts["source"], options=options)
            except SourceError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write("\n".join(preview_lines(preview)))
            return
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
