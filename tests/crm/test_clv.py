"""The CLV model's mathematics on simulated BG/NBD customers, whose true parameters are known."""

import numpy as np
import pandas as pd
import pytest

from crm.clv import BgNbd, ClvModel, ClvModelConfig, backtest_cutoffs, bgnbd_probability_none, rfm_summary

TRUE = {"r": 0.6, "alpha": 6.0, "a": 0.8, "b": 2.5}


def simulate_bgnbd(customers: int, weeks: int, seed: int = 0) -> pd.DataFrame:
    """Purchase days of a cohort acquired over the first 12 weeks, drawn from BG/NBD itself:
    Poisson purchases at rate λ ~ Gamma(r, α) per week while alive, dropout after each repeat
    purchase with probability p ~ Beta(a, b)."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], customers)
    dropout = rng.beta(TRUE["a"], TRUE["b"], customers)
    rows = []
    for customer in range(customers):
        t = rng.uniform(0, 12)
        rows.append((customer, int(t * 7)))
        while True:
            if rate[customer] <= 0:
                break
            t += rng.exponential(1 / rate[customer])
            if t >= weeks:
                break
            rows.append((customer, int(t * 7)))
            if rng.random() < dropout[customer]:
                break
    frame = pd.DataFrame(rows, columns=["customer", "day"]).drop_duplicates()
    return frame.assign(amount=rng.gamma(4.0, 10.0, len(frame)), quantity=1.0)


@pytest.fixture(scope="module")
def cohort():
    return simulate_bgnbd(6000, 78, seed=1)


def test_no_purchase_probability_of_a_new_customer_is_the_nbd_zero_class():
    horizon = np.array([1.0, 10.0, 52.0])

    p_none = bgnbd_probability_none((0.6, 6.0, 0.8, 2.5), np.zeros(3), np.zeros(3), np.zeros(3), horizon)

    np.testing.assert_allclose(p_none, (6.0 / (6.0 + horizon)) ** 0.6, rtol=1e-12)


def test_fit_recovers_the_simulated_parameters(cohort):
    model = BgNbd.fit(rfm_summary(cohort, cutoff=39 * 7))

    for name, value in TRUE.items():
        assert model.params[name] == pytest.approx(value, rel=0.25), name


def test_conditional_forecasts_are_calibrated_against_what_happened(cohort):
    """Deciles of predicted P(buy in the next 39 weeks) match the observed share of buyers, and the
    expected counts match the observed total (true parameters, so only the formulas are tested)."""
    cutoff = 39 * 7
    summary = rfm_summary(cohort, cutoff)
    model = BgNbd(params=dict(TRUE))
    later = cohort[(cohort["day"] >= cutoff) & (cohort["day"] < 78 * 7)].groupby("customer").size()
    actual = later.reindex(summary.index).fillna(0).to_numpy()

    p_any = model.probability_any(summary, 39)
    expected = model.expected_purchases(summary, 39)

    deciles = pd.qcut(p_any, 10, labels=False, duplicates="drop")
    observed = pd.Series(actual > 0).groupby(deciles).mean()
    predicted = pd.Series(p_any).groupby(deciles).mean()
    assert np.max(np.abs(observed - predicted)) < 0.05
    assert expected.sum() == pytest.approx(actual.sum(), rel=0.08)


def test_expected_purchases_agree_with_lifetimes(cohort):
    from lifetimes import BetaGeoFitter

    summary = rfm_summary(cohort, 39 * 7)
    ours = BgNbd.fit(summary)
    theirs = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])

    np.testing.assert_allclose(
        ours.expected_purchases(summary, 26),
        theirs.conditional_expected_number_of_purchases_up_to_time(26, summary["frequency"], summary["recency"],
                                                                   summary["T"]),
        rtol=1e-6)
    np.testing.assert_allclose(
        ours.probability_alive(summary),
        theirs.conditional_probability_alive(summary["frequency"], summary["recency"], summary["T"]), rtol=1e-6)


def test_without_trees_the_model_is_bgnbd(cohort):
    model = ClvModel.bgnbd_only(cohort, cutoff=39 * 7)

    predicted = model.predict(cohort, cutoff=39 * 7, horizon_weeks=39)

    np.testing.assert_allclose(predicted["expected_purchases"], predicted["bgnbd_expected_purchases"])
    np.testing.assert_allclose(predicted["probability_active"], predicted["bgnbd_probability_active"])


def test_on_data_bgnbd_explains_the_trees_do_little_harm(cohort):
    """Where BG/NBD is the true model there is nothing to learn: the corrections stay near 1 and the
    error stays within 3% of BG/NBD's."""
    cutoff = 39 * 7
    calibration = cohort[cohort["day"] < cutoff]
    model = ClvModel.fit(calibration, cutoff=cutoff, backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=cutoff),
                         config=ClvModelConfig(rounds=150))
    predicted = model.predict(calibration, cutoff=cutoff, horizon_weeks=39)
    later = cohort[cohort["day"] >= cutoff].groupby("customer").size()
    actual = later.reindex(predicted.index).fillna(0).to_numpy()

    ours = np.abs(predicted["expected_purchases"] - actual).mean()
    reference = np.abs(predicted["bgnbd_expected_purchases"] - actual).mean()
    correction = predicted["expected_purchases"] / predicted["bgnbd_expected_purchases"]
    assert ours <= 1.03 * reference
    assert correction.median() == pytest.approx(1.0, abs=0.15)


