"""identify takes the ingest lock: an identify call racing an erasure of its customer cannot
re-create the erased subject."""

import threading

import pytest
from django.db import connection, transaction

from ingestion.models import Customer
from ingestion.pseudonyms import customer_key
from ingestion.services import events_ingest_batch
from privacy.guard import erasure_lock
from privacy.services import subject_suppress
from profiles.merges import IdentitySuppressed, identify_call

pytestmark = pytest.mark.django_db(transaction=True)


def test_identify_waits_for_a_running_erasure_and_then_refuses_the_erased_subject():
    events_ingest_batch(rows=[{"anonymous_id": "visitor-1", "event_type": "view", "item_id": "sku-1",
                               "timestamp": "2025-03-01T10:00:00Z"}])
    locked, release = threading.Event(), threading.Event()

    def erasure_in_progress():
        # what erasure's first step does: lock exclusively, suppress, (delete), commit
        with transaction.atomic(), connection.cursor() as cursor:
            erasure_lock(cursor)
            subject_suppress(source="default", external_id="subject-1", reason="erasure under test")
            locked.set()
            release.wait(10)
        connection.close()

    outcome = []

    def identify():
        try:
            outcome.append(identify_call(source="default", anonymous_id="visitor-1", customer_id="subject-1"))
        except IdentitySuppressed as refused:
            outcome.append(refused)
        finally:
            connection.close()

    eraser = threading.Thread(target=erasure_in_progress)
    eraser.start()
    assert locked.wait(10)
    caller = threading.Thread(target=identify)
    caller.start()
    caller.join(1.0)
    waited = caller.is_alive()
    release.set()
    eraser.join()
    caller.join(10)

    assert waited, "identify must wait for the erasure's lock"
    assert len(outcome) == 1 and isinstance(outcome[0], IdentitySuppressed)
    assert not Customer.objects.filter(key=customer_key(source="default", external_id="subject-1")).exists()
