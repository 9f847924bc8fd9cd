"""Churn, purchase and lifetime-value predictions on a synthetic shop whose truth is known: who
churned and who is a loyal big spender. Fitted on the event store, served by the API, refreshed
when new events arrive, and usable in segment rules."""

from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from sklearn.metrics import roc_auc_score

from crm import services
from pipeline import flows
from crm.models import Audience, ClvFit, CustomerPrediction
from ingestion.models import CustomerGroundTruth

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def shop(django_db_setup, django_db_blocker, make_shop):
    with django_db_blocker.unblock():
        make_shop(customers=3000, events=150_000, seed=11)
        fit = services.clv_fit()
        yield fit
        call_command("flush", interactive=False, verbosity=0)


def _truth_and_predictions():
    predictions = {p.customer_id: p for p in CustomerPrediction.objects.all()}
    truth = dict(CustomerGroundTruth.objects.filter(customer_id__in=predictions).values_list("customer_id", "segment"))
    churned = dict(CustomerGroundTruth.objects.filter(customer_id__in=predictions)
                   .values_list("customer_id", "churned_at"))
    ids = sorted(truth)
    return ids, truth, churned, predictions


def test_fit_learns_corrections_and_scores_every_buyer(shop):
    fit = ClvFit.objects.get()
    print("evaluation", fit.evaluation, "importance", fit.importance[:5])
    assert fit.uses_trees and fit.training_rows > fit.customers
    assert CustomerPrediction.objects.count() == fit.customers
    assert set(fit.bgnbd_params) == {"r", "alpha", "a", "b"}
    # the back-test judged the fit against BG/NBD on the same customers
    assert fit.evaluation["customers"] > 100 and fit.evaluation["model"]["mae"] > 0


def test_churners_rank_above_customers_who_stay(shop):
    ids, truth, churned, predictions = _truth_and_predictions()
    is_churner = np.array([churned[i] is not None for i in ids])
    churn = np.array([predictions[i].churn_probability for i in ids])
    auc = roc_auc_score(is_churner, churn)
    print("churn AUC", auc, "churners", is_churner.sum(), "of", len(ids))
    # random ranking is 0.5; measured 0.84 on this shop: the bar leaves room for another
    # pseudonym key (customer order changes LightGBM's bagging) without letting a broken model pass
    assert auc >= 0.75


def test_loyal_big_spenders_rank_at_the_top_by_lifetime_value(shop):
    ids, truth, churned, predictions = _truth_and_predictions()
    spender = np.array([truth[i] == "loyal_big_spender" for i in ids])
    value = np.array([predictions[i].lifetime_value for i in ids])
    auc = roc_auc_score(spender, value)
    top = np.argsort(-value)[: spender.sum()]
    print("spender AUC", auc, "precision at their count", spender[top].mean(), "base", spender.mean())
    # measured 0.85 and a top-list three times richer in big spenders than the population
    assert auc >= 0.75
    assert spender[top].mean() >= 2 * spender.mean()


def test_profile_api_serves_the_forecast_with_its_explanation(shop, make_api_client):
    prediction = CustomerPrediction.objects.filter(source="model").exclude(drivers=[]).select_related("customer").first()

    body = make_api_client("profiles:read").get(f"/api/v1/profiles/{prediction.customer.key}").json()

    served = body["predictions"]
    assert served["churn_probability"] == pytest.approx(prediction.churn_probability, abs=1e-4)
    assert served["expected_spend"] == pytest.approx(prediction.expected_spend, abs=0.01)
    assert served["horizon_days"] == 90 and served["predicted_by"] == "model"
    assert served["baseline"]["bgnbd_expected_purchases"] == pytest.approx(prediction.bgnbd_expected_purchases, abs=1e-4)
    assert [d["feature"] for d in served["drivers"]] == [d["feature"] for d in prediction.drivers]
    assert all("expected purchases ×" in d["text"] for d in served["drivers"])
    assert [a["audience"] for a in served["audiences"]] == prediction.audiences
    assert served["risk"]["score"] == prediction.risk_score


