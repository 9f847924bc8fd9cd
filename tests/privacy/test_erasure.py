"""Erasure reaches every store: a subject seeded into each (customer with PII, events, an anonymous
identity merged into it, social edges both ways, a quarantined import row and its uploaded file,
profile, embedding, segment membership, a pending-refresh key in Redis) is erased, then a
schema-driven scan of every table and column, Redis and the media and model directories finds no
trace of the external id, email, phone or pseudonymous key; 1,000 nearest-neighbour probes with
the subject's old vectors never return them. Suppression then refuses the subject at every
entrance, and an erasure racing with ingestion of the same subject leaves no row."""

import threading
from pathlib import Path

import numpy as np
import pytest
from django.db import connection

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, Event, ImportJob
from ingestion.pseudonyms import customer_key
from ingestion.services import customers_upsert, events_ingest_batch, social_edges_upsert
from privacy import services
from privacy.models import AuditEntry, ErasureLedger, PrivacyRequest, RequestState, SuppressedSubject
from profiles.builds import profiles_build
from profiles.merges import identify_call
from profiles.models import Profile
from profiles.tasks import profiles_refresh_queue
from tests.privacy.residue import residue_found

pytestmark = pytest.mark.django_db(transaction=True)
SUBJECT = "subject-7f3a"
EMAIL, PHONE = "li.na.subject@example.com", "+86 139 1234 5678"


def _events(customer: str, day: int, n: int = 3, **extra) -> list[dict]:
    return [{"customer_id": customer, "event_type": "purchase" if i % 2 else "view", "item_id": f"sku-{i % 4}",
             "timestamp": f"2025-03-{day:02d}T1{i}:00:00Z", **({"value": "12.50"} if i % 2 else {}), **extra}
            for i in range(n)]


@pytest.fixture
def seeded(settings, tmp_path):
    """The subject in every store, among 30 other customers."""
    from pipeline.flows import training_run
    from segments.services import segment_create_rule, segment_refresh
    from training.services import training_run_create

    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MODELS_DIR = tmp_path / "models"
    customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL, "phone": PHONE, "name": "Li Na"}], source="default")
    rows = _events(SUBJECT, 1, 6)
    for c in range(30):
        rows += _events(f"other-{c}", 2 + c % 20, 4)
    events_ingest_batch(rows=rows)
    events_ingest_batch(rows=[{**e, "anonymous_id": "visitor-9", "customer_id": None} for e in _events("x", 25, 2)])
    identify_call(source="default", anonymous_id="visitor-9", customer_id=SUBJECT)
    social_edges_upsert(rows=[{"source_id": SUBJECT, "target_id": "other-1", "relation": "follow"},
                              {"source_id": "other-2", "target_id": SUBJECT, "relation": "referral"}], source="default")
    upload = Path(settings.MEDIA_ROOT) / "imports" / "upload.csv"
    upload.parent.mkdir(parents=True)
    upload.write_text("customer_id,event_type,timestamp\nother-3,view,2025-03-05T10:00:00Z\n"
                      f"{SUBJECT},teleport,2025-03-05T10:00:00Z\n")
    import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk)
    profiles_build()
    run = training_run_create(arch="gru", config={"model": {"layers": 1, "max_len": 10, "content": False},
                                                  "train": {"epochs": 1}})
    training_run(run_id=run.pk, rebuild=True)
    segment_refresh(segment_id=segment_create_rule(name="everyone", rule="events >= 1", refresh="none").pk)
    subject = Customer.objects.get(key=customer_key(source="default", external_id=SUBJECT))
    profiles_refresh_queue(customer_ids=[subject.pk])
    profile = Profile.objects.get(customer=subject)
    assert profile.embedding is not None and subject.segment_memberships.exists()
    assert subject.merged_identities.exists() and Event.objects.filter(customer=subject).count() == 8
    return {"customer": subject, "key": subject.key, "embedding": np.asarray(profile.embedding),
            "fused": np.asarray(profile.fused), "upload": upload}


def _erase(actor) -> PrivacyRequest:
    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=actor)
    services.privacy_request_verify(request=request, actor=actor)
    return services.privacy_request_execute(request=request, actor=actor)


