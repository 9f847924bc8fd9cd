"""Rotating the pseudonym key splits no customer: after a new key is put first in PSEUDONYM_KEYS, a
customer made under the old key is found by external id at every entrance (API batch and upsert,
file import, identify, privacy requests, `?by=external_id` reads) and keeps its key (apps hold it);
only new customers get keys under the new key; a key that customers have cannot leave the ring."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, Event
from ingestion.pseudonyms import customer_key, customer_keys
from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from profiles.builds import profiles_build

pytestmark = pytest.mark.django_db(transaction=True)
SUBJECT = "shopper-1"
NEW_KEY = ("p2", "a-newer-pseudonym-key-for-tests-only")


def _events(customer: str, day: int, n: int = 2) -> list[dict]:
    return [{"customer_id": customer, "event_type": "purchase", "item_id": f"sku-{i}", "value": "9.50",
             "timestamp": f"2025-06-{day:02d}T1{i}:00:00Z"} for i in range(n)]


@pytest.fixture
def made_under_k1(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    assert [key_id for key_id, _ in settings.PSEUDONYM_KEYS] == ["k1"]
    customers_upsert(rows=[{"external_id": SUBJECT, "email": "s1@example.com"}], source="default")
    events_ingest_batch(rows=_events(SUBJECT, 1) + _events("other-1", 1))
    customer = Customer.objects.get(key=customer_key(source="default", external_id=SUBJECT))
    assert customer.key_id == "k1"
    settings.PSEUDONYM_KEYS = [NEW_KEY, *settings.PSEUDONYM_KEYS]
    assert customer_key(source="default", external_id=SUBJECT) != customer.key
    return customer


def test_a_customer_made_under_the_old_pseudonym_key_is_found_everywhere_and_never_made_twice(
        made_under_k1, events_client, make_api_client, compliance_user, tmp_path):
    customer = made_under_k1

    batch = events_client.post("/api/v1/events", {"events": _events(SUBJECT, 2)}, format="json")
    upserted = events_client.post("/api/v1/customers", {"customers": [{"external_id": SUBJECT, "region": "north"}]},
                                  format="json")
    upload = tmp_path / "events.csv"
    upload.write_text(f"customer_id,event_type,item_id,timestamp\n{SUBJECT},view,sku-1,2025-06-03T10:00:00Z\n"
                      "newcomer-1,view,sku-1,2025-06-03T10:00:00Z\n")
    imported = import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk)
    events_ingest_batch(rows=[{**e, "anonymous_id": "visitor-1", "customer_id": None} for e in _events("x", 4)])
    identified = events_client.post("/api/v1/identify", {"anonymous_id": "visitor-1", "customer_id": SUBJECT},
                                    format="json")
    request = services.privacy_request_file(kind="access_export", source="default", external_id=SUBJECT,
                                            actor=compliance_user)
    profiles_build()
    read = make_api_client("profiles:read").get(f"/api/v1/profiles/{SUBJECT}?by=external_id")

    assert batch.status_code == 200 and batch.json()["inserted"] == 2
    assert upserted.status_code == 200 and imported.rows_inserted == 2
    assert identified.status_code == 200 and identified.json()["customer_key"] == customer.key
    assert request.customer_id == customer.pk
    assert read.status_code == 200 and read.json()["key"] == customer.key
    subject_rows = Customer.objects.filter(source="default").exclude(key__in=[
        k for e in ("other-1", "newcomer-1") for k in customer_keys(source="default", external_id=e)])
    assert list(subject_rows.filter(merged_into__isnull=True).values_list("key", "key_id")) == [(customer.key, "k1")]
    assert Customer.objects.get(pk=customer.pk).region == "north"
    assert Event.objects.filter(customer=customer).count() == 2 + 2 + 1 + 2  # before, API, file, identify
    newcomer = Customer.objects.get(key=customer_key(source="default", external_id="newcomer-1"))
    assert newcomer.key_id == "p2"


def test_erasure_after_a_pseudonym_rotation_removes_the_customer_made_under_the_old_key(made_under_k1, compliance_user):
    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=compliance_user)
    services.privacy_request_verify(request=request, actor=compliance_user)
    services.privacy_request_execute(request=request, actor=compliance_user)

    assert not Customer.objects.filter(pk=made_under_k1.pk).exists()
    assert events_ingest_batch(rows=_events(SUBJECT, 5)).refused == 2


def test_a_pseudonym_key_that_customers_have_cannot_leave_the_ring(made_under_k1, settings):
    settings.PSEUDONYM_KEYS = [NEW_KEY]

    with pytest.raises(SystemCheckError) as refused:
        call_command("check", databases=["default"], stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError):
        call_command("key_rotation", stdout=io.StringIO())

    assert "key id 'k1' is not in PSEUDONYM_KEYS but 2 customers still depend on it" in str(refused.value)
