"""The privacy workflow through the API (scope `compliance`) and the admin: file, verify, execute,
receipt, access export, restriction, lifting a suppression; permissions and the audit trail; the
differentially private release of segment sizes."""

import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.pseudonyms import customer_key
from ingestion.models import Customer
from ingestion.services import customers_upsert, events_ingest_batch
from privacy.models import AuditEntry, PrivacyRequest, RequestState, SuppressedSubject
from profiles.builds import profiles_build

pytestmark = pytest.mark.django_db
SUBJECT, EMAIL = "shopper-42", "shopper42@example.com"


@pytest.fixture
def shop(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL, "name": "Wang Fang"}], source="default")
    events_ingest_batch(rows=[
        {"customer_id": c, "event_type": "purchase", "item_id": f"sku-{i}", "value": "20.00",
         "timestamp": f"2025-05-0{1 + i}T10:00:00Z"} for c in (SUBJECT, "other-1", "other-2") for i in range(3)
    ])
    profiles_build()


@pytest.fixture
def compliance(make_api_client):
    return make_api_client("compliance")


def _file(client, kind="erasure", external_id=SUBJECT) -> dict:
    response = client.post("/api/v1/privacy/requests", {"kind": kind, "external_id": external_id}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_erasure_through_the_api_returns_a_receipt_without_personal_data(shop, compliance):
    filed = _file(compliance)
    verified = compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    executed = compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute")

    assert filed["state"] == "received" and SUBJECT not in json.dumps(filed)
    assert verified.status_code == 200 and verified.json()["state"] == "verified"
    assert verified.json()["verified_by"] == "api:test client"
    body = executed.json()
    assert executed.status_code == 200 and body["state"] == "completed"
    assert body["receipt"]["stores"]["events"]["removed"] == 3 and body["receipt"]["stores"]["customers"]["removed"] == 1
    text = json.dumps(body)
    assert SUBJECT not in text and EMAIL not in text and customer_key(source="default", external_id=SUBJECT) not in text
    assert not Customer.objects.filter(key=customer_key(source="default", external_id=SUBJECT)).exists()
    assert compliance.get(f"/api/v1/privacy/requests/{filed['id']}").json()["receipt"] == body["receipt"]
    assert compliance.get("/api/v1/privacy/requests?page_size=10").json()["count"] == 1


def test_states_are_enforced(shop, compliance):
    filed = _file(compliance)

    assert compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute").status_code == 409
    assert compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify").status_code == 200
    assert compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify").status_code == 409
    assert compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute").status_code == 200
    assert compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute").status_code == 409
    assert compliance.post("/api/v1/privacy/requests/999999/verify").status_code == 404
    bad = compliance.post("/api/v1/privacy/requests", {"kind": "forget-me", "external_id": SUBJECT}, format="json")
    assert bad.status_code == 400 and "kind" in bad.json()


def test_a_token_without_the_compliance_scope_gets_403(shop, make_api_client, client):
    others = make_api_client("events:write", "profiles:read", "similarity:read", "segments:write")

    assert others.post("/api/v1/privacy/requests", {"kind": "erasure", "external_id": SUBJECT}, format="json").status_code == 403
    assert others.get("/api/v1/privacy/requests").status_code == 403
    assert client.get("/api/v1/privacy/requests").status_code == 401
    assert not PrivacyRequest.objects.exists()


def test_access_export_bundles_everything_and_expires(shop, compliance):
    filed = _file(compliance, kind="access_export")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    done = compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute").json()

    download = compliance.get(f"/api/v1/privacy/requests/{filed['id']}/export")

    assert done["state"] == "completed" and done["receipt"]["export"]["events"] == 3
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    subject = json.loads(archive.read("subject.json"))
    assert subject["record"]["email"] == EMAIL and subject["profile"]["value_tier"]
    assert subject["subject"]["external_id"] == SUBJECT and subject["events"] == 3
    assert archive.read("events.csv").decode().count("\n") == 4
    assert AuditEntry.objects.filter(action="privacy_request.export_downloaded").count() == 1
    PrivacyRequest.objects.filter(pk=filed["id"]).update(export_expires_at=timezone.now() - timedelta(seconds=1))
    assert compliance.get(f"/api/v1/privacy/requests/{filed['id']}/export").status_code == 404


def test_restriction_withdraws_consent_and_the_profile_disappears_from_reads(shop, compliance, make_api_client):
    key = customer_key(source="default", external_id=SUBJECT)
    reader = make_api_client("profiles:read")
    assert reader.get(f"/api/v1/profiles/{key}").status_code == 200

    filed = _file(compliance, kind="restriction")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute")

    assert Customer.objects.get(key=key).consent_profiling is False
    assert reader.get(f"/api/v1/profiles/{key}").status_code == 404


@pytest.mark.django_db(transaction=True)  # each batch commits, as in production (staging empties at commit)
def test_lifting_a_suppression(shop, compliance):
    erasure = _file(compliance)
    compliance.post(f"/api/v1/privacy/requests/{erasure['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{erasure['id']}/execute")
    search = [{"customer_id": SUBJECT, "event_type": "search", "timestamp": "2025-06-01T00:00:00Z"}]
    assert events_ingest_batch(rows=search).refused == 1

    lift = _file(compliance, kind="unsuppression")
    compliance.post(f"/api/v1/privacy/requests/{lift['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{lift['id']}/execute")

    assert not SuppressedSubject.objects.exists()
    assert events_ingest_batch(rows=search).inserted == 1


def test_in_the_admin_an_operator_cannot_execute_and_compliance_staff_can(shop, client, operator_user, compliance_user):
    client.force_login(operator_user)

    filed = client.post("/admin/privacy/privacyrequest/add/", {"kind": "erasure", "source": "default",
                                                               "external_id": SUBJECT, "note": ""})
    request = PrivacyRequest.objects.get()
    refused = client.post("/admin/privacy/privacyrequest/", {"action": "verify", "_selected_action": [request.pk]},
                          follow=True)

    assert filed.status_code == 302 and request.filed_by == "otto"
    assert b"Only the compliance group" in refused.content
    assert PrivacyRequest.objects.get().state == RequestState.RECEIVED
    client.force_login(compliance_user)
    for action in ("verify", "execute"):
        client.post("/admin/privacy/privacyrequest/", {"action": action, "_selected_action": [request.pk]})
    page = client.get(f"/admin/privacy/privacyrequest/{request.pk}/change/")
    assert PrivacyRequest.objects.get().state == RequestState.COMPLETED
    assert b'id="receipt"' in page.content and SUBJECT.encode() not in page.content
    actions = set(AuditEntry.objects.values_list("actor_label", "action"))
    assert {("otto", "privacy_request.filed"), ("otto", "privacy_request.verify_refused"),
            ("cora", "privacy_request.verified"), ("cora", "privacy_request.completed")} <= actions


def test_segment_sizes_are_released_with_noise(shop, make_api_client):
    from segments.services import segment_create_rule, segment_refresh

    for rule in ("frequency >= 1", "monetary > 30", "events >= 1"):
        segment_refresh(segment_id=segment_create_rule(name=rule, rule=rule, refresh="none").pk)
    reader = make_api_client("profiles:read")

    body = reader.get("/api/v1/segments/sizes?epsilon=0.5").json()

    assert body["epsilon"] == 0.5 and len(body["sizes"]) == 3
    assert all(isinstance(v, int) and v >= 0 for v in body["sizes"].values())
    assert reader.get("/api/v1/segments/sizes?epsilon=0").status_code == 400


def test_versions_trained_on_an_erased_subject_are_retired_after_a_clean_retraining(shop, compliance, settings, tmp_path):
    from privacy.models import ErasureLedger
    from privacy.tasks import unlearning_retire
    from training.models import ItemEmbedding, ModelVersion, TrainingRun

    artifact = tmp_path / "models" / "run-1" / "model.pt"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"weights")
    old = ModelVersion.objects.create(name="old", is_active=True, artifact_path=str(artifact), artifact_sha256="x" * 64)
    from ingestion.models import Item

    ItemEmbedding.objects.create(item=Item.objects.first(), model_version=old, embedding=[0.1] * 64)
    filed = _file(compliance)
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute")
    ledger = ErasureLedger.objects.get()
    assert ledger.model_versions == [old.pk]
    assert ledger.retire_by - ledger.erased_at == timedelta(days=settings.PRIVACY_MODEL_RETIREMENT_DAYS)

    assert unlearning_retire()["due"] == 0  # not before the deadline
    later = ledger.retire_by + timedelta(minutes=1)
    first = unlearning_retire(now=later)
    assert first == {"due": 1, "retired_versions": 0, "retraining_needed": True, "retraining_queued": True}
    assert TrainingRun.objects.filter(status="pending").count() == 1 and artifact.exists()

    ModelVersion.objects.filter(pk=old.pk).update(is_active=False)
    ModelVersion.objects.create(name="retrained", is_active=True)
    second = unlearning_retire(now=later)

    assert second == {"due": 1, "retired_versions": 1, "retraining_needed": False, "retraining_queued": False}
    assert not artifact.parent.exists() and not ItemEmbedding.objects.filter(model_version=old).exists()
    assert ErasureLedger.objects.get().retired_at is not None
    assert ModelVersion.objects.get(pk=old.pk).artifact_path == ""


def test_the_next_training_runs_manifest_counts_erased_subjects_and_opt_outs(shop, compliance):
    from training.services import training_dataset_read

    Customer.objects.filter(key=customer_key(source="default", external_id="other-2")).update(consent_profiling=False)
    filed = _file(compliance)
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute")

    seqs, _, described = training_dataset_read()

    assert described["erased_subjects_excluded"] == 1 and described["opted_out_excluded"] == 1
    assert described["customers"] == 1 and described["events"] == 3  # only other-1 is left to learn from


def test_a_version_owed_to_unlearning_does_not_block_its_replacement(shop, compliance):
    from training.models import ModelVersion
    from training.services import model_version_gate

    old = ModelVersion.objects.create(name="old", is_active=True, metrics={"valid": {"ndcg@10": 0.9}})
    weaker = ModelVersion.objects.create(name="weaker", metrics={"valid": {"ndcg@10": 0.5}})
    assert model_version_gate(version=weaker) is False

    filed = _file(compliance)
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/verify")
    compliance.post(f"/api/v1/privacy/requests/{filed['id']}/execute")

    assert model_version_gate(version=weaker) is True
    assert weaker.gate["active_version"] == old.pk and "unlearning" in weaker.gate
