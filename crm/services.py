"""Writes of the CLV model, the customer predictions and the audiences built on them.

`clv_fit` fits the model on the whole event store (nightly, after a batch build, or from the
admin), judges it on a back-test against BG/NBD, and scores every customer; `predictions_score`
re-scores some customers with the latest fit (real-time refresh after new events). The audiences
become segments in pipeline.flows.clv_refit, which runs fit → demand → audience segments.
"""

from __future__ import annotations

import functools
import math

import pandas as pd
from django.conf import settings
from django.db import connection, transaction

from crm import clv, demand
from crm.clv import FEATURES, ClvModel, ClvModelConfig
from crm.models import Audience, CategoryDemand, ClvFit, CustomerPrediction, DemandForecast
from crm.risk import OrderBehaviour, risk_score
from crm.selectors import (
    clv_fit_latest,
    day_number,
    day_start,
    median_order_value,
    order_behaviour_read,
    purchase_days_read,
    purchase_lines_read,
)

YEAR_WEEKS = 52.0
MIN_HISTORY_WEEKS = 8  # the first back-test needs four weeks of history and four to forecast


class NotEnoughHistory(Exception):
    """The store holds too few purchases to fit even BG/NBD."""


def _store_now():
    from profiles.features import store_as_of

    return store_as_of()


def _model_of(fit: ClvFit) -> ClvModel:
    return _model_cached(fit.pk, fit)


@functools.lru_cache(maxsize=4)
def _model_cached(fit_id: int, fit: ClvFit) -> ClvModel:
    """A fit never changes once saved, so its parsed model is kept per worker process (keyed by id)."""
    return ClvModel(
        bgnbd=clv.BgNbd(params=fit.bgnbd_params, spend_params=fit.spend_params, mean_value=fit.mean_value),
        count_model=fit.count_model, calibration=tuple(fit.calibration or (0.0, 0.0)), config=ClvModelConfig(),
        backtest_cutoffs=list(fit.backtest_days), training_rows=fit.training_rows,
    )


def _fit_model(days: pd.DataFrame, cutoff: int) -> ClvModel:
    first_day = int(days["day"].min())
    cutoffs = clv.backtest_cutoffs(first_day=first_day, cutoff=cutoff)
    customers = days["customer"].nunique()
    if customers >= settings.CLV_MIN_CUSTOMERS_FOR_TREES and len(cutoffs) >= 2:
        return ClvModel.fit(days, cutoff=cutoff, backtest_cutoffs=cutoffs)
    return ClvModel.bgnbd_only(days, cutoff=cutoff)


def _evaluation(days: pd.DataFrame, cutoff: int, horizon_days: int) -> dict:
    """Pretend it is one horizon ago: fit on what was known then, forecast the horizon that has
    since happened, and score both models as bench/clv_cdnow.py does."""
    past_cutoff = cutoff - horizon_days
    past = days[days["day"] < past_cutoff]
    if past.empty or past_cutoff - past["day"].min() < 7 * MIN_HISTORY_WEEKS or past["customer"].nunique() < 20:
        return {"skipped": "less history than one horizon plus eight weeks"}
    model = _fit_model(past, past_cutoff)
    predicted = model.predict(past, cutoff=past_cutoff, horizon_weeks=horizon_days / 7)
    later = days[(days["day"] >= past_cutoff) & (days["day"] < cutoff)]
    actual = later.groupby("customer").size().reindex(predicted.index).fillna(0.0).to_numpy()
    return {
        "from_day": past_cutoff, "customers": len(actual), "actual_total": float(actual.sum()),
        "uses_trees": bool(model.count_model),
        "model": clv.forecast_scores(predicted["expected_purchases"], predicted["probability_active"], actual),
        "bgnbd": clv.forecast_scores(predicted["bgnbd_expected_purchases"], predicted["bgnbd_probability_active"],
                                     actual),
    }


