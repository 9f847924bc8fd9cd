"""Expected purchases per category over the next weeks, for supply planning, free of Django.

Input is a frame of purchase lines with columns `customer`, `day` (an integer day number), `category`,
`amount` and optionally `quantity`: one row per purchased line and category. The unit of demand is
such a row: a line in two categories (a film in two genres) is one unit of demand in each, and a
customer buying in two categories on one day is demand in both. Callers that split a line over
several categories should split its `amount` and `quantity` too, so per-day spend stays right for
the purchase model. Model, baseline and actuals all count these rows.

The forecast has two parts:

- known customers: `ClvModel.predict_weekly` gives each customer's expected purchase *days* per week;
  times their expected lines per purchase day (`lines_per_purchase_day`) and their category shares
  (`category_preferences`), both shrunk toward the population with a prior strength chosen on a
  validation split inside the history;
- newcomers (`newcomer_demand`): customers first seen after the cutoff, as recent weekly arrivals
  times the lines a new customer makes in each week of life, with newcomers' category mix.

`seasonal_naive` is the baseline and `demand_backtest` compares the two with what happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crm.clv import ClvModel, ClvModelConfig, backtest_cutoffs, purchase_days

WEEK = 7
SEASON_WEEKS = 52
PRIOR_GRID = tuple(2.0 ** k for k in range(-2, 10))  # 0.25 … 512


def category_counts(purchases: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    """Lines per customer (index) and category (columns) with start <= day < stop."""
    window = purchases[(purchases["day"] >= start) & (purchases["day"] < stop)]
    return window.groupby(["customer", "category"]).size().unstack("category", fill_value=0).astype(float)


def _shrunk_shares(counts: pd.DataFrame, population_mix: pd.Series, prior_strength: float) -> pd.DataFrame:
    """Posterior mean of a Dirichlet(prior_strength × population_mix) given multinomial counts."""
    counts = counts.reindex(columns=population_mix.index, fill_value=0.0)
    smoothed = counts + prior_strength * population_mix.to_numpy()[None, :]
    return smoothed.div(smoothed.sum(axis=1), axis=0)


def preference_prior_strength(purchases: pd.DataFrame, cutoff: int, *, validation_weeks: int = 8,
                              grid=PRIOR_GRID) -> float:
    """The Dirichlet prior strength (in pseudo-lines) that best predicts customers' categories in the last
    `validation_weeks` before `cutoff` from what they bought before that: held-out multinomial
    log-likelihood, so the test period is never looked at. Falls back to 1 without a usable split."""
    split = cutoff - WEEK * validation_weeks
    past = category_counts(purchases, int(purchases["day"].min()), split)
    future = category_counts(purchases, split, cutoff)
    if past.empty or future.empty:
        return 1.0
    categories = past.columns.union(future.columns)
    # a category never bought before the split still gets a sliver of prior, so log-likelihoods stay finite
    population_mix = (past.sum().reindex(categories, fill_value=0.0) + 0.5)
    population_mix /= population_mix.sum()
    future = future.reindex(index=future.index.intersection(past.index), columns=categories, fill_value=0.0)
    past = past.reindex(index=future.index, columns=categories, fill_value=0.0)
    if future.empty:
        return 1.0
    scores = {k: float((future * np.log(_shrunk_shares(past, population_mix, k))).to_numpy().sum()) for k in grid}
    return max(scores, key=scores.get)


def category_preferences(purchases: pd.DataFrame, cutoff: int, *, prior_strength: float | None = None,
                         validation_weeks: int = 8) -> pd.DataFrame:
    """Per customer seen before `cutoff` (index) the expected share of their lines in each category
    (columns, every category bought before `cutoff`); rows sum to 1.

    Shares are the Dirichlet posterior mean with the population's category mix as prior:
    (n_ic + k·m_c) / (n_i + k), so a customer with one purchase is pulled toward the mix and a heavy
    buyer keeps their own. k is `prior_strength`, or tuned by `preference_prior_strength` on the last
    `validation_weeks` before the cutoff; it is kept in `.attrs["prior_strength"]`.
    """
    if prior_strength is None:
        prior_strength = preference_prior_strength(purchases, cutoff, validation_weeks=validation_weeks)
    counts = category_counts(purchases, int(purchases["day"].min()), cutoff)
    population_mix = counts.sum() / counts.to_numpy().sum()
    shares = _shrunk_shares(counts, population_mix, prior_strength)
    shares.attrs["prior_strength"] = prior_strength
    return shares


def _repeat_day_lines(purchases: pd.DataFrame, start: int, stop: int, first_day: pd.Series) -> pd.DataFrame:
    """Per customer: repeat purchase days (not their first ever) in [start, stop) and the lines on them."""
    window = purchases[(purchases["day"] >= start) & (purchases["day"] < stop)]
    window = window[window["day"].to_numpy() > window["customer"].map(first_day).to_numpy()]
    grouped = window.groupby("customer")
    return pd.DataFrame({"days": grouped["day"].nunique().astype(float), "lines": grouped.size().astype(float)})


def _shrunk_rate(repeat: pd.DataFrame, index: pd.Index, population_rate: float, prior_days: float) -> pd.Series:
    repeat = repeat.reindex(index, fill_value=0.0)
    return (repeat["lines"] + prior_days * population_rate) / (repeat["days"] + prior_days)


def lines_per_purchase_day(purchases: pd.DataFrame, cutoff: int, *, prior_days: float | None = None,
                           validation_weeks: int = 8, grid=PRIOR_GRID) -> pd.Series:
    """Per customer seen before `cutoff`: expected lines on a future purchase day.

    Estimated from repeat days only, because every purchase day `ClvModel` forecasts for a known
    customer is a repeat one, and first visits are often bigger (MovieLens users rate dozens of films on
    their first day). Shrunk toward the population's lines per repeat day with `prior_days` pseudo-days,
    tuned, when not given, by Poisson log-likelihood of the lines on repeat days in the last
    `validation_weeks` before the cutoff; kept in `.attrs["prior_days"]`.
    """
    first_day = purchases[purchases["day"] < cutoff].groupby("customer")["day"].min()
    start = int(purchases["day"].min())
    if prior_days is None:
        split = cutoff - WEEK * validation_weeks
        past = _repeat_day_lines(purchases, start, split, first_day)
        future = _repeat_day_lines(purchases, split, cutoff, first_day)
        known = first_day.index[first_day < split]
        future = future.reindex(future.index.intersection(known))
        if past["days"].sum() > 0 and len(future):
            population_rate = past["lines"].sum() / past["days"].sum()

            def loglik(k):
                rate = _shrunk_rate(past, future.index, population_rate, k).to_numpy() * future["days"].to_numpy()
                return float((future["lines"].to_numpy() * np.log(rate) - rate).sum())

            prior_days = max(grid, key=loglik)
        else:
            prior_days = 1.0
    repeat = _repeat_day_lines(purchases, start, cutoff, first_day)
    all_days = purchases[purchases["day"] < cutoff]
    population_rate = (repeat["lines"].sum() / repeat["days"].sum() if repeat["days"].sum() > 0
                       else len(all_days) / all_days.groupby("customer")["day"].nunique().sum())
    rate = _shrunk_rate(repeat, first_day.index, population_rate, prior_days)
    rate.attrs["prior_days"] = prior_days
    return rate


def newcomer_demand(purchases: pd.DataFrame, cutoff: int, weeks: int, *, arrival_weeks: int = 8,
                    cohort_weeks: int = 26) -> pd.DataFrame:
    """Expected lines (category × week 1..weeks) from customers whose first purchase is on or after `cutoff`.

    Weeks are counted from the cutoff (week -1 is the last before it). Arrivals per week are the mean
    number of first purchases over the last `arrival_weeks` weeks. A new customer's lines in week k of
    life (k = 0 the week they arrive) come from cohorts that arrived in the last `cohort_weeks` weeks and
    whose week k is already observed; in forecast week w, cohorts of weeks 1..w contribute:
    arrivals × Σ_{k<w} lines(k). The category mix is that of those cohorts' lines.
    """
    seen = purchases[purchases["day"] < cutoff]
    week_of = (seen["day"].to_numpy() - cutoff) // WEEK
    first_week = pd.Series(week_of, index=seen.index).groupby(seen["customer"]).transform("min").to_numpy()
    arrivals = pd.Series(first_week).groupby(seen["customer"].to_numpy()).first().value_counts()
    recent_arrivals = float(arrivals.reindex(range(-arrival_weeks, 0), fill_value=0).mean())

    cohort = (first_week >= -cohort_weeks)
    age = week_of - first_week
    lines_by_age = np.zeros(weeks)
    for k in range(weeks):
        cohorts = range(-cohort_weeks, -k)  # cohorts whose week k is before the cutoff
        arrived = float(arrivals.reindex(cohorts, fill_value=0).sum())
        if arrived:
            lines_by_age[k] = ((age == k) & cohort & (first_week < -k)).sum() / arrived
    young = cohort & (age < weeks)
    mix = seen.loc[young, "category"].value_counts(normalize=True)
    if mix.empty:
        mix = seen["category"].value_counts(normalize=True)
    per_week = recent_arrivals * np.cumsum(lines_by_age)
    return pd.DataFrame(np.outer(mix.to_numpy(), per_week), index=mix.index.rename("category"),
                        columns=range(1, weeks + 1))


def demand_forecast(weekly_expected: pd.DataFrame, preferences: pd.DataFrame, *,
                    lines_per_day: pd.Series | None = None, newcomers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Expected lines per category (index) and week (columns of `weekly_expected`).

    weekly_expected: customers × weeks of expected purchase days (`ClvModel.predict_weekly`);
    preferences: customers × categories of shares summing to 1 (`category_preferences`);
    lines_per_day: per customer, lines per purchase day (`lines_per_purchase_day`), 1 when omitted, so
    the forecast then sums, over categories, to the expected purchase days;
    newcomers: category × week of demand from customers not yet seen (`newcomer_demand`), added.
    A customer without preferences gets the mean of everyone's.
    """
    customers = weekly_expected.index
    shares = preferences.reindex(customers)
    shares = shares.fillna(preferences.mean())
    volume = weekly_expected
    if lines_per_day is not None:
        volume = weekly_expected.mul(lines_per_day.reindex(customers).fillna(lines_per_day.mean()), axis=0)
    forecast = pd.DataFrame(shares.to_numpy().T @ volume.to_numpy(), index=shares.columns.rename("category"),
                            columns=weekly_expected.columns)
    if newcomers is not None:
        forecast = forecast.add(newcomers, fill_value=0.0)
    return forecast