def test_erasure_leaves_no_trace_in_any_store_and_vectors_never_return(seeded, compliance_user, settings):
    from profiles.memory_search import memory_graphs_loaded, memory_snapshot_build, snapshot_path
    from profiles.vector_index import MemoryIndex

    needles = [SUBJECT, EMAIL, PHONE, seeded["key"], "visitor-9"]
    assert residue_found(needles, settings), "the scan must find the subject before the erasure"
    subject_id = seeded["customer"].pk
    snapshot = memory_snapshot_build(space="fused")  # the in-memory graph holds the subject, in file and loaded
    path = snapshot_path(space="fused", feature_set_id=snapshot["feature_set_id"], model_version_id=snapshot["model_version_id"])
    other = Profile.objects.exclude(customer=seeded["customer"]).first()
    from profiles.selectors import profiles_similar
    profiles_similar(profile=other, k=5, space="fused")
    assert subject_id in MemoryIndex.load(path)[0] and any(subject_id in graph for graph in memory_graphs_loaded())

    request = _erase(compliance_user)

    assert request.state == RequestState.COMPLETED, request.error
    assert residue_found(needles, settings) == []
    stores = request.receipt["stores"]
    assert stores["events"]["removed"] == 8 and stores["customers"]["removed"] == 2
    assert stores["social_edges"]["removed"] == 2 and stores["quarantined_rows"]["removed"] == 1
    assert stores["profiles"]["removed"] >= 1 and stores["segment_memberships"]["removed"] >= 1
    assert stores["identity_merges"]["removed"] == 1 and stores["import_files"]["removed"] == 1
    assert stores["redis_keys"]["removed"] == 1 and not seeded["upload"].exists()
    assert stores["similarity_snapshots"]["removed"] == 2  # the file's node and this process's
    saved = MemoryIndex.load(path)[0]
    subject_fused = seeded["fused"].astype(np.float32) / np.linalg.norm(seeded["fused"].astype(np.float32))
    assert subject_id not in saved and not np.any(np.all(np.isclose(saved._stored(), subject_fused, atol=1e-6), axis=1))
    assert not any(subject_id in graph for graph in memory_graphs_loaded())
    assert request.receipt["suppression_token"] == request.subject_token
    assert SuppressedSubject.objects.filter(token=request.subject_token).exists()
    ledger = ErasureLedger.objects.get(request=request)
    assert ledger.model_versions and ledger.retired_at is None
    # 1,000 probes around the subject's old vectors, in both spaces, at any search breadth
    from profiles.selectors import profiles_nearest, profiles_visible

    rng = np.random.default_rng(0)
    others = profiles_visible()
    returned = set()
    for probe in range(1000):
        space, column = (("embedding", "embedding"), ("fused", "fused"))[probe % 2]
        vector = seeded[space] + rng.normal(0, 0.02 * (probe % 5), len(seeded[space]))
        pairs = profiles_nearest(candidates=others.exclude(**{f"{column}__isnull": True}), column=column, vector=vector,
                         k=10, ef_search=int(rng.integers(10, 400)))
        returned |= {p.customer.key for p, _ in pairs}
    assert returned and seeded["key"] not in returned


def test_erasure_is_idempotent_and_a_failed_attempt_is_completed_by_the_retry(seeded, compliance_user, settings, monkeypatch):
    from privacy import erasure

    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=compliance_user)
    services.privacy_request_verify(request=request, actor=compliance_user)

    def crash(identifiers):
        raise OSError("disk went away")

    monkeypatch.setattr(erasure, "_import_files_erase", crash)
    with pytest.raises(OSError):
        services.privacy_request_execute(request=request, actor=compliance_user)
    request.refresh_from_db()
    assert request.state == RequestState.PARTIALLY_FAILED and "OSError" in request.error
    assert not Customer.objects.filter(key=seeded["key"]).exists()  # the database step had committed
    monkeypatch.undo()

    retried = services.privacy_request_execute(request=request, actor=compliance_user)

    assert retried.state == RequestState.COMPLETED and retried.attempts == 2
    assert retried.receipt["stores"]["customers"]["removed"] == 0  # nothing left to remove
    assert retried.receipt["stores"]["import_files"]["removed"] == 1
    assert residue_found([SUBJECT, EMAIL, PHONE, seeded["key"]], settings) == []
    with pytest.raises(services.RequestError):
        services.privacy_request_execute(request=retried, actor=compliance_user)
    actions = list(AuditEntry.objects.filter(target_id=str(request.pk)).order_by("id").values_list("action", flat=True))
    assert actions == ["privacy_request.filed", "privacy_request.verified", "privacy_request.executing",
                       "privacy_request.failed", "privacy_request.executing", "privacy_request.completed"]


