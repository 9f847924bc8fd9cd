"""Chart.js configurations of the profile pages, the embedding map and the feature report, from
the reads in profiles.page (config.charts draws nothing itself; static/portrait/charts.js does)."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from config.charts import HIGHLIGHT, bar_chart, colour, line_chart, scatter_chart
from ingestion.models import EventType
from profiles.models import LifecycleStage, ValueTier


def profile_url(customer_id: int) -> str:
    return reverse("admin:profiles_profile_change", args=[customer_id])


def activity_chart(activity: dict) -> dict:
    return bar_chart(
        labels=[day.isoformat() for day in activity["days"]],
        datasets=[{"label": EventType(t).label, "data": counts} for t, counts in activity["series"].items()],
        stacked=True, x_title=_("day"), y_title=_("events"),
    )


def spend_chart(months: list) -> dict:
    return line_chart(
        labels=[month.strftime("%Y-%m") for month, _total in months],
        datasets=[{"label": _("net spend"), "data": [round(total, 2) for _month, total in months], "fill": False}],
        x_title=_("month"), y_title=_("purchases minus refunds"),
    )


def categories_chart(categories: list[dict]) -> dict:
    return bar_chart(
        labels=[c["category"] for c in categories],
        datasets=[
            {"label": _("views"), "data": [c["views"] for c in categories]},
            {"label": _("purchases"), "data": [c["purchases"] for c in categories]},
            {"label": _("other events"), "data": [c["other"] for c in categories]},
        ],
        stacked=True, horizontal=True, x_title=_("events"),
    )


def percentiles_chart(percentiles: list[dict]) -> dict:
    config = bar_chart(
        labels=[p["name"] for p in percentiles],
        datasets=[{"label": _("population percentile"), "data": [p["percentile"] for p in percentiles]}],
        horizontal=True, x_title=_("percentile in the population"),
    )
    config["options"]["scales"]["x"]["max"] = 100
    config["tooltips"] = [[[f"{p['name']} = {p['value']:.4g}", f"{p['percentile']:.0f}%"] for p in percentiles]]
    return config


def rfm_chart(population: list[dict], *, customer_id: int, recency_days, net_monetary) -> dict:
    others = [p for p in population if p["customer_id"] != customer_id]
    datasets = [{
        "label": _("population sample"),
        "data": [{"x": p["recency_days"], "y": p["net_monetary"]} for p in others],
        "backgroundColor": "rgba(65, 118, 144, 0.35)", "pointRadius": 2,
        "links": [profile_url(p["customer_id"]) for p in others],
        "tooltips": [[p["key"][:12], f"{p['recency_days']:.0f} d, {p['net_monetary']:.2f}"] for p in others],
    }]
    if isinstance(recency_days, int | float) and isinstance(net_monetary, int | float):
        datasets.append({
            "label": _("this customer"), "data": [{"x": recency_days, "y": net_monetary}],
            "backgroundColor": HIGHLIGHT, "pointRadius": 7, "pointStyle": "rectRot",
            "tooltips": [[str(_("this customer")), f"{recency_days:.0f} d, {net_monetary:.2f}"]],
        })
    return scatter_chart(datasets=datasets, x_title=_("days since last purchase"), y_title=_("net spend"))


GROUP_LABELS = {
    **{value: label for value, label in ValueTier.choices},
    **{value: label for value, label in LifecycleStage.choices},
    "member": _("in the segment"),
    "other": _("not in the segment"),
}


def map_chart(points: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for point in points:
        groups.setdefault(point["group"], []).append(point)
    datasets = []
    order = list(GROUP_LABELS)
    ranked = sorted(groups.items(), key=lambda pair: order.index(pair[0]) if pair[0] in order else len(order))
    for index, (group, members) in enumerate(ranked):
        datasets.append({
            "label": GROUP_LABELS.get(group, group),
            "data": [{"x": p["x"], "y": p["y"]} for p in members],
            "backgroundColor": colour(index), "pointRadius": 3, "pointHoverRadius": 6,
            "links": [profile_url(p["customer_id"]) for p in members],
            "tooltips": [
                [p["key"][:12], f"{ValueTier(p['value_tier']).label} · {LifecycleStage(p['lifecycle_stage']).label}",
                 p["top_category"] or "—"]
                for p in members
            ],
        })
    return scatter_chart(datasets=datasets, x_title=_("first principal component"), y_title=_("second principal component"))


def horizontal_bars_height(bars: int) -> int:
    """Pixels for a horizontal bar chart with every bar readable."""
    return max(260, 18 * bars + 70)


def feature_report_chart(features: list[dict]) -> dict:
    return bar_chart(
        labels=[f["name"] for f in features],
        datasets=[{"label": _("mutual information (nats)"), "data": [round(f["mutual_information"], 5) for f in features]}],
        horizontal=True, x_title=_("mutual information with the target (nats)"),
    )