def weekly_category_lines(purchases: pd.DataFrame, start: int, weeks: int) -> pd.DataFrame:
    """Lines per category (index) in each week 1..weeks from day `start`."""
    window = purchases[(purchases["day"] >= start) & (purchases["day"] < start + WEEK * weeks)]
    week = (window["day"] - start) // WEEK + 1
    table = window.groupby([window["category"], week]).size().unstack(fill_value=0)
    return table.reindex(columns=range(1, weeks + 1), fill_value=0).astype(float).rename_axis("category")


def seasonal_naive(purchases: pd.DataFrame, cutoff: int, weeks: int, season_weeks: int | None = None) -> pd.DataFrame:
    """Baseline (category × week 1..weeks): each week's lines repeated from one season earlier.

    The season is 52 weeks when a full year of history precedes the cutoff, else `weeks` (the last
    `weeks` weeks repeated as they were). A season shorter than the horizon repeats itself cyclically.
    """
    first_day = int(purchases["day"].min())
    if season_weeks is None:
        season_weeks = SEASON_WEEKS if cutoff - WEEK * SEASON_WEEKS >= first_day else weeks
    history = weekly_category_lines(purchases, cutoff - WEEK * season_weeks, season_weeks)
    source = [(w - 1) % season_weeks + 1 for w in range(1, weeks + 1)]
    out = history[source]
    out.columns = range(1, weeks + 1)
    out.attrs["season_weeks"] = season_weeks
    return out


