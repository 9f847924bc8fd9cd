"""The admin's workflow screens through Django's test client: segments (rule check, trend,
lookalike, export), training runs and versions, imports (mapping form, progress, rejects) and the
privacy request page (buttons by role, refusals audited)."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from ingestion.models import Customer, ImportJob, ImportStatus, QuarantinedRow
from ingestion.pseudonyms import pii_encrypt_bytes
from privacy import services as privacy_services
from privacy.models import AuditEntry, PrivacyRequest, RequestState
from profiles.models import FeatureSet, Profile
from segments.models import Segment, SegmentKind, SegmentSnapshot
from training.models import ModelVersion, RunStatus, TrainingRun

pytestmark = pytest.mark.django_db

KEYS = {name: name * 32 for name in ("a1", "b2", "c3", "d4")}  # 64 hex characters each


@pytest.fixture
def profiles(db):
    """Four visible profiles: two high-value, two low."""
    feature_set = FeatureSet.objects.create(version=1, feature_names=["monetary"], pipeline=b"", pipeline_sha256="x")
    for name, key in KEYS.items():
        Profile.objects.create(
            customer=Customer.objects.create(key=key, source="test"), feature_set=feature_set, snapshot_at=timezone.now(),
            traits={"monetary": 500 if name in ("a1", "b2") else 20, "frequency": 3}, value_tier="medium",
            lifecycle_stage="active",
        )


# --- segments ------------------------------------------------------------------------------------

def test_rule_check_counts_the_profiles_a_valid_rule_selects(admin_client, profiles):
    response = admin_client.get("/admin/segments/segment/rules/check/", {"rule": "monetary > 100"})

    assert response.status_code == 200
    assert response.json() == {"valid": True, "canonical": "monetary > 100", "matching": 2, "capped": False}


def test_rule_check_reports_the_error_and_its_position(admin_client, profiles):
    response = admin_client.get("/admin/segments/segment/rules/check/", {"rule": "monetary > 100 and colour = 'red'"})

    body = response.json()
    assert response.status_code == 400
    assert body["valid"] is False and "colour" in body["error"]
    assert body["position"] == 19 and body["column"] == 20


def test_rule_check_is_refused_to_staff_who_may_not_add_segments(client, make_staff, profiles):
    compliance_only = make_staff("clara", "Compliance")  # reviews privacy, not segments
    client.force_login(compliance_only)

    response = client.get("/admin/segments/segment/rules/check/", {"rule": "monetary > 100"})

    assert response.status_code == 403


def test_add_page_wires_the_live_rule_check(admin_client):
    html = admin_client.get("/admin/segments/segment/add/").content.decode()

    assert 'id="rule-check-url"' in html and "/admin/segments/segment/rules/check/" in html
    assert "portrait/rule-check.js" in html


def test_saving_an_invalid_rule_shows_the_field_error_and_creates_nothing(admin_client, profiles):
    response = admin_client.post("/admin/segments/segment/add/", {"name": "big", "rule": "monetary >> 100"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "rule" in errors and "at character" in errors["rule"][0]
    assert Segment.objects.count() == 0


def test_segment_page_charts_the_size_of_each_snapshot_in_order(admin_client, profiles):
    segment = Segment.objects.create(name="big", kind=SegmentKind.RULE, rule="monetary > 100", size=2)
    for days_ago, size in ((3, 5), (2, 7), (1, 2)):
        snapshot = SegmentSnapshot.objects.create(segment=segment, size=size)
        SegmentSnapshot.objects.filter(pk=snapshot.pk).update(taken_at=timezone.now() - timedelta(days=days_ago))

    response = admin_client.get(f"/admin/segments/segment/{segment.pk}/change/")

    chart = response.context["trend_chart"]
    assert chart["type"] == "line" and chart["data"]["datasets"][0]["data"] == [5, 7, 2]
    html = response.content.decode()
    assert 'data-chart="chart-segment-trend"' in html
    assert f"/admin/segments/segment/{segment.pk}/export.csv" in html
    assert f"/admin/segments/segment/{segment.pk}/refresh/" in html


def test_cluster_segment_shows_its_description_readably_in_the_list_and_on_its_page(admin_client):
    description = {"summary": "12 customers · Books 41%", "top_categories": [{"name": "Books", "share": 0.41}],
                   "median_frequency": 3.0, "median_net_monetary": 118.4, "median_recency_days": 12.0}
    segment = Segment.objects.create(name="Cluster 2", kind=SegmentKind.CLUSTER, description=description, size=12,
                                     definition={"clustering": "x", "index": 1, "k": 4, "space": "embedding"})

    listing = admin_client.get("/admin/segments/segment/").content.decode()
    page = admin_client.get(f"/admin/segments/segment/{segment.pk}/change/").content.decode()

    assert "cluster 2 of 4 · 12 customers · Books 41%" in listing
    assert "Books 41%" in page and "118.40" in page and 'class="segment-description"' in page


def test_lookalike_form_creates_a_segment_from_pasted_seed_keys(admin_client, profiles, django_capture_on_commit_callbacks):
    response = admin_client.post("/admin/segments/segment/lookalike/", {
        "name": "like the best", "seed_keys": f"{KEYS['a1']}\n{KEYS['b2']}", "size": 2, "method": "centroid",
        "space": "traits",
    })

    segment = Segment.objects.get(name="like the best")
    assert response.status_code == 302 and response["Location"].endswith(f"/segment/{segment.pk}/change/")
    assert segment.kind == SegmentKind.LOOKALIKE
    assert segment.definition["size"] == 2 and len(segment.definition["seed_customer_ids"]) == 2


def test_lookalike_form_takes_an_existing_segment_as_seed(admin_client, profiles):
    from segments.services import segment_create_rule, segment_refresh

    seed = segment_create_rule(name="big", rule="monetary > 100", refresh="none")
    segment_refresh(segment_id=seed.pk)

    admin_client.post("/admin/segments/segment/lookalike/", {
        "name": "like big", "seed_segment": seed.pk, "size": 1, "method": "centroid", "space": "traits"})

    created = Segment.objects.get(name="like big")
    seeds = set(Customer.objects.filter(pk__in=created.definition["seed_customer_ids"]).values_list("key", flat=True))
    assert seeds == {KEYS["a1"], KEYS["b2"]}


def test_lookalike_form_names_the_field_of_a_bad_seed(admin_client, profiles):
    response = admin_client.post("/admin/segments/segment/lookalike/", {
        "name": "x", "seed_keys": "not-a-key", "size": 5, "method": "centroid", "space": "traits"})

    assert response.status_code == 200
    assert "Not a customer key" in response.context["form"].errors["seed_keys"][0]
    assert not Segment.objects.filter(name="x").exists()


def test_export_button_downloads_the_members_as_csv(admin_client, profiles):
    from segments.services import segment_create_rule, segment_refresh

    segment = segment_create_rule(name="big", rule="monetary > 100", refresh="none")
    segment_refresh(segment_id=segment.pk)

    response = admin_client.get(f"/admin/segments/segment/{segment.pk}/export.csv")

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["key", "score", "member_since"]
    assert {r[0] for r in rows[1:]} == {KEYS["a1"], KEYS["b2"]}


def test_segment_pages_do_not_fail_on_an_empty_database(admin_client):
    for url in ("/admin/segments/segment/", "/admin/segments/segment/add/", "/admin/segments/segment/lookalike/",
                "/admin/training/trainingrun/", "/admin/training/modelversion/", "/admin/ingestion/importjob/add/",
                "/admin/privacy/privacyrequest/", "/admin/privacy/auditentry/"):
        assert admin_client.get(url).status_code == 200, url


# --- training ------------------------------------------------------------------------------------

HISTORY = [
    {"epoch": 0, "loss": 6.91, "valid": {"hr@10": 0.05, "ndcg@10": 0.021, "mrr": 0.018}, "seconds": 4.2},
    {"epoch": 1, "loss": 5.40, "valid": {"hr@10": 0.11, "ndcg@10": 0.052, "mrr": 0.041}, "seconds": 4.0},
    {"epoch": 2, "loss": 4.87, "valid": {"hr@10": 0.14, "ndcg@10": 0.069, "mrr": 0.055}, "seconds": 4.1},
]


def test_training_run_page_holds_the_loss_and_validation_series_per_epoch(admin_client):
    run = TrainingRun.objects.create(arch="sasrec", status=RunStatus.SUCCEEDED, history=HISTORY,
                                     metrics={"ndcg@10": 0.066})

    response = admin_client.get(f"/admin/training/trainingrun/{run.pk}/change/")

    loss = response.context["loss_chart"]
    assert loss["data"]["labels"] == [1, 2, 3]
    assert loss["data"]["datasets"][0]["data"] == [6.91, 5.40, 4.87]
    metrics = {d["label"]: d["data"] for d in response.context["metrics_chart"]["data"]["datasets"]}
    assert metrics["ndcg@10"] == [0.021, 0.052, 0.069] and metrics["hr@10"] == [0.05, 0.11, 0.14]
    html = response.content.decode()
    assert 'data-chart="chart-loss"' in html and "5.4000" in html  # the per-epoch table
    assert 'http-equiv="refresh"' not in html


def test_a_running_training_run_page_refreshes_itself(admin_client):
    run = TrainingRun.objects.create(arch="sasrec", status=RunStatus.RUNNING, history=HISTORY[:1])

    html = admin_client.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()

    assert 'http-equiv="refresh"' in html and 'id="run-live"' in html


def test_model_version_page_shows_the_evaluation_table_and_an_activate_button(admin_client, django_capture_on_commit_callbacks):
    import base64
    import json

    import redis

    from config.celery import app as celery_app

    version = ModelVersion.objects.create(name="sasrec-1", metrics={
        "valid": {"ndcg@10": 0.0691, "hr@10": 0.14}, "test": {"ndcg@10": 0.0655, "hr@10": 0.13}, "best_epoch": 2})
    celery_app.control.purge()

    page = admin_client.get(f"/admin/training/modelversion/{version.pk}/change/")
    with django_capture_on_commit_callbacks(execute=True):
        activated = admin_client.post(f"/admin/training/modelversion/{version.pk}/activate/")
    broker = redis.Redis.from_url(celery_app.conf.broker_url)
    messages = [json.loads(raw) for raw in broker.lrange("training", 0, -1)]  # the real broker, no worker reading it
    queued = [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
              if m["headers"]["task"] == "training.tasks.model_version_activate_task"]
    celery_app.control.purge()

    rows = {r["metric"]: (r["valid"], r["test"]) for r in page.context["evaluation"]["rows"]}
    assert rows == {"ndcg@10": (0.0691, 0.0655), "hr@10": (0.14, 0.13)}
    html = page.content.decode()
    assert "0.0691" in html and "0.0655" in html and 'id="version-activate"' in html
    assert activated.status_code == 302 and queued == [version.pk]


# --- imports -------------------------------------------------------------------------------------

def _upload(admin_client, monkeypatch, **fields):
    # the job is queued on commit, which the test's transaction never reaches: the form alone is under test
    data = {"format": "csv", "kind": "events", "source": "shop", "mapping_json": "",
            "upload": SimpleUploadedFile("events.csv", b"user,sku,when\nc1,A,2025-01-01T10:00:00Z\n"), **fields}
    return admin_client.post("/admin/ingestion/importjob/add/", data)


def test_mapping_form_turns_per_field_inputs_into_the_mapping_options(admin_client, monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    response = _upload(admin_client, monkeypatch, column__events__customer_id="user", column__events__item_id="sku",
                       column__events__timestamp="when", constant__events__event_type="purchase",
                       mapping_json='{"delimiter": ","}')

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ImportJob.objects.get().options == {
        "delimiter": ",", "mapping": {"customer_id": "user", "item_id": "sku", "timestamp": "when"},
        "constants": {"event_type": "purchase"}}


def test_mapping_form_rejects_unknown_target_fields_naming_them(admin_client, monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    response = _upload(admin_client, monkeypatch, mapping_json='{"mapping": {"colour": "c", "customer_id": "user"}}')

    assert response.status_code == 200
    error = response.context["adminform"].form.errors["mapping_json"][0]
    assert "colour" in error and "customer_id" in error  # the unknown one, and the list of known ones
    assert ImportJob.objects.count() == 0


def test_mapping_form_refuses_a_field_given_as_column_and_constant_and_inputs_of_another_kind(
    admin_client, monkeypatch, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)

    response = _upload(admin_client, monkeypatch, column__events__event_type="kind", constant__events__event_type="view",
                       column__customers__email="mail")

    errors = response.context["adminform"].form.errors
    assert "column and a constant" in errors["constant__events__event_type"][0]
    assert "Only for customers files" in errors["column__customers__email"][0]
    assert ImportJob.objects.count() == 0


def test_job_page_shows_a_progress_bar_with_counts(admin_client):
    job = ImportJob.objects.create(format="csv", file_path="/tmp/x.csv", status=ImportStatus.RUNNING,
                                   progress_total=1000, progress_done=250, rows_read=40, rows_inserted=38, rows_rejected=2)

    html = admin_client.get(f"/admin/ingestion/importjob/{job.pk}/change/").content.decode()

    assert '<progress id="import-progress" max="1000" value="250">' in html
    assert "40 rows read · 38 inserted · 2 rejected" in html and 'http-equiv="refresh"' in html


def _job_with_rejects():
    job = ImportJob.objects.create(format="csv", file_path="/tmp/x.csv", status=ImportStatus.SUCCEEDED)
    QuarantinedRow.objects.create(job=job, line_number=7, reason="timestamp: not a valid date/time",
                                  raw_encrypted=pii_encrypt_bytes(b"c2,B,purchase,not-a-date,3"))
    QuarantinedRow.objects.create(job=job, line_number=3, reason="event_type: unknown type 'teleport'",
                                  raw_encrypted=pii_encrypt_bytes(b'c1,"A, B",teleport,2025-01-01T10:00:00Z,'))
    return job


def test_rejects_csv_holds_the_bad_lines_with_line_numbers_and_reasons(admin_client):
    job = _job_with_rejects()

    page = admin_client.get(f"/admin/ingestion/importjob/{job.pk}/change/").content.decode()
    response = admin_client.get(f"/admin/ingestion/importjob/{job.pk}/rejects.csv")

    assert f"/admin/ingestion/importjob/{job.pk}/rejects.csv" in page
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [["line", "reason", "raw"],
                    ["3", "event_type: unknown type 'teleport'", 'c1,"A, B",teleport,2025-01-01T10:00:00Z,'],
                    ["7", "timestamp: not a valid date/time", "c2,B,purchase,not-a-date,3"]]


def test_rejects_csv_is_refused_without_permission_to_see_quarantined_rows(client, django_user_model):
    job = _job_with_rejects()
    viewer = django_user_model.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)

    assert client.get(f"/admin/ingestion/importjob/{job.pk}/change/").status_code == 200
    assert client.get(f"/admin/ingestion/importjob/{job.pk}/rejects.csv").status_code == 403


# --- privacy -------------------------------------------------------------------------------------

@pytest.fixture
def received(make_staff):
    filer = make_staff("filer", "Operators")
    return privacy_services.privacy_request_file(kind="restriction", source="default", external_id="subject-1", actor=filer)


def test_operator_sees_no_decision_buttons_and_a_forced_execute_is_refused_and_audited(
    client, make_staff, received
):
    privacy_services.privacy_request_verify(request=received, actor=make_staff("cora", "Compliance"))
    operator = make_staff("otto", "Operators")
    client.force_login(operator)

    page = client.get(f"/admin/privacy/privacyrequest/{received.pk}/change/").content.decode()
    response = client.post(f"/admin/privacy/privacyrequest/{received.pk}/decide/execute/", follow=True)

    assert 'id="request-execute"' not in page and 'id="request-decisions-not-allowed"' in page
    assert "Only the compliance group" in response.content.decode()
    assert PrivacyRequest.objects.get(pk=received.pk).state == RequestState.VERIFIED
    refusal = AuditEntry.objects.get(action="privacy_request.execute_refused")
    assert refusal.actor == operator and refusal.target_id == str(received.pk)


def test_operator_forced_close_is_refused_and_audited_too(client, make_staff, received):
    client.force_login(make_staff("otto", "Operators"))

    client.post(f"/admin/privacy/privacyrequest/{received.pk}/decide/close/")

    assert AuditEntry.objects.filter(action="privacy_request.close_refused", target_id=str(received.pk)).count() == 1


def test_compliance_user_verifies_and_executes_with_the_page_buttons_and_sees_the_receipt(
    client, make_staff, received
):
    client.force_login(make_staff("cora", "Compliance"))
    url = f"/admin/privacy/privacyrequest/{received.pk}"

    before = client.get(f"{url}/change/").content.decode()
    client.post(f"{url}/decide/verify/")
    client.post(f"{url}/decide/execute/")
    after = client.get(f"{url}/change/").content.decode()

    assert 'id="request-verify"' in before and 'id="request-execute"' in before
    assert PrivacyRequest.objects.get(pk=received.pk).state == RequestState.COMPLETED
    assert 'id="receipt"' in after and "segment memberships" in after
    trail = after[after.index('id="request-audit"'):]
    assert all(a in trail for a in ("privacy_request.filed", "privacy_request.verified", "privacy_request.completed"))


def test_a_decision_that_does_not_fit_the_state_is_refused_with_the_reason(client, make_staff, received):
    client.force_login(make_staff("cora", "Compliance"))

    response = client.post(f"/admin/privacy/privacyrequest/{received.pk}/decide/close/", follow=True)

    assert "is not completed" in response.content.decode()
    assert PrivacyRequest.objects.get(pk=received.pk).state == RequestState.RECEIVED


def test_decide_refuses_get_and_unknown_steps(client, make_staff, received):
    client.force_login(make_staff("cora", "Compliance"))

    assert client.get(f"/admin/privacy/privacyrequest/{received.pk}/decide/execute/").status_code == 405
    assert client.post(f"/admin/privacy/privacyrequest/{received.pk}/decide/delete/").status_code == 404
    assert PrivacyRequest.objects.get(pk=received.pk).state == RequestState.RECEIVED