def test_an_operator_may_not_verify_or_execute_and_the_refusal_is_audited(seeded, operator_user, compliance_user):
    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=operator_user)

    with pytest.raises(services.NotAllowed):
        services.privacy_request_verify(request=request, actor=operator_user)
    services.privacy_request_verify(request=request, actor=compliance_user)
    with pytest.raises(services.NotAllowed):
        services.privacy_request_execute(request=request, actor=operator_user)

    request.refresh_from_db()
    assert request.state == RequestState.VERIFIED and Customer.objects.filter(key=seeded["key"]).exists()
    refused = AuditEntry.objects.filter(actor=operator_user).values_list("action", flat=True)
    assert set(refused) == {"privacy_request.filed", "privacy_request.verify_refused", "privacy_request.execute_refused"}


def test_a_suppressed_subject_is_refused_at_every_entrance(seeded, compliance_user, settings, tmp_path):
    queued = tmp_path / "queued.csv"  # an import already queued before the erasure
    queued.write_text(f"customer_id,event_type,item_id,timestamp\n{SUBJECT},view,sku-1,2025-04-01T10:00:00Z\n"
                      f"{SUBJECT},teleport,sku-1,2025-04-01T10:00:00Z\nother-5,view,sku-1,2025-04-01T10:00:00Z\n")
    job = import_job_create(path=queued, fmt="csv")
    _erase(compliance_user)

    api = events_ingest_batch(rows=_events(SUBJECT, 9, 2) + _events("other-6", 9, 1))
    written = customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL}], source="default")
    edges = social_edges_upsert(rows=[{"source_id": "other-7", "target_id": SUBJECT, "relation": "follow"}], source="default")
    late = import_job_run(job_id=job.pk)

    assert (api.refused, api.inserted) == (2, 1)
    assert written == 0 and edges == 0
    assert late.report["refused_suppressed_subject"] == 2 and late.rows_inserted == 1
    assert late.rows_rejected == 0  # the subject's bad line is refused, not quarantined
    assert not Customer.objects.filter(key=seeded["key"]).exists()
    assert residue_found([SUBJECT, EMAIL, seeded["key"]], settings) == []


def test_erasure_during_ingestion_of_the_same_subject_leaves_no_row(seeded, compliance_user):
    stop = threading.Event()
    results = []

    def keep_sending():
        day = 1
        while not stop.is_set():
            results.append(events_ingest_batch(rows=_events(SUBJECT, 1 + day % 28, 2, order_id=f"o{day}")))
            day += 1
        connection.close()

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        while len(results) < 3:
            pass
        _erase(compliance_user)
        before = len(results)
        while len(results) < before + 3:
            pass
    finally:
        stop.set()
        sender.join()

    assert any(r.inserted for r in results) and any(r.refused for r in results)
    assert not Customer.objects.filter(key=seeded["key"]).exists()
    assert not Event.objects.filter(customer__key=seeded["key"]).exists()
    assert ImportJob.objects.exists()


def test_erasure_takes_the_subject_out_of_refreshes_still_owed_in_the_outbox(seeded, compliance_user):
    from ingestion.models import RefreshOutbox

    subject_id = seeded["customer"].pk
    other_id = Customer.objects.exclude(pk=subject_id).exclude(merged_into=subject_id).first().pk
    shared = RefreshOutbox.objects.create(customer_ids=sorted([subject_id, other_id]))
    alone = RefreshOutbox.objects.create(customer_ids=[subject_id])

    assert _erase(compliance_user).state == RequestState.COMPLETED

    assert RefreshOutbox.objects.get(pk=shared.pk).customer_ids == [other_id]
    assert not RefreshOutbox.objects.filter(pk=alone.pk).exists()
