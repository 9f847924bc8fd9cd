"""The CDNOW master file lands exactly, identical lines included, and a second import adds nothing."""

import pytest
from django.db.models import Count

from ingestion.models import Customer, Event, EventType, ImportStatus
from ingestion.import_jobs import import_job_create, import_job_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_cdnow_master_imports_every_purchase_and_reimport_adds_nothing(datasets):
    path = datasets / "cdnow" / "CDNOW_master.txt"

    first = import_job_run(job_id=import_job_create(path=path, fmt="cdnow").pk)

    assert first.status == ImportStatus.SUCCEEDED
    assert (first.rows_read, first.rows_inserted, first.rows_rejected, first.rows_removed) == (69_659, 69_659, 0, 0)
    assert Event.objects.count() == 69_659
    assert Event.objects.filter(event_type=EventType.PURCHASE).count() == 69_659
    assert Customer.objects.count() == 23_570
    # 470 lines fall in 215 groups of identical (customer, day, quantity, amount): all survive
    groups = (
        Event.objects.values("customer_id", "occurred_at", "quantity", "value")
        .annotate(n=Count("event_id"))
        .filter(n__gt=1)
    )
    assert groups.count() == 215
    assert sum(g["n"] for g in groups) == 470
    some = Event.objects.order_by("occurred_at", "customer__key").first()
    assert some.currency == "USD" and some.occurred_at.year == 1997 and some.item_id is None

    second = import_job_run(job_id=import_job_create(path=path, fmt="cdnow").pk)

    assert (second.rows_read, second.rows_inserted, second.rows_duplicate) == (69_659, 0, 69_659)
    assert Event.objects.count() == 69_659
    assert Customer.objects.count() == 23_570


def test_cdnow_sample_layout_is_recognised(datasets):
    job = import_job_run(job_id=import_job_create(path=datasets / "cdnow" / "CDNOW_sample.txt", fmt="cdnow").pk)

    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (6_919, 6_919, 0)
    assert Customer.objects.count() == 2_357