def clv_fit(*, horizon_days: int | None = None) -> ClvFit:
    """Fit on every purchase in the store, back-test against BG/NBD, then score every customer."""
    horizon_days = horizon_days or settings.CLV_HORIZON_DAYS
    if horizon_days < 1:
        raise ValueError(f"the forecast horizon must be at least one day, got {horizon_days}")
    as_of = _store_now()
    days = purchase_days_read()
    if as_of is None or days.empty or days["customer"].nunique() < 20:
        raise NotEnoughHistory("fewer than 20 customers with purchases: nothing to fit")
    cutoff = day_number(as_of) + 1
    model = _fit_model(days, cutoff)
    evaluation = _evaluation(days, cutoff, horizon_days)
    fit = ClvFit(
        cutoff=as_of, horizon_days=horizon_days, customers=int(days["customer"].nunique()),
        bgnbd_params=model.bgnbd.params, spend_params=model.bgnbd.spend_params, mean_value=model.bgnbd.mean_value,
        count_model=model.count_model, calibration=list(model.calibration), backtest_days=model.backtest_cutoffs,
        training_rows=model.training_rows, evaluation=evaluation,
    )
    predicted = _predict(model, days, cutoff, horizon_days)
    fit.thresholds = _audience_thresholds(predicted)
    fit.importance = _importance(predicted)
    with transaction.atomic():
        fit.save()
        _store(fit, predicted, as_of)
        # a customer this fit did not score (opted out of profiling, merged away, or no longer a
        # buyer) keeps no forecast from an older fit
        CustomerPrediction.objects.exclude(fit=fit).delete()
    return fit


def predictions_score(*, customer_ids: list[int]) -> int:
    """Re-score these customers with the latest fit (their new events count; the fit stays).
    Returns how many predictions were written."""
    fit = clv_fit_latest()
    if fit is None or not customer_ids:
        return 0
    as_of = _store_now()
    days = purchase_days_read(customer_ids=customer_ids)
    if days.empty or as_of is None:
        CustomerPrediction.objects.filter(customer_id__in=customer_ids).delete()  # e.g. consent withdrawn
        return 0
    predicted = _predict(_model_of(fit), days, day_number(as_of) + 1, fit.horizon_days)
    with transaction.atomic():
        written = _store(fit, predicted, as_of)
        gone = set(map(int, customer_ids)) - set(map(int, predicted.index))
        if gone:
            CustomerPrediction.objects.filter(customer_id__in=gone).delete()
    return written


def _predict(model: ClvModel, days: pd.DataFrame, cutoff: int, horizon_days: int) -> pd.DataFrame:
    horizon = model.predict(days, cutoff=cutoff, horizon_weeks=horizon_days / 7, value_weeks=YEAR_WEEKS,
                            with_attributions=True)
    features = horizon.attrs["features"]
    last_year = days[days["day"] >= cutoff - 365]
    horizon["past_spend"] = last_year.groupby("customer")["amount"].sum().reindex(horizon.index).fillna(0.0)
    horizon["past_year_purchases"] = last_year.groupby("customer").size().reindex(horizon.index).fillna(0.0)
    horizon["purchases_last_13w"] = features["purchases_last_13w"]
    horizon["feature_values"] = features.to_dict("records")
    horizon["source"] = "model" if model.count_model else "bgnbd"
    horizon.attrs["horizon_weeks"] = horizon_days / 7
    return horizon


def _audience_thresholds(predicted: pd.DataFrame) -> dict:
    """Population cut-offs, fixed at fit time so a real-time re-score uses the same ones."""
    share = settings.CRM_HIGH_VALUE_SHARE
    return {
        "high_value_expected_spend": float(predicted["expected_spend"].quantile(1 - share)),
        "high_value_past_spend": float(predicted["past_spend"].quantile(1 - share)),
        "churn_probability": settings.CRM_CHURN_THRESHOLD,
        "rising_ratio": settings.CRM_RISING_RATIO,
        "median_order_value": median_order_value(),
    }


