"""Keeping profiles fresh with a real worker: an event posted to the API shows in the profile; an
import triggers refreshes; a batch build fans out over the worker as a chord."""

import time

import pytest
from django.core.management import call_command

from config.celery import app as celery_app
from ingestion.pseudonyms import customer_key
from ingestion.models import Customer, ImportJob, ImportStatus
from ingestion.import_jobs import import_job_create
from ingestion.tasks import import_job_queue
from pipeline.flows import customers_refresh
from profiles import builds
from profiles.tasks import profiles_refresh_queue
from profiles.models import BuildStatus, Profile, ProfileBuild

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _history(customer: str, n: int, day: int = 1) -> list[dict]:
    return [
        {"customer_id": customer, "event_type": "view", "item_id": f"sku-{i % 5}",
         "timestamp": f"2025-03-{day:02d}T10:{i:02d}:00Z"}
        for i in range(n)
    ] + [{"customer_id": customer, "event_type": "purchase", "item_id": "sku-1", "value": "20.00",
          "timestamp": f"2025-03-{day:02d}T11:00:00Z"}]


def _wait(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s")


@pytest.fixture
def profiled_shop(events_client):
    """A small shop posted through the API and profiled by a batch build."""
    rows = [row for c in range(30) for row in _history(f"shopper-{c}", 3 + c % 7, day=1 + c % 20)]
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()
    return events_client


def test_an_event_posted_to_the_api_shows_in_the_profile(profiled_shop, make_api_client, celery_worker):
    reader = make_api_client("profiles:read")
    key = customer_key(source="default", external_id="shopper-3")
    before = reader.get(f"/api/v1/profiles/{key}").json()

    posted = profiled_shop.post("/api/v1/events", {"events": [
        {"customer_id": "shopper-3", "event_type": "purchase", "item_id": "sku-4", "value": "55.50",
         "timestamp": "2025-03-28T09:00:00Z"},
    ]}, format="json")

    assert posted.status_code == 200
    after = _wait(
        lambda: (p := reader.get(f"/api/v1/profiles/{key}").json())["events_included"] > before["events_included"] and p,
        what="profile refresh",
    )
    assert after["events_included"] == before["events_included"] + 1
    assert after["traits"]["frequency"] == before["traits"]["frequency"] + 1
    assert after["traits"]["monetary"] == pytest.approx(before["traits"]["monetary"] + 55.5)
    assert after["last_event_at"].startswith("2025-03-28T09:00:00")
    assert after["watermark"] > before["watermark"]


def test_a_new_customer_gets_a_profile_from_its_first_events(profiled_shop, make_api_client, celery_worker):
    reader = make_api_client("profiles:read")

    profiled_shop.post("/api/v1/events", {"events": _history("newcomer", 2, day=27)}, format="json")

    profile = _wait(
        lambda: (r := reader.get("/api/v1/profiles/newcomer?by=external_id")).status_code == 200 and r.json(),
        what="first profile",
    )
    assert profile["events_included"] == 3
    assert profile["lifecycle_stage"] == "new"


def test_an_import_refreshes_the_profiles_of_its_customers(profiled_shop, tmp_path, celery_worker):
    key = customer_key(source="default", external_id="shopper-5")
    before = Profile.objects.get(customer__key=key).events_included
    path = tmp_path / "more.csv"
    path.write_text(
        "customer_id,item_id,event_type,timestamp,value\n"
        "shopper-5,sku-2,purchase,2025-03-29T10:00:00Z,12.00\n"
        "shopper-5,sku-3,view,2025-03-29T10:05:00Z,\n"
    )

    job = import_job_create(path=path, fmt="csv", source="default")
    import_job_queue(job=job)

    _wait(lambda: ImportJob.objects.get(pk=job.pk).status == ImportStatus.SUCCEEDED, what="import")
    _wait(lambda: Profile.objects.get(customer__key=key).events_included == before + 2, what="refresh after import")


def test_build_profiles_on_workers_runs_the_chunks_as_a_chord(profiled_shop, celery_worker, capsys):
    call_command("build_profiles", "--celery", "--chunk", "7")

    build = ProfileBuild.objects.order_by("-pk").first()
    assert build.status == BuildStatus.SUCCEEDED
    assert build.chunks_total == build.chunks_done == 5  # 30 customers, 7 per chunk
    assert build.profiles_written == Customer.objects.count() == 30
    assert Profile.objects.filter(feature_set=build.feature_set).count() == 30
    assert "30 profiles" in capsys.readouterr().out


def test_a_burst_for_one_customer_is_queued_once(profiled_shop):
    """No worker here: the first enqueue marks the customer pending; later ones coalesce into it."""
    customer_id = Customer.objects.get(key=customer_key(source="default", external_id="shopper-1")).pk
    celery_app.control.purge()

    queued = [profiles_refresh_queue(customer_ids=[customer_id]) for _ in range(5)]

    assert queued == [1, 0, 0, 0, 0]
    customers_refresh(customer_ids=[customer_id])  # what the task does: clears the mark first
    assert profiles_refresh_queue(customer_ids=[customer_id]) == 1
    customers_refresh(customer_ids=[customer_id])
    celery_app.control.purge()


def test_a_customer_attribute_update_refreshes_the_profile(profiled_shop, make_api_client, celery_worker):
    reader = make_api_client("profiles:read")
    assert reader.get("/api/v1/profiles/shopper-2?by=external_id").json()["traits"]["region"] is None

    response = profiled_shop.post("/api/v1/customers", {"customers": [
        {"external_id": "shopper-2", "region": "West", "age": 41},
    ]}, format="json")

    assert response.status_code == 200
    profile = _wait(
        lambda: (p := reader.get("/api/v1/profiles/shopper-2?by=external_id").json())["traits"]["region"] == "West" and p,
        what="refresh after an attribute update",
    )
    assert profile["traits"]["age_band"] == "35-44"
