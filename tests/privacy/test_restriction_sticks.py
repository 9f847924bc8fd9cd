"""A restriction of processing (profiling opt-out) sticks: a later customer upsert cannot give
consent back, builds and refreshes leave the customer out, and what was derived from their data
(profile, traits, vectors, value snapshot) is deleted."""

import pytest
from django.contrib.auth.models import Group

from ingestion.models import Customer
from ingestion.pseudonyms import customer_key
from ingestion.services import customers_upsert, events_ingest_batch
from pipeline.flows import customers_refresh
from privacy import services
from profiles.builds import profiles_build
from profiles.models import CustomerValue, Profile

pytestmark = pytest.mark.django_db
SUBJECT = "shopper-9"


@pytest.fixture
def shop(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    customers_upsert(rows=[{"external_id": SUBJECT, "email": "s9@example.com"}], source="default")
    events_ingest_batch(rows=[
        {"customer_id": c, "event_type": "purchase", "item_id": f"sku-{i}", "value": "20.00",
         "timestamp": f"2025-05-0{1 + i}T10:00:00Z"} for c in (SUBJECT, "other-1", "other-2") for i in range(3)
    ])
    profiles_build()
    return Customer.objects.get(key=customer_key(source="default", external_id=SUBJECT))


def test_a_restriction_survives_upserts_and_the_customer_is_never_profiled_again(shop, django_user_model,
                                                                                  make_api_client, tmp_path):
    from ingestion.import_jobs import import_job_create, import_job_run

    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    assert Profile.objects.filter(customer=shop).exists() and CustomerValue.objects.filter(customer=shop).exists()
    request = services.privacy_request_file(kind="restriction", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=request, actor=officer)
    services.privacy_request_execute(request=request, actor=officer)

    assert not Profile.objects.filter(customer=shop).exists(), "derived data must go with the opt-out"
    assert not CustomerValue.objects.filter(customer=shop).exists()

    # the shop's CRM sync sends the customer again, by API and by file, with consent set
    sent = make_api_client("events:write").post("/api/v1/customers", {"customers": [
        {"external_id": SUBJECT, "consent_profiling": True, "region": "north"}]}, format="json")
    assert sent.status_code == 200, sent.content
    shop.refresh_from_db()
    assert shop.region == "north" and shop.consent_profiling is False
    upload = tmp_path / "customers.csv"
    upload.write_text(f"external_id,consent_profiling,region\n{SUBJECT},true,south\n")
    job = import_job_run(job_id=import_job_create(path=upload, fmt="csv", options={"kind": "customers"}).pk)
    assert job.rows_inserted == 1

    shop.refresh_from_db()
    assert shop.region == "south" and shop.consent_profiling is False
    profiles_build()
    customers_refresh(customer_ids=[shop.pk])
    assert not Profile.objects.filter(customer=shop).exists()
    assert not CustomerValue.objects.filter(customer=shop).exists()
    assert Profile.objects.count() == 2


@pytest.mark.django_db(transaction=True)  # the import's writer threads use their own connections
def test_a_restriction_filed_before_the_customer_exists_holds_when_events_create_them(
        django_user_model, make_api_client, tmp_path, settings):
    """The shop has not sent "ghost" yet; the restriction is filed for the id. When events (API or
    file) then create the customer, it is created without consent and never profiled."""
    from ingestion.import_jobs import import_job_create, import_job_run

    settings.MEDIA_ROOT = str(tmp_path / "media")
    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    for ghost in ("ghost-api", "ghost-file"):
        request = services.privacy_request_file(kind="restriction", source="default", external_id=ghost, actor=officer)
        services.privacy_request_verify(request=request, actor=officer)
        services.privacy_request_execute(request=request, actor=officer)
    assert not Customer.objects.exists()

    sent = make_api_client("events:write").post("/api/v1/events", {"events": [
        {"customer_id": c, "event_type": "purchase", "item_id": "sku-1", "value": "9.00",
         "timestamp": "2025-05-01T10:00:00Z"} for c in ("ghost-api", "someone")]}, format="json")
    assert sent.status_code == 200, sent.content
    upload = tmp_path / "events.csv"
    upload.write_text("customer_id,event_type,item_id,value,timestamp\nghost-file,purchase,sku-2,5.00,2025-05-02T10:00:00Z\n")
    job = import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk)
    assert job.rows_inserted == 1, (job.status, job.error, job.report)

    def consent(external_id):
        return Customer.objects.get(key=customer_key(source="default", external_id=external_id)).consent_profiling

    assert (consent("ghost-api"), consent("ghost-file"), consent("someone")) == (False, False, True)
    profiles_build()
    assert list(Profile.objects.values_list("customer__key", flat=True)) == [
        customer_key(source="default", external_id="someone")]


def test_a_lifted_restriction_gives_consent_back_and_the_customer_is_profiled_again(shop, django_user_model):
    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)

    def run(kind):
        request = services.privacy_request_file(kind=kind, source="default", external_id=SUBJECT, actor=officer)
        services.privacy_request_verify(request=request, actor=officer)
        return services.privacy_request_execute(request=request, actor=officer)

    run("restriction")
    assert not Profile.objects.filter(customer=shop).exists()
    lifted = run("restriction_lift")

    shop.refresh_from_db()
    assert shop.consent_profiling is True and lifted.receipt["stores"]["restriction_list"]["removed"] == 1
    customers_upsert(rows=[{"external_id": SUBJECT, "consent_profiling": True}], source="default")
    shop.refresh_from_db()
    assert shop.consent_profiling is True  # no longer held back by the list
    profiles_build()
    assert Profile.objects.filter(customer=shop).exists()
