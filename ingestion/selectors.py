"""Reads of the ingestion app."""

import re
from collections.abc import Iterator

from config.csv_stream import csv_lines
from django.conf import settings

from ingestion.pseudonyms import customer_key, customer_keys, pii_decrypt
from ingestion.models import Customer, ImportJob, ImportStatus, QuarantinedRow


def customer_keys_resolve(*, source: str, external_ids) -> dict[str, str]:
    """External id → the key of its stored customer, under whichever key of PSEUDONYM_KEYS it was
    made, or (no customer yet) the key a new one gets, under the newest. One query while the ring
    has older keys, none while it has one: a customer is never created twice across a rotation."""
    external_ids = {str(e) for e in external_ids}
    newest = {e: customer_key(source=source, external_id=e) for e in external_ids}
    if len(settings.PSEUDONYM_KEYS) == 1 or not external_ids:
        return newest
    external_id_of = {k: e for e in external_ids for k in customer_keys(source=source, external_id=e)}
    stored = Customer.objects.filter(key__in=list(external_id_of)).values_list("key", flat=True)
    return {**newest, **{external_id_of[k]: k for k in stored}}


def customer_key_resolve(*, source: str, external_id: str) -> str:
    return customer_keys_resolve(source=source, external_ids=[external_id])[str(external_id)]


def customer_by_external_id(*, source: str, external_id: str) -> Customer | None:
    """The stored customer with this external id, under any pseudonym key of the ring."""
    return Customer.objects.filter(key__in=customer_keys(source=source, external_id=str(external_id))).first()


def customer_ids_by_external_id(*, source: str, external_ids) -> list[int]:
    """Database ids of the customers with these external ids in a source namespace (the unknown
    ones left out), sorted; a customer made under any pseudonym key of the ring is found."""
    keys = [k for e in external_ids for k in customer_keys(source=source, external_id=str(e))]
    return sorted(Customer.objects.filter(key__in=keys).values_list("id", flat=True))


def subject_customer_ids(*, keys: list[str]) -> list[int]:
    """The customer with one of these keys and every identity merged into it (an anonymous visitor it was)."""
    # two lookups, not a self-join: a join of customers on merged_into crosses shards (README "Scale-out")
    ids = set(Customer.objects.filter(key__in=keys).values_list("id", flat=True))
    return sorted(ids | set(Customer.objects.filter(merged_into_id__in=ids).values_list("id", flat=True)))


def customers_profiling_allowed(*, customer_ids: list[int]) -> list[int]:
    """Those of these customers who consent to profiling (restriction of processing withdraws it)."""
    return sorted(Customer.objects.filter(pk__in=customer_ids, consent_profiling=True).values_list("id", flat=True))


def quarantined_row_raw(*, row: QuarantinedRow, clear: bool) -> str:
    """The rejected row as read (decrypted) when `clear`, else masked: its shape without its values."""
    text = pii_decrypt(row.raw_encrypted) or ""
    return text if clear else raw_masked(text)


def raw_masked(text: str) -> str:
    """Every letter and digit as `*`, separators and punctuation kept: enough to see which field is
    empty or malformed, nothing of what it said."""
    return re.sub(r"\w", "*", text)


def import_job_rejects_csv(*, job, clear: bool = False) -> Iterator[str]:
    """The job's quarantined rows as CSV lines (line number, reason, raw line), in file order; the
    raw line decrypted only when `clear` (Compliance), masked otherwise."""
    rows = (QuarantinedRow.objects.filter(job=job).order_by("line_number")
            .values_list("line_number", "reason", "raw_encrypted").iterator(chunk_size=5000))
    return csv_lines(["line", "reason", "raw"], (
        (line, reason, quarantined_row_raw(row=QuarantinedRow(raw_encrypted=raw), clear=clear))
        for line, reason, raw in rows))


def import_job_customer_ids(*, import_job_id: int) -> list[int]:
    """The customers who got events from this import."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT customer_id FROM ingestion_event WHERE import_job_id = %s", [import_job_id])
        return [row[0] for row in cursor.fetchall()]


def import_jobs_stale(*, seconds: int | None = None) -> list[ImportJob]:
    """Running imports whose heartbeat is older than `seconds` (IMPORT_STALE_SECONDS): their worker
    died (or hangs); one may claim them again."""
    from datetime import timedelta

    from django.utils import timezone

    seconds = settings.IMPORT_STALE_SECONDS if seconds is None else seconds
    stale = timezone.now() - timedelta(seconds=seconds)
    return list(ImportJob.objects.filter(status=ImportStatus.RUNNING, heartbeat_at__lt=stale).order_by("pk"))
