"""Chart.js configurations built on the server for static/portrait/charts.js to draw: plain dicts
that templates write with `json_script`. Only presentation lives here; the numbers come from selectors."""

from __future__ import annotations

PALETTE = ["#417690", "#e8a33d", "#5aa469", "#c0504d", "#8064a2", "#4bacc6", "#f79646", "#9bbb59", "#7f7f7f", "#d16ba5"]
HIGHLIGHT = "#d62728"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _axis(title, *, stacked: bool = False, begin_at_zero: bool = False) -> dict:
    axis: dict = {"stacked": stacked, "beginAtZero": begin_at_zero}
    if title:
        axis["title"] = {"display": True, "text": title}
    return axis


def bar_chart(*, labels: list, datasets: list[dict], stacked: bool = False, horizontal: bool = False,
              x_title=None, y_title=None) -> dict:
    """datasets: [{"label": …, "data": [number per label]}]; colours assigned in order."""
    value_axis, category_axis = ("x", "y") if horizontal else ("y", "x")
    category_title, value_title = (y_title, x_title) if horizontal else (x_title, y_title)
    return {
        "type": "bar",
        "data": {
            "labels": labels,
            "datasets": [{"backgroundColor": colour(i), **d} for i, d in enumerate(datasets)],
        },
        "options": {
            "indexAxis": "y" if horizontal else "x",
            "plugins": {"legend": {"display": len(datasets) > 1}},
            "scales": {
                # every category labelled: a skipped label leaves a bar nobody can name
                category_axis: {**_axis(category_title, stacked=stacked), "ticks": {"autoSkip": not horizontal}},
                value_axis: _axis(value_title, stacked=stacked, begin_at_zero=True),
            },
        },
    }


def line_chart(*, labels: list, datasets: list[dict], x_title=None, y_title=None) -> dict:
    return {
        "type": "line",
        "data": {
            "labels": labels,
            "datasets": [
                {"borderColor": colour(i), "backgroundColor": colour(i), "tension": 0, "pointRadius": 2, **d}
                for i, d in enumerate(datasets)
            ],
        },
        "options": {
            "plugins": {"legend": {"display": len(datasets) > 1}},
            "scales": {"x": _axis(x_title), "y": _axis(y_title)},
        },
    }


def scatter_chart(*, datasets: list[dict], x_title=None, y_title=None, x_type: str = "linear", y_type: str = "linear") -> dict:
    """datasets: [{"label", "data": [{"x", "y"}], optional "links": [url per point],
    "tooltips": [[line, …] per point], "backgroundColor", "pointRadius"}]."""
    links = [d.pop("links", None) for d in datasets]
    tooltips = [d.pop("tooltips", None) for d in datasets]
    config = {
        "type": "scatter",
        "data": {"datasets": [{"backgroundColor": colour(i), "pointRadius": 3, **d} for i, d in enumerate(datasets)]},
        "options": {
            "plugins": {"legend": {"display": True}},
            "scales": {"x": {**_axis(x_title), "type": x_type}, "y": {**_axis(y_title), "type": y_type}},
        },
    }
    if any(links):
        config["links"] = [link or [] for link in links]
    if any(tooltips):
        config["tooltips"] = [tip or [] for tip in tooltips]
    return config
