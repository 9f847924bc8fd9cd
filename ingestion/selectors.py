"""Reads of the ingestion app."""

from collections.abc import Iterator

from config.csv_stream import csv_lines
from ingestion.pseudonyms import customer_key
from ingestion.models import Customer, QuarantinedRow


def customer_ids_by_external_id(*, source: str, external_ids) -> list[int]:
    """Database ids of the customers with these external ids in a source namespace (the unknown
    ones left out), sorted."""
    keys = [customer_key(source=source, external_id=str(e)) for e in external_ids]
    return sorted(Customer.objects.filter(key__in=keys).values_list("id", flat=True))


def subject_customer_ids(*, key: str) -> list[int]:
    """The customer with this key and every identity merged into it (an anonymous visitor it was)."""
    merged = Customer.objects.filter(merged_into__key=key).values_list("id", flat=True)
    return sorted({*Customer.objects.filter(key=key).values_list("id", flat=True), *merged})


def customers_profiling_allowed(*, customer_ids: list[int]) -> list[int]:
    """Those of these customers who consent to profiling (restriction of processing withdraws it)."""
    return sorted(Customer.objects.filter(pk__in=customer_ids, consent_profiling=True).values_list("id", flat=True))


def import_job_rejects_csv(*, job) -> Iterator[str]:
    """The job's quarantined rows as CSV lines (line number, reason, raw line), in file order."""
    rows = QuarantinedRow.objects.filter(job=job).order_by("line_number").values_list("line_number", "reason", "raw")
    return csv_lines(["line", "reason", "raw"], rows.iterator(chunk_size=5000))


def import_job_customer_ids(*, import_job_id: int) -> list[int]:
    """The customers who got events from this import."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT customer_id FROM ingestion_event WHERE import_job_id = %s", [import_job_id])
        return [row[0] for row in cursor.fetchall()]