def test_a_prediction_is_read_without_its_fit_s_model_and_shown_without_another_query(shop):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from crm.explain import prediction_explained
    from crm.selectors import customer_prediction_get

    customer_id = CustomerPrediction.objects.filter(source="model").values_list("customer_id", flat=True).first()
    with CaptureQueriesContext(connection) as captured:
        prediction = customer_prediction_get(customer_id=customer_id)
        explained = prediction_explained(prediction)

    assert len(captured.captured_queries) == 1
    assert {"count_model", "evaluation", "importance", "calibration"} <= prediction.fit.get_deferred_fields()
    assert explained["horizon_days"] == shop.horizon_days and explained["fitted_at"] == shop.created_at
    assert explained["churn_probability"] == pytest.approx(CustomerPrediction.objects.get(pk=customer_id).churn_probability,
                                                           abs=1e-4)


def test_profile_api_says_null_for_a_customer_without_purchases(shop, make_api_client):
    from profiles.selectors import profiles_visible

    # a visible profile: an opted-out customer has no prediction either, but no profile an app may read
    profile = profiles_visible().filter(customer__prediction__isnull=True).select_related("customer").first()
    assert profile is not None, "the shop has visitors who never bought"

    body = make_api_client("profiles:read").get(f"/api/v1/profiles/{profile.customer.key}").json()

    assert body["predictions"] is None


def test_audiences_follow_their_rules(shop):
    fit = ClvFit.objects.get()
    thresholds = fit.thresholds
    rows = list(CustomerPrediction.objects.all())
    for row in rows:
        assert (Audience.LIKELY_TO_CHURN in row.audiences) == (row.churn_probability >= thresholds["churn_probability"])
        assert (Audience.HIGH_VALUE in row.audiences) == (row.expected_spend >= thresholds["high_value_expected_spend"])
        if Audience.AT_RISK_HIGH_VALUE in row.audiences:
            assert row.past_spend >= thresholds["high_value_past_spend"] and Audience.LIKELY_TO_CHURN in row.audiences
    high_value = sum(Audience.HIGH_VALUE in row.audiences for row in rows)
    assert high_value == pytest.approx(0.2 * len(rows), rel=0.05)
    assert any(Audience.RISING in row.audiences for row in rows)


def test_crm_audiences_are_segments_through_the_rule_language(shop):
    from profiles.selectors import profiles_visible
    from segments import services as segment_services

    segment = segment_services.segment_create_rule(
        name="churn watch", rule='audience = "likely_to_churn" and risk_band >= "low" and expected_spend > 0',
        refresh="none")
    size = segment_services.segment_refresh(segment_id=segment.pk)

    expected = CustomerPrediction.objects.filter(
        audiences__contains=["likely_to_churn"], expected_spend__gt=0, customer__profile__isnull=False).count()
    assert size == expected > 0
    # `!=` is the complement over all visible profiles, customers without a forecast included
    churning = segment_services.segment_create_rule(name="churning", rule='audience = "likely_to_churn"', refresh="none")
    staying = segment_services.segment_create_rule(name="staying", rule='audience != "likely_to_churn"', refresh="none")
    assert (segment_services.segment_refresh(segment_id=churning.pk) + segment_services.segment_refresh(segment_id=staying.pk)
            == profiles_visible().count())