def mape(forecast: pd.Series | pd.DataFrame, actual: pd.Series | pd.DataFrame) -> float:
    """Mean absolute percentage error over cells with a non-zero actual (NaN when there are none)."""
    actual_values = np.asarray(actual, float).ravel()
    forecast_values = np.asarray(forecast, float).ravel()
    counted = actual_values > 0
    if not counted.any():
        return math.nan
    return float(np.mean(np.abs(forecast_values[counted] - actual_values[counted]) / actual_values[counted]))


@dataclass
class DemandBacktest:
    """`table`: per category forecast, naive, actual and their APEs over the W weeks (APE NaN where the
    actual is 0); the weekly frames behind it; MAPEs over categories with non-zero actuals."""

    table: pd.DataFrame
    model_mape: float
    naive_mape: float
    weekly_model_mape: float
    weekly_naive_mape: float
    known_only_mape: float  # the model without the newcomer component, to show what it adds
    zero_actual_categories: int
    forecast: pd.DataFrame
    naive: pd.DataFrame
    actual: pd.DataFrame
    prior_strength: float
    prior_days: float
    season_weeks: int

    def summary(self) -> dict:
        return {
            "model_mape": round(self.model_mape, 4), "naive_mape": round(self.naive_mape, 4),
            "weekly_model_mape": round(self.weekly_model_mape, 4),
            "weekly_naive_mape": round(self.weekly_naive_mape, 4),
            "known_only_mape": round(self.known_only_mape, 4),
            "categories": len(self.table), "zero_actual_categories": self.zero_actual_categories,
        }


