"""A real browser (Debian's Chromium via Playwright) runs the admin's workflows: an import with the
per-field mapping and its rejects, a privacy request through verify and execute as compliance and
refused to an operator, a rule segment's live validation, and a training run's loss chart.
Full-page screenshots go to var/screenshots/ for reviewers."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import STAFF_PASSWORD
from tests.interfaces.browser import admin_log_in, chromium_page, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _log_in(page, live_server, username: str) -> None:
    admin_log_in(page, live_server.url, username, STAFF_PASSWORD)


# (a) -------------------------------------------------------------------------------------------

def test_import_with_per_field_mapping_quarantines_the_bad_line_and_offers_the_rejects(
    superuser, live_server, celery_worker, tmp_path, settings, browser_page
):
    events = tmp_path / "shop-events.csv"
    events.write_text(
        "user,sku,action,when,amount\n"
        "c1,A,view,2025-01-01T10:00:00Z,\n"
        "c1,A,purchase,2025-01-01T10:01:00Z,9.99\n"
        "c2,B,teleport,2025-01-01T10:02:00Z,\n"
    )
    page = browser_page
    _log_in(page, live_server, "operator")

    page.goto(f"{live_server.url}/admin/ingestion/importjob/add/")
    page.select_option("#id_format", "csv")
    page.fill("#id_source", "shop")
    page.set_input_files("#id_upload", str(events))
    assert page.is_hidden("tbody[data-kind=customers]")  # only the chosen kind's fields are shown
    for target, column in (("customer_id", "user"), ("item_id", "sku"), ("event_type", "action"), ("timestamp", "when"),
                           ("value", "amount")):
        page.fill(f"#id_column__events__{target}", column)
    screenshot(page, "import-upload-mapping")
    page.click("input[name=_save]")

    page.wait_for_selector("ul.messagelist li.success")
    page.click("table#result_list tbody tr th a")
    page.wait_for_selector("div.field-status >> text=成功", timeout=60_000)
    progress = page.locator("#import-progress")
    quarantined = page.inner_text("#quarantined_rows-group")
    screenshot(page, "import-job")
    with page.expect_download() as download_info:
        page.click("#import-rejects")
    rejects = Path(download_info.value.path()).read_text()

    assert progress.get_attribute("value") == progress.get_attribute("max")
    assert page.inner_text("div.field-rows_inserted").split()[-1] == "2"
    assert "teleport" in quarantined and "event_type: unknown type" in quarantined
    assert rejects.splitlines()[0] == "line,reason,raw"
    assert rejects.splitlines()[1].startswith("4,") and "teleport" in rejects.splitlines()[1]
    assert len(rejects.splitlines()) == 2


# (b), (c) --------------------------------------------------------------------------------------

@pytest.fixture
def subject(transactional_db):
    from ingestion.services import customers_upsert, events_ingest_batch

    customers_upsert(rows=[{"external_id": "subject-42", "email": "subject@example.com"}], source="default")
    events_ingest_batch(rows=[{"customer_id": "subject-42", "event_type": "purchase", "item_id": "sku-1",
                               "timestamp": "2025-03-01T10:00:00Z", "value": "12.50"}])
    return "subject-42"


def test_compliance_user_files_verifies_and_executes_an_erasure_and_sees_the_receipt(
    subject, compliance_user, live_server, celery_worker, browser_page
):
    page = browser_page
    _log_in(page, live_server, "cora")

    page.goto(f"{live_server.url}/admin/privacy/privacyrequest/add/")
    page.select_option("#id_kind", "erasure")
    page.fill("#id_source", "default")
    page.fill("#id_external_id", subject)
    page.click("input[name=_save]")
    page.wait_for_selector("table#result_list")
    page.click("table#result_list tbody tr th a")
    page.wait_for_selector("#request-decisions")
    assert page.is_disabled("#request-execute") and page.is_enabled("#request-verify")

    page.click("#request-verify")
    page.wait_for_selector("ul.messagelist li.success")
    assert page.is_enabled("#request-execute")
    page.click("#request-execute")
    page.wait_for_selector("#receipt")
    receipt = page.inner_text("#receipt")
    trail = page.inner_text("#request-audit")
    screenshot(page, "privacy-request-compliance")

    assert "事件" in receipt and "客户" in receipt and "流失、价值与风险预测" in receipt  # labelled stores, in Chinese
    assert "privacy_request.verified" in trail and "privacy_request.completed" in trail
    assert page.is_enabled("#request-close")


def test_operator_finds_no_execute_button_and_a_forced_post_is_refused_and_audited(
    subject, live_server, browser_page_after_verified_request
):
    page, request_url = browser_page_after_verified_request

    page.goto(request_url)
    assert page.locator("#request-execute").count() == 0
    assert page.is_visible("#request-decisions-not-allowed")
    screenshot(page, "privacy-request-operator")
    # forge the POST a removed button would have sent, with the page's own CSRF token
    page.evaluate("""(action) => {
        const form = document.createElement("form");
        form.method = "post"; form.action = action;
        const token = document.querySelector("input[name=csrfmiddlewaretoken]").cloneNode();
        form.appendChild(token); document.body.appendChild(form); form.submit();
    }""", request_url.replace("/change/", "/decide/execute/"))
    page.wait_for_selector("ul.messagelist li.error")
    trail = page.inner_text("#request-audit")
    screenshot(page, "privacy-request-operator-refused")

    assert "privacy_request.execute_refused" in trail
    assert page.locator("#receipt").count() == 0


@pytest.fixture
def browser_page_after_verified_request(subject, live_server, operator_user, compliance_user):
    from privacy import services

    filed = services.privacy_request_file(kind="erasure", source="default", external_id=subject,
                                          actor=operator_user)
    services.privacy_request_verify(request=filed, actor=compliance_user)
    url = f"{live_server.url}/admin/privacy/privacyrequest/{filed.pk}/change/"
    yield from _logged_in_page(live_server, "otto", url)


def _logged_in_page(live_server, username, url):
    with chromium_page(language="zh-hans") as page:
        _log_in(page, live_server, username)
        yield page, url


# (d) -------------------------------------------------------------------------------------------

@pytest.fixture
def profiles(transactional_db):
    from ingestion.models import Customer
    from profiles.models import FeatureSet, Profile
    from segments.models import Segment, SegmentKind, SegmentSnapshot

    feature_set = FeatureSet.objects.create(version=1, feature_names=["monetary"], pipeline=b"", pipeline_sha256="x")
    for i in range(5):
        Profile.objects.create(
            customer=Customer.objects.create(key=f"{i:064x}", source="test"), feature_set=feature_set,
            snapshot_at=timezone.now(), traits={"monetary": 100 * i}, value_tier="medium", lifecycle_stage="active",
        )
    trended = Segment.objects.create(name="big spenders", kind=SegmentKind.RULE, rule="monetary > 150", size=3,
                                     status="ready", description={"summary": "3 customers · median 2 orders"})
    for days_ago, size in ((4, 1), (3, 2), (2, 2), (1, 3)):
        snapshot = SegmentSnapshot.objects.create(segment=trended, size=size)
        SegmentSnapshot.objects.filter(pk=snapshot.pk).update(taken_at=timezone.now() - timedelta(days=days_ago))
    return trended


def test_rule_segment_shows_live_validation_then_the_count_of_a_good_rule(profiles, superuser, live_server, browser_page):
    page = browser_page
    _log_in(page, live_server, "operator")

    page.goto(f"{live_server.url}/admin/segments/segment/{profiles.pk}/change/")
    page.wait_for_selector("canvas[data-chart=chart-segment-trend][data-rendered]")
    trend_points = int(page.get_attribute("canvas[data-chart=chart-segment-trend]", "data-rendered"))
    screenshot(page, "segment-trend")

    page.goto(f"{live_server.url}/admin/segments/segment/add/")
    page.fill("#id_name", "big spenders again")
    page.fill("#id_rule", "monetary > 150 and colour = 'red'")
    page.wait_for_selector("#rule-check[data-state=invalid]")
    invalid = page.inner_text("#rule-check")
    screenshot(page, "segment-rule-invalid")
    page.fill("#id_rule", "monetary > 150")
    page.wait_for_selector("#rule-check[data-state=valid]")
    valid = page.inner_text("#rule-check")
    screenshot(page, "segment-rule-valid")
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")

    assert trend_points == 4
    assert "colour" in invalid and "^" in invalid
    assert "3" in valid.split()  # profiles with monetary 200, 300 and 400


# (e) -------------------------------------------------------------------------------------------

@pytest.fixture
def finished_run(transactional_db):
    from training.models import ModelVersion, RunStatus, TrainingRun

    history = [{"epoch": e, "loss": round(7.0 - 0.6 * e + 0.02 * e * e, 4),
                "valid": {"hr@10": round(0.04 + 0.025 * e, 4), "ndcg@10": round(0.02 + 0.012 * e, 4),
                          "mrr": round(0.015 + 0.009 * e, 4)}, "seconds": 4.1}
               for e in range(8)]
    run = TrainingRun.objects.create(arch="sasrec", status=RunStatus.SUCCEEDED, device="cuda", history=history,
                                     metrics={"hr@10": 0.21, "ndcg@10": 0.1, "mrr": 0.079},
                                     started_at=timezone.now() - timedelta(minutes=3), finished_at=timezone.now())
    ModelVersion.objects.create(name="sasrec-1", run=run, metrics={
        "valid": history[-1]["valid"], "test": run.metrics, "best_epoch": 7},
        gate={"metric": "valid ndcg@10", "candidate": 0.104, "active": None, "passed": True})
    return run


def test_training_run_page_draws_the_loss_and_metric_charts(finished_run, superuser, live_server, browser_page):
    page = browser_page
    _log_in(page, live_server, "operator")

    page.goto(f"{live_server.url}/admin/training/trainingrun/{finished_run.pk}/change/")
    page.wait_for_selector("canvas[data-chart=chart-loss][data-rendered]")
    loss_points = int(page.get_attribute("canvas[data-chart=chart-loss]", "data-rendered"))
    metric_points = int(page.get_attribute("canvas[data-chart=chart-valid-metrics]", "data-rendered"))
    epochs = page.locator("#run-epochs tbody tr").count()
    screenshot(page, "training-run")
    page.click("div.field-model_version_link a")
    page.wait_for_selector("#version-evaluation table")
    evaluation = page.inner_text("#version-evaluation")
    screenshot(page, "model-version")

    assert loss_points == 8 and metric_points == 24 and epochs == 8
    assert "ndcg@10" in evaluation and "0.1000" in evaluation