def test_a_new_purchase_refreshes_the_forecast_in_real_time(shop):
    from django.db.models import Max

    from ingestion.models import Event, Item
    from ingestion.import_jobs import SYNTHETIC_SOURCE
    from ingestion.services import events_ingest_batch
    from pipeline.flows import customers_refresh

    lapsed = (CustomerPrediction.objects.filter(expected_purchases__gt=0).select_related("customer")
              .order_by("probability_active").first())
    before = (lapsed.probability_active, lapsed.expected_purchases, lapsed.computed_at)
    now = Event.objects.aggregate(latest=Max("occurred_at"))["latest"]
    external_id = _external_id_of(lapsed.customer_id)
    sku = Item.objects.values_list("sku", flat=True).first()
    events_ingest_batch(rows=[{"event_id": "crm-rt-1", "customer_id": external_id, "item_id": sku,
                               "event_type": "purchase", "timestamp": now.isoformat(), "value": "80.00"}],
                        source=SYNTHETIC_SOURCE)

    customers_refresh(customer_ids=[lapsed.customer_id])

    after = CustomerPrediction.objects.get(pk=lapsed.pk)
    assert after.computed_at > before[2]
    assert after.probability_active > before[0] and after.expected_purchases > before[1]

    # a view changes no forecast: the refresh updates the profile and leaves the forecast alone
    from crm.selectors import customers_with_new_orders

    CustomerPrediction.objects.filter(pk=lapsed.pk).update(computed_at=after.computed_at + timedelta(hours=1))
    assert customers_with_new_orders(customer_ids=[lapsed.customer_id]) == []
    after = CustomerPrediction.objects.get(pk=lapsed.pk)
    events_ingest_batch(rows=[{"event_id": "crm-rt-2", "customer_id": external_id, "item_id": sku,
                               "event_type": "view", "timestamp": now.isoformat()}], source=SYNTHETIC_SOURCE)
    customers_refresh(customer_ids=[lapsed.customer_id])
    assert CustomerPrediction.objects.get(pk=lapsed.pk).computed_at == after.computed_at


def _external_id_of(customer_id: int) -> str:
    from ingestion.pseudonyms import customer_key
    from ingestion.import_jobs import SYNTHETIC_SOURCE
    from ingestion.models import Customer

    key = Customer.objects.get(pk=customer_id).key
    for number in range(1, 3001):
        candidate = f"C{number:07d}"
        if customer_key(source=SYNTHETIC_SOURCE, external_id=candidate) == key:
            return candidate
    raise AssertionError("no synthetic external id matches")


def test_risk_never_reads_protected_attributes(shop):
    from ingestion.models import Customer

    risky = CustomerPrediction.objects.filter(risk_score__gt=0).order_by("-risk_score").first()
    before = (risky.risk_score, risky.risk_band, risky.risk_reasons)
    Customer.objects.filter(pk=risky.pk).update(age=19, age_band="18-24", gender="f", region="west")

    services.predictions_score(customer_ids=[risky.pk])

    after = CustomerPrediction.objects.get(pk=risky.pk)
    assert (after.risk_score, after.risk_band, after.risk_reasons) == before
    assert before[2] and all(line["rule"] in {"refund_rate", "refunded_value_share", "cancellation_rate", "chargebacks",
                                                "new_account_large_order"} for line in before[2])


def test_erasure_removes_the_prediction(shop, django_user_model):
    from privacy.services import privacy_request_execute, privacy_request_file, privacy_request_verify

    prediction = CustomerPrediction.objects.select_related("customer").first()
    officer = django_user_model.objects.create_superuser("dpo", "dpo@example.com", "pw-for-tests-only")
    request = privacy_request_file(kind="erasure", source="synthetic", external_id=_external_id_of(prediction.pk),
                                   actor=officer)
    privacy_request_verify(request=request, actor=officer)
    request = privacy_request_execute(request=request, actor=officer)

    assert request.receipt["stores"]["predictions"]["removed"] == 1
    assert not CustomerPrediction.objects.filter(pk=prediction.pk).exists()


def test_category_demand_forecast_is_stored_with_its_backtest(shop):
    from crm.models import CategoryDemand, DemandForecast
    from crm.selectors import demand_table
    from ingestion.models import Event, EventType

    forecast = services.demand_forecast_make(fit=shop, weeks=4)

    assert DemandForecast.objects.filter(pk=forecast.pk).exists()
    weeks, table = demand_table(forecast=forecast)
    assert len(weeks) == 4 and (weeks[1] - weeks[0]).days == 7
    assert weeks[0] > shop.cutoff.date()
    rows = CategoryDemand.objects.filter(forecast=forecast)
    assert rows.count() == 4 * len(table) and all(r.expected_purchases >= 0 for r in rows)
    # the forecast's weekly volume is of the order of the shop's recent weekly purchase lines
    recent = Event.objects.filter(event_type=EventType.PURCHASE,
                                  occurred_at__gte=shop.cutoff - timedelta(weeks=4)).count()
    forecast_total = sum(row["total"] for row in table)
    assert 0.3 * recent < forecast_total < 3 * recent
    assert forecast.backtest["model_mape"] is not None and forecast.backtest["naive_mape"] is not None
    assert {row["category"] for row in forecast.backtest["table"]} >= {row["category"] for row in table[:3]}


