"""The generator's shop loads through the normal ingestion path and carries recoverable truth."""

import pytest
from django.db import connection

from ingestion.pseudonyms import pii_decrypt
from ingestion.models import (
    Customer,
    CustomerGroundTruth,
    Event,
    ImportFormat,
    Item,
    SocialEdge,
)
from ingestion.import_jobs import synthetic_shop_load

pytestmark = pytest.mark.django_db(transaction=True)


def test_synthetic_shop_loads_with_ground_truth_and_reloading_adds_nothing():
    job = synthetic_shop_load(customers=300, events=20_000, seed=5)

    assert job.format == ImportFormat.SYNTHETIC
    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (20_000, 20_000, 0)
    assert Event.objects.count() == 20_000
    assert Customer.objects.count() == 300
    assert CustomerGroundTruth.objects.count() == 300
    assert Item.objects.count() >= 200 and SocialEdge.objects.count() > 0
    assert pii_decrypt(Customer.objects.first().email_encrypted).count("@") == 1

    again = synthetic_shop_load(customers=300, events=20_000, seed=5)

    assert (again.rows_inserted, again.rows_duplicate) == (0, 20_000)
    assert Event.objects.count() == 20_000 and Customer.objects.count() == 300


def test_stored_events_recover_each_customers_favourite_category():
    synthetic_shop_load(customers=300, events=30_000, seed=9)

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH per_category AS (
                SELECT e.customer_id, split_part(i.category_path, '/', 1) AS category,
                       count(*) AS n,
                       row_number() OVER (PARTITION BY e.customer_id ORDER BY count(*) DESC) AS rank
                FROM ingestion_event e JOIN ingestion_item i ON i.id = e.item_id
                GROUP BY e.customer_id, category
            )
            SELECT avg((p.category = t.parameters->>'favourite_category')::int)
            FROM per_category p JOIN ingestion_customergroundtruth t ON t.customer_id = p.customer_id
            WHERE p.rank = 1
            """
        )
        (share,) = cursor.fetchone()

    assert share >= 0.7
