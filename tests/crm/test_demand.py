"""Demand by category (crm.demand) on tiny hand-made frames and one small generated shop; no database."""

import numpy as np
import pandas as pd
import pytest

from crm.demand import (
    category_preferences, demand_backtest, demand_forecast, lines_per_purchase_day, mape, newcomer_demand,
    preference_prior_strength, seasonal_naive,
)


def lines(rows) -> pd.DataFrame:
    """Purchase lines from (customer, day, category) tuples, amount 10 and quantity 1 each."""
    frame = pd.DataFrame(rows, columns=["customer", "day", "category"])
    return frame.assign(amount=10.0, quantity=1.0)


def test_preferences_sum_to_one_and_pull_a_single_purchase_toward_the_population_mix():
    # given a population buying mostly books, and one customer whose only purchase is a toy
    rows = [(f"reader{i}", d, "books") for i in range(20) for d in (1, 8, 15)]
    rows += [(f"reader{i}", 22, "toys") for i in range(5)]
    rows += [("newbie", 30, "toys")]
    purchases = lines(rows)

    preferences = category_preferences(purchases, cutoff=40, prior_strength=4.0)

    np.testing.assert_allclose(preferences.sum(axis=1), 1.0)
    population_toys = 6 / len(purchases)
    assert population_toys < preferences.loc["newbie", "toys"] < 1.0
    # (1 + 4·m) / (1 + 4): one purchase is outweighed by four pseudo-purchases of the mix
    assert preferences.loc["newbie", "toys"] == pytest.approx((1 + 4 * population_toys) / 5)
    tuned = category_preferences(purchases, cutoff=40)
    np.testing.assert_allclose(tuned.sum(axis=1), 1.0)


def test_prior_strength_is_larger_when_past_categories_do_not_predict_future_ones():
    rng = np.random.default_rng(0)
    categories = ["a", "b", "c", "d"]
    favourite = {c: categories[c % 4] for c in range(200)}
    loyal = lines([(c, d, favourite[c]) for c in range(200) for d in range(0, 100, 7)])
    fickle = lines([(c, d, categories[rng.integers(4)]) for c in range(200) for d in range(0, 100, 7)])

    assert preference_prior_strength(loyal, 100, validation_weeks=4) < preference_prior_strength(
        fickle, 100, validation_weeks=4)


def test_forecast_conserves_volume_without_newcomers_and_scales_with_lines_per_day():
    rng = np.random.default_rng(1)
    customers = [f"c{i}" for i in range(30)]
    weekly = pd.DataFrame(rng.gamma(1.0, 0.3, (30, 4)), index=customers, columns=range(1, 5))
    shares = rng.dirichlet(np.ones(5), 30)
    preferences = pd.DataFrame(shares, index=customers, columns=list("vwxyz"))
    basket = pd.Series(rng.uniform(1, 3, 30), index=customers)

    forecast = demand_forecast(weekly, preferences)
    with_basket = demand_forecast(weekly, preferences, lines_per_day=basket)

    np.testing.assert_allclose(forecast.sum(axis=0), weekly.sum(axis=0))
    np.testing.assert_allclose(with_basket.sum(axis=0), weekly.mul(basket, axis=0).sum(axis=0))
    assert list(forecast.index) == list("vwxyz")


def test_lines_per_purchase_day_counts_repeat_days_only():
    # first day: 10 lines (a first visit binge); every later day: 2 lines
    rows = [(c, 0, "x") for c in range(50) for _ in range(10)]
    rows += [(c, d, "x") for c in range(50) for d in range(7, 120, 7) for _ in range(2)]
    basket = lines_per_purchase_day(lines(rows), cutoff=120)
    np.testing.assert_allclose(basket, 2.0)


def test_newcomers_arriving_at_a_steady_rate_and_buying_once_give_that_rate_per_week():
    # 10 new customers a week, each buying once on arrival, 2/5 of them in "a"
    rows = [(f"w{w}c{i}", 7 * w + i % 7, "a" if i < 4 else "b") for w in range(30) for i in range(10)]
    newcomers = newcomer_demand(lines(rows), cutoff=210, weeks=3)

    np.testing.assert_allclose(newcomers.sum(axis=0), [10.0, 10.0, 10.0])
    np.testing.assert_allclose(newcomers.loc["a"], [4.0, 4.0, 4.0])


def weekly_counts_purchases(first_week: int, last_week: int) -> pd.DataFrame:
    """Week k (day 7k) holds k+1 lines of category "a" and 1 of "b"."""
    rows = [(f"c{k}-{j}", 7 * k, "a") for k in range(first_week, last_week + 1) for j in range(k + 1)]
    rows += [(f"b{k}", 7 * k + 3, "b") for k in range(first_week, last_week + 1)]
    return lines(rows)


def test_seasonal_naive_repeats_the_last_weeks_without_a_year_of_history():
    purchases = weekly_counts_purchases(0, 19)  # 20 weeks
    naive = seasonal_naive(purchases, cutoff=7 * 20, weeks=4)

    assert naive.attrs["season_weeks"] == 4
    assert list(naive.loc["a"]) == [17.0, 18.0, 19.0, 20.0]  # weeks 16…19
    assert list(naive.loc["b"]) == [1.0, 1.0, 1.0, 1.0]


def test_seasonal_naive_repeats_the_same_weeks_a_year_earlier_with_a_year_of_history():
    purchases = weekly_counts_purchases(0, 59)
    naive = seasonal_naive(purchases, cutoff=7 * 60, weeks=3)

    assert naive.attrs["season_weeks"] == 52
    assert list(naive.loc["a"]) == [9.0, 10.0, 11.0]  # weeks 8, 9, 10 = 60 − 52 …


def test_mape_leaves_out_zero_actuals():
    assert mape([5.0, 30.0, 7.0], [10.0, 20.0, 0.0]) == pytest.approx((0.5 + 0.5) / 2)
    assert np.isnan(mape([1.0], [0.0]))


@pytest.fixture(scope="module")
def small_shop() -> pd.DataFrame:
    """A generated shop that keeps signing customers up to its last day: 456 days generated (the
    generator signs up in the first 80% of its period), the first 365 kept."""
    from bench.demand import synthetic_purchases
    from ingestion.generator import ShopConfig

    purchases = synthetic_purchases(ShopConfig(customers=8000, events=1_300_000, seed=0, days=456))
    return purchases[purchases["day"] < 365].reset_index(drop=True)


def test_model_beats_seasonal_naive_on_a_small_generated_shop(small_shop):
    result = demand_backtest(small_shop, cutoff=365 - 56, weeks=8)

    assert result.zero_actual_categories == 0
    assert result.model_mape < result.naive_mape
    assert result.model_mape < 0.07


def test_backtest_leaves_a_category_without_actual_purchases_out_of_the_mape(small_shop):
    discontinued = small_shop[small_shop["day"] < 200].sample(300, random_state=0).assign(category="Discontinued")
    purchases = pd.concat([small_shop, discontinued], ignore_index=True)

    result = demand_backtest(purchases, cutoff=365 - 56, weeks=8)

    table = result.table.set_index("category")
    assert result.zero_actual_categories == 1
    assert table.loc["Discontinued", "actual"] == 0 and table.loc["Discontinued", "forecast"] > 0
    assert np.isnan(table.loc["Discontinued", "ape_model"])
    assert result.model_mape == pytest.approx(table["ape_model"].dropna().mean())
    assert result.naive_mape == pytest.approx(table["ape_naive"].dropna().mean())