def demand_backtest(purchases: pd.DataFrame, *, cutoff: int, weeks: int, season_weeks: int | None = None,
                    clv_config: ClvModelConfig | None = None, newcomers: bool = True) -> DemandBacktest:
    """Fit on days before `cutoff`, forecast lines per category for [cutoff, cutoff + 7·weeks), and
    compare the model and `seasonal_naive` with what happened. Only history before the cutoff is used
    for fitting and tuning. Categories with zero actual lines are left out of the MAPEs and counted."""
    history = purchases[purchases["day"] < cutoff]
    days = purchase_days(history)
    model = ClvModel.fit(days, cutoff=cutoff, config=clv_config,
                         backtest_cutoffs=backtest_cutoffs(first_day=int(days["day"].min()), cutoff=cutoff))
    weekly_expected = model.predict_weekly(days, cutoff=cutoff, weeks=weeks)
    preferences = category_preferences(history, cutoff)
    lines_per_day = lines_per_purchase_day(history, cutoff)
    newcomer_part = newcomer_demand(history, cutoff, weeks) if newcomers else None
    known_only = demand_forecast(weekly_expected, preferences, lines_per_day=lines_per_day)
    forecast = demand_forecast(weekly_expected, preferences, lines_per_day=lines_per_day, newcomers=newcomer_part)
    naive = seasonal_naive(history, cutoff, weeks, season_weeks)
    season = int(naive.attrs["season_weeks"])
    actual = weekly_category_lines(purchases, cutoff, weeks)

    categories = forecast.index.union(naive.index).union(actual.index)
    forecast, naive, actual, known_only = (
        frame.reindex(index=categories, columns=range(1, weeks + 1), fill_value=0.0).fillna(0.0)
        for frame in (forecast, naive, actual, known_only))
    totals = pd.DataFrame({"forecast": forecast.sum(axis=1), "naive": naive.sum(axis=1),
                           "actual": actual.sum(axis=1)})
    counted = totals["actual"] > 0
    totals["ape_model"] = ((totals["forecast"] - totals["actual"]).abs() / totals["actual"]).where(counted)
    totals["ape_naive"] = ((totals["naive"] - totals["actual"]).abs() / totals["actual"]).where(counted)
    return DemandBacktest(
        table=totals.rename_axis("category").reset_index(),
        model_mape=mape(totals["forecast"], totals["actual"]),
        naive_mape=mape(totals["naive"], totals["actual"]),
        weekly_model_mape=mape(forecast, actual),
        weekly_naive_mape=mape(naive, actual),
        known_only_mape=mape(known_only.sum(axis=1), totals["actual"]),
        zero_actual_categories=int((~counted).sum()),
        forecast=forecast, naive=naive, actual=actual,
        prior_strength=float(preferences.attrs["prior_strength"]),
        prior_days=float(lines_per_day.attrs["prior_days"]),
        season_weeks=season,
    )
