"""Rotating the suppression key never un-suppresses anyone: after a new key is put first in
SUPPRESSION_KEYS, an erased subject is still refused at every entrance and a restricted customer
stays restricted; a key that rows still use cannot leave the ring (system check, command); the
key_rotation command reports rows per key id and re-keys the subjects it is given."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, Event
from ingestion.pseudonyms import customer_keys
from ingestion.services import customers_upsert, events_ingest_batch, social_edges_upsert
from privacy import services
from privacy.models import RestrictedSubject, SuppressedSubject
from privacy.selectors import restricted_external_ids, suppressed_external_ids

pytestmark = pytest.mark.django_db(transaction=True)
ERASED, RESTRICTED = "erased-1", "restricted-1"
NEW_KEY = ("k2", "a-newer-suppression-key-for-tests-only")


def _events(customer: str, n: int = 2, **extra) -> list[dict]:
    return [{"customer_id": customer, "event_type": "view", "item_id": f"sku-{i}",
             "timestamp": f"2025-06-0{1 + i}T10:00:00Z", **extra} for i in range(n)]


def _execute(kind: str, external_id: str, actor):
    request = services.privacy_request_file(kind=kind, source="default", external_id=external_id, actor=actor)
    services.privacy_request_verify(request=request, actor=actor)
    return services.privacy_request_execute(request=request, actor=actor)


@pytest.fixture
def listed_under_k1(settings, tmp_path, compliance_user):
    """An erased subject and a restricted one, both listed under the only key, k1."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    assert [key_id for key_id, _ in settings.SUPPRESSION_KEYS] == ["k1"]
    customers_upsert(rows=[{"external_id": e, "email": f"{e}@example.com"} for e in (ERASED, RESTRICTED)],
                     source="default")
    events_ingest_batch(rows=_events(ERASED) + _events(RESTRICTED) + _events("other-1"))
    _execute("erasure", ERASED, compliance_user)
    _execute("restriction", RESTRICTED, compliance_user)
    assert list(SuppressedSubject.objects.values_list("key_id", flat=True)) == ["k1"]
    assert list(RestrictedSubject.objects.values_list("key_id", flat=True)) == ["k1"]
    return settings


def _rotate(settings):
    settings.SUPPRESSION_KEYS = [NEW_KEY, *settings.SUPPRESSION_KEYS]


def test_after_a_new_suppression_key_an_erased_subject_is_still_refused_at_every_entrance(
        listed_under_k1, events_client, tmp_path):
    _rotate(listed_under_k1)

    batch = events_client.post("/api/v1/events", {"events": _events(ERASED) + _events("other-2", 1)}, format="json")
    upserted = events_client.post("/api/v1/customers", {"customers": [{"external_id": ERASED, "region": "x"}]},
                                  format="json")
    identified = events_client.post("/api/v1/identify", {"anonymous_id": "visitor-1", "customer_id": ERASED},
                                    format="json")
    edges = social_edges_upsert(rows=[{"source_id": "other-1", "target_id": ERASED, "relation": "follow"}],
                                source="default")
    upload = tmp_path / "late.csv"
    upload.write_text(f"customer_id,event_type,item_id,timestamp\n{ERASED},view,sku-1,2025-07-01T10:00:00Z\n"
                      "other-3,view,sku-1,2025-07-01T10:00:00Z\n")
    imported = import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk)

    assert batch.status_code == 200 and (batch.json()["refused"], batch.json()["inserted"]) == (2, 1)
    assert upserted.status_code == 200, upserted.content
    assert identified.status_code == 409, identified.content
    assert edges == 0
    assert imported.report["refused_suppressed_subject"] == 1 and imported.rows_inserted == 1
    assert not Customer.objects.filter(key__in=customer_keys(source="default", external_id=ERASED)).exists()
    assert suppressed_external_ids(source="default", external_ids=[ERASED, "other-1"]) == {ERASED}


def test_after_a_new_suppression_key_a_restricted_customer_stays_restricted(listed_under_k1, events_client, tmp_path):
    _rotate(listed_under_k1)

    sent = events_client.post("/api/v1/customers", {"customers": [
        {"external_id": RESTRICTED, "consent_profiling": True, "region": "north"}]}, format="json")
    upload = tmp_path / "customers.csv"
    upload.write_text(f"external_id,consent_profiling,region\n{RESTRICTED},true,south\n")
    imported = import_job_run(job_id=import_job_create(path=upload, fmt="csv", options={"kind": "customers"}).pk)

    assert sent.status_code == 200 and imported.rows_inserted == 1
    customer = Customer.objects.get(key__in=customer_keys(source="default", external_id=RESTRICTED))
    assert customer.region == "south" and customer.consent_profiling is False
    assert restricted_external_ids(source="default", external_ids=[RESTRICTED]) == {RESTRICTED}


def test_after_a_new_suppression_key_new_rows_use_it_and_a_listed_subject_is_not_listed_twice(
        listed_under_k1, compliance_user):
    _rotate(listed_under_k1)

    again = services.subject_suppress(source="default", external_id=ERASED, reason="second time")
    fresh = services.subject_suppress(source="default", external_id="objector-1", reason="objection")
    _execute("restriction", RESTRICTED, compliance_user)

    assert again.key_id == "k1" and again.reason.startswith("erasure request #")
    assert SuppressedSubject.objects.count() == 2 and fresh.key_id == "k2"
    assert RestrictedSubject.objects.count() == 1


def test_a_suppression_key_that_rows_use_cannot_leave_the_ring(listed_under_k1):
    listed_under_k1.SUPPRESSION_KEYS = [NEW_KEY]  # k1 dropped while the erased and restricted rows need it

    with pytest.raises(SystemCheckError) as refused:
        call_command("check", databases=["default"], stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError) as reported:
        call_command("key_rotation", stdout=io.StringIO())

    for message in (str(refused.value), str(reported.value)):
        assert "key id 'k1' is not in SUPPRESSION_KEYS" in message
        assert "1 suppressed subjects, 1 restricted subjects" in message


def test_the_key_rotation_command_reports_rows_per_key_and_rekeys_the_subjects_it_is_given(listed_under_k1, tmp_path):
    _rotate(listed_under_k1)
    report = io.StringIO()
    call_command("key_rotation", stdout=report)
    assert "k2 (newest): no rows" in report.getvalue()
    assert "k1 (in ring): 1 suppressed subjects, 1 restricted subjects" in report.getvalue()

    ids = tmp_path / "ids.txt"
    ids.write_text(f"{ERASED}\n{RESTRICTED}\nnobody-listed\n")
    rekeyed = io.StringIO()
    call_command("key_rotation", "--rekey", "--external-ids", str(ids), stdout=rekeyed)
    assert "re-keyed: 1 suppressed subjects, 1 restricted subjects, 2 privacy requests" in rekeyed.getvalue()
    assert "k1 (in ring): no rows" in rekeyed.getvalue()

    listed_under_k1.SUPPRESSION_KEYS = [NEW_KEY]  # now k1 may go
    call_command("check", databases=["default"], stdout=io.StringIO(), stderr=io.StringIO())
    call_command("key_rotation", stdout=io.StringIO())
    assert suppressed_external_ids(source="default", external_ids=[ERASED]) == {ERASED}
    assert restricted_external_ids(source="default", external_ids=[RESTRICTED]) == {RESTRICTED}
    assert events_ingest_batch(rows=_events(ERASED)).refused == 2
    assert not Event.objects.filter(customer__key__in=customer_keys(source="default", external_id=ERASED)).exists()
