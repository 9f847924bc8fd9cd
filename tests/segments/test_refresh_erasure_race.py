"""A segment refresh racing an erasure (seen in bench/chaos.py: an IntegrityError on the membership's
foreign key at the refresh's commit). Membership is subject data: a refresh holds the ingest lock
shared (privacy.guard), so it waits for an erasure in progress and then leaves the erased customer out."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from ingestion.models import Customer
from privacy.guard import erasure_lock
from profiles import builds as profile_builds
from segments import services
from segments.models import SegmentMembership, SegmentStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_refresh_during_an_erasure_waits_for_it_and_leaves_the_erased_customer_out(events_client):
    rows = [{"customer_id": f"c{c}", "event_type": "purchase", "item_id": "sku-1", "value": "20.00",
             "timestamp": f"2025-01-{1 + c:02d}T10:00:00Z"} for c in range(10)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    profile_builds.profiles_build()
    segment = services.segment_create_rule(name="buyers", rule="frequency >= 1", refresh="none")
    erased = Customer.objects.order_by("pk").first().pk
    outcome = {}

    def refresh():
        try:
            outcome["size"] = services.segment_refresh(segment_id=segment.pk)
        except Exception as exc:  # the assertion below shows it
            outcome["error"] = exc
        finally:
            connections.close_all()

    # given an erasure that holds the lock and has deleted the customer, not yet committed
    with transaction.atomic():
        with connection.cursor() as cursor:
            erasure_lock(cursor)
        services.customer_memberships_erase(customer_ids=[erased])
        Customer.objects.filter(pk=erased).delete()
        # when a refresh starts meanwhile
        racing = threading.Thread(target=refresh)
        racing.start()
        time.sleep(1.5)
        assert racing.is_alive()  # it waits for the erasure
    racing.join(timeout=60)

    # then it completes after the erasure, without the erased customer
    assert "error" not in outcome, outcome
    assert outcome["size"] == 9
    assert not SegmentMembership.objects.filter(customer_id=erased).exists()
    segment.refresh_from_db()
    assert segment.status == SegmentStatus.READY