def customer_audiences(row, thresholds: dict, horizon_weeks: float) -> list[str]:
    """The CRM audiences a customer belongs to (README "Customer value and risk" has the rules):
    high value — expected spend in the horizon in the top share of customers;
    at-risk high value — past year's spend in the top share, yet churn probability ≥ the threshold;
    likely to churn — churn probability ≥ the threshold, for a customer who has bought before;
    rising — at least two purchases in 13 weeks and a forecast above `rising_ratio` × their own
    past-year pace, with a probability of buying ≥ 0.5."""
    churn = 1.0 - row["probability_active"]
    audiences = []
    if row["expected_spend"] >= thresholds["high_value_expected_spend"] > 0:
        audiences.append(Audience.HIGH_VALUE)
    if row["past_spend"] >= thresholds["high_value_past_spend"] > 0 and churn >= thresholds["churn_probability"]:
        audiences.append(Audience.AT_RISK_HIGH_VALUE)
    if churn >= thresholds["churn_probability"]:
        audiences.append(Audience.LIKELY_TO_CHURN)
    pace = row["past_year_purchases"] * horizon_weeks / YEAR_WEEKS
    if (row["purchases_last_13w"] >= 2 and row["expected_purchases"] > thresholds["rising_ratio"] * pace
            and row["probability_active"] >= 0.5):
        audiences.append(Audience.RISING)
    return [str(a) for a in audiences]


def _drivers(attributions: dict, values: dict, limit: int = 3) -> list[dict]:
    """The features that moved this customer's forecast most, as multiplicative effects."""
    ranked = sorted(attributions.items(), key=lambda item: -abs(item[1]))[:limit]
    out = []
    for name, contribution in ranked:
        if contribution == 0:
            continue
        value = values.get(name)
        out.append({"feature": name, "value": None if value is None or math.isnan(value) else round(float(value), 3),
                    "effect": round(math.exp(contribution), 3)})
    return out


def _importance(predicted: pd.DataFrame) -> list[dict]:
    if "attributions" not in predicted or predicted["source"].iloc[0] != "model":
        return []
    frame = pd.DataFrame(list(predicted["attributions"]))
    mean_abs = frame.abs().mean().sort_values(ascending=False)
    return [{"feature": name, "mean_abs_shap": round(float(v), 4)} for name, v in mean_abs.items() if name in FEATURES]


def _store(fit: ClvFit, predicted: pd.DataFrame, as_of) -> int:
    """Upsert the predictions; a customer erased meanwhile is not written back (ingest guard)."""
    from privacy.guard import ingest_guard

    with connection.cursor() as cursor:
        ingest_guard(cursor)
        cursor.execute("SELECT id FROM ingestion_customer WHERE id = ANY(%s)", [[int(i) for i in predicted.index]])
        existing = {row[0] for row in cursor.fetchall()}
    ids = [int(i) for i in predicted.index if int(i) in existing]
    behaviour = order_behaviour_read(customer_ids=ids, as_of=as_of)
    horizon_weeks = fit.horizon_days / 7
    rows = []
    for customer_id, row in predicted.loc[ids].iterrows():
        score, band, reasons = risk_score(behaviour.get(int(customer_id), OrderBehaviour()),
                                          median_order_value=fit.thresholds.get("median_order_value", 0.0))
        rows.append(CustomerPrediction(
            customer_id=int(customer_id), fit=fit,
            expected_purchases=float(row["expected_purchases"]), probability_active=float(row["probability_active"]),
            churn_probability=float(1.0 - row["probability_active"]),
            expected_value_per_purchase=float(row["expected_value_per_purchase"]),
            expected_spend=float(row["expected_spend"]), lifetime_value=float(row["lifetime_value"]),
            past_spend=float(row["past_spend"]), bgnbd_expected_purchases=float(row["bgnbd_expected_purchases"]),
            bgnbd_probability_alive=float(row["bgnbd_probability_alive"]), source=row["source"],
            audiences=customer_audiences(row, fit.thresholds, horizon_weeks),
            drivers=_drivers(row["attributions"], row["feature_values"]) if row["source"] == "model" else [],
            risk_score=score, risk_band=band, risk_reasons=reasons,
        ))
    CustomerPrediction.objects.bulk_create(
        rows, batch_size=2000, update_conflicts=True, unique_fields=["customer"],
        update_fields=[f.name for f in CustomerPrediction._meta.concrete_fields if f.name not in ("customer",)],
    )
    return len(rows)


