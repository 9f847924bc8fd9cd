"""Events carry no database foreign keys, so deleting a customer through Django must still take them along."""

import pytest

from ingestion.pseudonyms import customer_key
from ingestion.models import Customer, Event
from ingestion.services import events_ingest_batch

pytestmark = pytest.mark.django_db


def test_deleting_a_customer_deletes_its_events():
    events_ingest_batch(rows=[
        {"event_id": "a", "customer_id": "gone", "event_type": "search", "timestamp": "2025-01-01T00:00:00Z"},
        {"event_id": "b", "customer_id": "stays", "event_type": "search", "timestamp": "2025-01-01T00:00:00Z"},
    ])

    Customer.objects.get(key=customer_key(source="default", external_id="gone")).delete()

    assert list(Event.objects.values_list("customer__key", flat=True)) == [
        customer_key(source="default", external_id="stays")
    ]