def test_admin_pages_show_the_fit_the_predictions_and_the_demand(shop, admin_client):
    services.demand_forecast_make(fit=shop, weeks=4)

    fits = admin_client.get("/admin/crm/clvfit/")
    fit_page = admin_client.get(f"/admin/crm/clvfit/{shop.pk}/change/").content.decode()
    churners = admin_client.get("/admin/crm/customerprediction/", {"audience": "likely_to_churn"})
    demand = admin_client.get("/admin/crm/demandforecast/latest/", follow=True).content.decode()

    assert fits.status_code == 200 and 'id="clv-refit"' in fits.content.decode()
    assert "BG/NBD" in fit_page and f"{shop.evaluation['model']['mae']:.4f}" in fit_page
    expected = CustomerPrediction.objects.filter(audiences__contains=["likely_to_churn"]).count()
    assert churners.context["cl"].result_count == expected > 0
    assert 'data-chart="chart-demand"' in demand and 'id="demand-table"' in demand


def test_profile_page_shows_the_forecast(shop, admin_client):
    prediction = CustomerPrediction.objects.filter(source="model").exclude(drivers=[]).first()

    html = admin_client.get(f"/admin/profiles/profile/{prediction.pk}/change/").content.decode()

    assert 'id="profile-prediction"' in html
    assert f"{round(prediction.churn_probability * 100)}%" in html
    assert "expected purchases ×" in html


def test_each_fit_keeps_the_crm_audiences_as_refreshed_segments(shop):
    from segments.models import Segment

    sizes = flows.audience_segments_refresh()

    assert Segment.objects.filter(name__startswith="CRM · ").count() == 4
    for audience, name in flows.AUDIENCE_SEGMENT_NAMES.items():
        segment = Segment.objects.get(name=name)
        assert segment.rule == f'audience = "{audience.value}"'
        members = CustomerPrediction.objects.filter(audiences__contains=[audience.value],
                                                    customer__profile__isnull=False).count()
        assert sizes[name] == segment.size == members


def test_demand_api_serves_the_latest_forecast(shop, make_api_client):
    from crm.models import CategoryDemand

    forecast = services.demand_forecast_make(fit=shop, weeks=4)
    client = make_api_client("profiles:read")

    body = client.get("/api/v1/demand/categories").json()

    assert len(body["weeks"]) == 4 and body["categories"]
    first = body["categories"][0]
    stored = CategoryDemand.objects.filter(forecast=forecast, category=first["category"]).order_by("week_start")
    assert first["expected"] == [round(row.expected_purchases, 3) for row in stored]
    assert first["total"] >= body["categories"][-1]["total"]
    assert make_api_client("events:write").get("/api/v1/demand/categories").status_code == 403


def test_opting_out_of_profiling_removes_the_forecast_now_and_at_the_next_fit(shop, django_user_model):
    from ingestion.models import Customer
    from privacy.services import privacy_request_execute, privacy_request_file, privacy_request_verify

    first, second = CustomerPrediction.objects.order_by("pk").values_list("pk", flat=True)[:2]
    officer = django_user_model.objects.create_superuser("dpo2", "dpo2@example.com", "pw-for-tests-only")
    request = privacy_request_file(kind="restriction", source="synthetic", external_id=_external_id_of(first),
                                   actor=officer)
    privacy_request_verify(request=request, actor=officer)
    request = privacy_request_execute(request=request, actor=officer)
    # consent withdrawn some other way (e.g. the customer record was edited): the next fit drops the forecast
    Customer.objects.filter(pk=second).update(consent_profiling=False)

    assert request.receipt["stores"]["predictions"]["removed"] == 1
    assert not CustomerPrediction.objects.filter(pk=first).exists()
    services.clv_fit()
    assert not CustomerPrediction.objects.filter(pk__in=[first, second]).exists()
    assert CustomerPrediction.objects.exclude(fit=ClvFit.objects.order_by("-pk").first()).count() == 0