def demand_forecast_make(*, fit: ClvFit | None = None, weeks: int | None = None) -> DemandForecast | None:
    """Expected purchase lines per category for the next weeks from the fit's per-customer forecasts,
    their category preferences and the recent arrival of new customers (crm.demand), beside the
    seasonal-naive baseline; with a back-test of the method one forecast length ago."""
    fit = fit or clv_fit_latest()
    weeks = weeks or settings.DEMAND_FORECAST_WEEKS
    if fit is None:
        return None
    lines = purchase_lines_read()
    cutoff = day_number(fit.cutoff) + 1
    history = lines[lines["day"] < cutoff]
    if history.empty:
        return None
    weekly = _model_of(fit).predict_weekly(clv.purchase_days(history), cutoff=cutoff, weeks=weeks)
    forecast = demand.demand_forecast(
        weekly, demand.category_preferences(history, cutoff),
        lines_per_day=demand.lines_per_purchase_day(history, cutoff),
        newcomers=demand.newcomer_demand(history, cutoff, weeks),
    )
    naive = demand.seasonal_naive(history, cutoff, weeks)
    categories = forecast.index.union(naive.index)
    forecast = forecast.reindex(index=categories, columns=range(1, weeks + 1)).fillna(0.0)
    naive = naive.reindex(index=categories, columns=range(1, weeks + 1)).fillna(0.0)
    backtest = _demand_backtest(lines, cutoff - 7 * weeks, weeks)
    with transaction.atomic():
        made = DemandForecast.objects.create(cutoff=fit.cutoff, weeks=weeks, fit=fit, backtest=backtest)
        CategoryDemand.objects.bulk_create([
            CategoryDemand(forecast=made, category=str(category), week_start=day_start(cutoff + 7 * (week - 1)).date(),
                           expected_purchases=float(forecast.at[category, week]),
                           naive_purchases=float(naive.at[category, week]))
            for category in categories for week in range(1, weeks + 1)
        ])
    return made


def _demand_backtest(lines: pd.DataFrame, cutoff: int, weeks: int) -> dict:
    history = lines[lines["day"] < cutoff]
    if history.empty or history["customer"].nunique() < settings.CLV_MIN_CUSTOMERS_FOR_TREES \
            or len(clv.backtest_cutoffs(first_day=int(history["day"].min()), cutoff=cutoff)) < 2:
        return {"skipped": "less history than the forecast length plus eight weeks, or too few customers"}
    result = demand.demand_backtest(lines, cutoff=cutoff, weeks=weeks)
    summary = {key: None if isinstance(value, float) and math.isnan(value) else value
               for key, value in result.summary().items()}
    table = result.table.astype(object).where(result.table.notna(), None)
    return {**summary, "from_day": cutoff, "table": table.to_dict("records")}


# Every relation to Customer in this app's models, and the erase service that deletes its rows
# (privacy.erasure checks that each such relation in every app is covered or exempted).
CUSTOMER_RELATIONS_ERASED = {"crm.CustomerPrediction.customer": "customer_predictions_erase"}


def customer_predictions_erase(*, customer_ids: list[int]) -> int:
    """Delete these customers' churn/value/risk predictions (erasure, profiling opt-out)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM crm_customerprediction WHERE customer_id = ANY(%s)", [customer_ids])
        return cursor.rowcount
