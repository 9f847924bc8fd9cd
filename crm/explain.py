"""Readable words for the CLV model's drivers, the audiences and the risk scorecard's lines, for
the API and the admin (through Django's translation machinery)."""

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.models import Audience

FEATURE_LABELS = {
    "frequency": gettext_lazy("repeat purchases so far"),
    "recency_weeks": gettext_lazy("weeks between first and last purchase"),
    "age_weeks": gettext_lazy("weeks since the first purchase"),
    "weeks_since_last": gettext_lazy("weeks since the last purchase"),
    "purchase_rate": gettext_lazy("repeat purchases per week"),
    "recency_share": gettext_lazy("share of the customer's life until the last purchase"),
    "first_amount": gettext_lazy("value of the first purchase"),
    "mean_amount": gettext_lazy("average purchase value"),
    "max_amount": gettext_lazy("largest purchase value"),
    "repeat_mean_amount": gettext_lazy("average value of repeat purchases"),
    "mean_quantity": gettext_lazy("average units per purchase"),
    "purchases_last_4w": gettext_lazy("purchases in the last 4 weeks"),
    "purchases_last_13w": gettext_lazy("purchases in the last 13 weeks"),
    "purchases_last_26w": gettext_lazy("purchases in the last 26 weeks"),
    "mean_gap_weeks": gettext_lazy("average weeks between purchases"),
    "std_gap_weeks": gettext_lazy("spread of the weeks between purchases"),
    "last_gap_weeks": gettext_lazy("weeks between the last two purchases"),
    "overdue_ratio": gettext_lazy("time since the last purchase, in usual gaps"),
    "bgnbd_p_alive": gettext_lazy("BG/NBD probability of still being a customer"),
}

AUDIENCE_RULES = {
    Audience.HIGH_VALUE: gettext_lazy("expected spend in the horizon among the top %(share)s of customers"),
    Audience.AT_RISK_HIGH_VALUE: gettext_lazy("spent among the top %(share)s last year, churn probability ≥ %(churn)s"),
    Audience.LIKELY_TO_CHURN: gettext_lazy("churn probability ≥ %(churn)s"),
    Audience.RISING: gettext_lazy("forecast above %(ratio)s× the customer's own pace of the last year"),
}

RISK_RULE_LABELS = {
    "refund_rate": gettext_lazy("refunds per purchase"),
    "refunded_value_share": gettext_lazy("share of the purchased value refunded"),
    "cancellation_rate": gettext_lazy("cancelled share of orders"),
    "chargebacks": gettext_lazy("chargebacks"),
    "new_account_large_order": gettext_lazy("new account with an unusually large first order"),
}


def driver_text(driver: dict) -> str:
    label = FEATURE_LABELS.get(driver["feature"], driver["feature"])
    effect = driver["effect"]
    direction = _("raises") if effect >= 1 else _("lowers")
    value = "—" if driver.get("value") is None else f"{driver['value']:g}"
    return _("%(label)s = %(value)s %(direction)s expected purchases ×%(effect).2f") % {
        "label": label, "value": value, "direction": direction, "effect": effect}


def audience_reason(audience: str, thresholds: dict) -> str:
    template = AUDIENCE_RULES.get(audience)
    if template is None:
        return audience
    return str(template) % {
        "share": f"{settings.CRM_HIGH_VALUE_SHARE:.0%}",
        "churn": f"{thresholds.get('churn_probability', settings.CRM_CHURN_THRESHOLD):g}",
        "ratio": f"{thresholds.get('rising_ratio', settings.CRM_RISING_RATIO):g}",
    }


def risk_line_text(line: dict) -> str:
    label = RISK_RULE_LABELS.get(line["rule"], line["rule"])
    return _("%(label)s: %(value)s → %(points)s points") % {"label": label, "value": line["value"], "points": line["points"]}


def prediction_explained(prediction) -> dict:
    """The prediction as the API serves it: numbers plus sentences a business user can read."""
    fit = prediction.fit
    return {
        "horizon_days": fit.horizon_days,
        "expected_purchases": round(prediction.expected_purchases, 4),
        "probability_active": round(prediction.probability_active, 4),
        "churn_probability": round(prediction.churn_probability, 4),
        "expected_spend": round(prediction.expected_spend, 2),
        "lifetime_value": round(prediction.lifetime_value, 2),
        "expected_value_per_purchase": round(prediction.expected_value_per_purchase, 2),
        "predicted_by": prediction.source,
        "baseline": {
            "bgnbd_expected_purchases": round(prediction.bgnbd_expected_purchases, 4),
            "bgnbd_probability_alive": round(prediction.bgnbd_probability_alive, 4),
        },
        "drivers": [{**driver, "text": driver_text(driver)} for driver in prediction.drivers],
        "audiences": [{"audience": a, "label": str(Audience(a).label), "reason": audience_reason(a, fit.thresholds)}
                      for a in prediction.audiences],
        "risk": {
            "score": prediction.risk_score, "band": prediction.risk_band, "band_label": prediction.get_risk_band_display(),
            "lines": [{**line, "text": risk_line_text(line)} for line in prediction.risk_reasons],
        },
        "fitted_at": fit.created_at, "computed_at": prediction.computed_at,
    }
