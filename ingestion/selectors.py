"""Reads of the ingestion app."""

import csv
from collections.abc import Iterator

from ingestion.identity import customer_key
from ingestion.models import Customer, QuarantinedRow


def customer_ids_by_external_id(*, source: str, external_ids) -> list[int]:
    """Database ids of the customers with these external ids in a source namespace (the unknown
    ones left out), sorted."""
    keys = [customer_key(source=source, external_id=str(e)) for e in external_ids]
    return sorted(Customer.objects.filter(key__in=keys).values_list("id", flat=True))


class _Line:
    def write(self, value: str) -> str:
        return value


def import_job_rejects_csv(*, job) -> Iterator[str]:
    """The job's quarantined rows as CSV lines (line number, reason, raw line), in file order."""
    writer = csv.writer(_Line())
    yield writer.writerow(["line", "reason", "raw"])
    rows = QuarantinedRow.objects.filter(job=job).order_by("line_number").values_list("line_number", "reason", "raw")
    for line_number, reason, raw in rows.iterator(chunk_size=5000):
        yield writer.writerow([line_number, reason, raw])
