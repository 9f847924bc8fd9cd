"""Reads of the ingestion app."""

from ingestion.identity import customer_key
from ingestion.models import Customer


def customer_ids_by_external_id(*, source: str, external_ids) -> list[int]:
    """Database ids of the customers with these external ids in a source namespace (the unknown
    ones left out), sorted."""
    keys = [customer_key(source=source, external_id=str(e)) for e in external_ids]
    return sorted(Customer.objects.filter(key__in=keys).values_list("id", flat=True))