def test_weekly_forecast_sums_to_the_horizon_forecast(cohort):
    cutoff = 39 * 7
    calibration = cohort[cohort["day"] < cutoff]
    model = ClvModel.fit(calibration, cutoff=cutoff, backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=cutoff),
                         config=ClvModelConfig(rounds=30))

    weekly = model.predict_weekly(calibration, cutoff=cutoff, weeks=13)
    total = model.predict(calibration, cutoff=cutoff, horizon_weeks=13)["expected_purchases"]

    np.testing.assert_allclose(weekly.sum(axis=1), total, rtol=1e-9)
    assert (weekly.to_numpy() >= 0).all()


def test_attributions_add_up_to_the_correction(cohort):
    cutoff = 39 * 7
    calibration = cohort[cohort["day"] < cutoff]
    model = ClvModel.fit(calibration, cutoff=cutoff, backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=cutoff),
                         config=ClvModelConfig(rounds=30))

    predicted = model.predict(calibration, cutoff=cutoff, horizon_weeks=39, with_attributions=True)

    # TreeSHAP: feature contributions plus the bias equal the log correction; without the bias they
    # account for each customer's departure from the average correction
    log_correction = np.log(predicted["expected_purchases"] / predicted["bgnbd_expected_purchases"])
    contributions = np.array([sum(row.values()) for row in predicted["attributions"]])
    spread = log_correction - contributions
    assert np.ptp(spread) < len(predicted["attributions"].iloc[0]) * 1e-4  # each rounded to 4 decimals


def test_a_store_where_nobody_bought_after_the_backtest_cutoffs_falls_back_to_bgnbd(cohort):
    """Purchases that all ended half a year before the store's newest day (e.g. an old import beside
    fresh API traffic) leave the back-tests without a single later purchase: BG/NBD alone, no crash."""
    old = cohort[cohort["day"] < 20 * 7]
    cutoff = 60 * 7

    model = ClvModel.fit(old, cutoff=cutoff, backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=cutoff))

    assert model.count_model == "" and model.training_rows == 0
    predicted = model.predict(old, cutoff=cutoff, horizon_weeks=13)
    # equal but for the 1e-6 floor the log offset puts under vanishing forecasts
    np.testing.assert_allclose(predicted["expected_purchases"], predicted["bgnbd_expected_purchases"], atol=1e-6)


def test_lifetime_value_is_the_spend_forecast_over_the_longer_span(cohort):
    cutoff = 39 * 7
    calibration = cohort[cohort["day"] < cutoff]
    model = ClvModel.fit(calibration, cutoff=cutoff, backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=cutoff),
                         config=ClvModelConfig(rounds=30))

    both = model.predict(calibration, cutoff=cutoff, horizon_weeks=13, value_weeks=52)
    year = model.predict(calibration, cutoff=cutoff, horizon_weeks=52)

    np.testing.assert_allclose(both["lifetime_value"], year["expected_spend"], rtol=1e-12)
    assert (both["lifetime_value"] >= both["expected_spend"]).all()


def test_forecasts_stay_finite_where_the_fit_runs_r_and_alpha_to_infinity():
    """A shop where nobody has bought twice leaves the likelihood flat in r; CI's fit on such a shop
    returned r ≈ 185889, where hyp2f1 overflows. The forecast must be the point-mass limit there,
    continuous with the exact formula where that is still finite."""
    summary = pd.DataFrame({"frequency": [0.0, 0.0, 1.0, 3.0], "recency": [0.0, 0.0, 2.0, 5.0],
                            "T": [0.5, 3.0, 4.0, 8.0], "monetary_value": [0.0, 0.0, 12.5, 20.0]})
    rate, a, b = 0.1, 0.5, 3.0

    def expected(r):
        return BgNbd(params={"r": r, "alpha": r / rate, "a": a, "b": b}).expected_purchases(summary, 13)

    huge = expected(185889.36353976207)
    assert np.isfinite(huge).all() and (huge > 0).all()
    np.testing.assert_allclose(huge, expected(1e4), rtol=1e-3)  # the exact formula, still finite at 1e4
    assert np.isfinite(BgNbd(params={"r": 1e7, "alpha": 1e8, "a": a, "b": b}).probability_any(summary, 13)).all()


def test_a_shop_where_nobody_bought_twice_gets_finite_forecasts():
    days = pd.DataFrame({"customer": range(31), "day": [1 + c % 20 for c in range(31)],
                         "amount": 25.0, "quantity": 2.0})

    model = ClvModel.bgnbd_only(days, cutoff=30)
    predicted = model.predict(days, cutoff=30, horizon_weeks=13, value_weeks=52)

    numbers = predicted.select_dtypes("number")
    assert np.isfinite(numbers.to_numpy()).all(), numbers[~np.isfinite(numbers).all(axis=1)]
