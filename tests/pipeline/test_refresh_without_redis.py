"""A profile refresh runs while Redis is away (seen in bench/chaos.py: refresh tasks failed and were
dead-lettered on the Redis restart, only because clearing their pending marks needs Redis): the
refresh needs only the database, so it goes on and the profile takes the new events in."""

import pytest
import redis

from ingestion.models import Customer
from ingestion.pseudonyms import customer_key
from pipeline.flows import customers_refresh
from profiles import builds
from profiles.models import Profile
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _purchase(day: int) -> dict:
    return {"customer_id": "c1", "event_type": "purchase", "item_id": "sku-1", "value": "20.00",
            "timestamp": f"2025-01-{day:02d}T10:00:00Z"}


def test_a_refresh_while_redis_is_away_still_refreshes_the_profile(events_client, monkeypatch):
    others = [{**_purchase(1), "customer_id": f"c{c}"} for c in range(2, 8)]
    assert events_client.post("/api/v1/events", {"events": [_purchase(1), *others]}, format="json").status_code == 200
    builds.profiles_build()
    assert events_client.post("/api/v1/events", {"events": [_purchase(2)]}, format="json").status_code == 200
    customer = Customer.objects.get(key=customer_key(source="default", external_id="c1"))
    assert Profile.objects.get(pk=customer.pk).events_included == 1
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1)  # a port nothing listens on
    monkeypatch.setattr("profiles.services.broker_redis", lambda: nobody)

    written = customers_refresh(customer_ids=[customer.pk])

    assert written == 1
    assert Profile.objects.get(pk=customer.pk).events_included == 2
