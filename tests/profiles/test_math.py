"""Pure parts of the profile stage, on small seeded arrays: fusion, labels, the preprocessing
pipeline and the feature report."""

import numpy as np
import pandas as pd
import pytest

from profiles import fusion, labels, preprocessing


def test_fused_cosine_is_the_weighted_sum_of_the_two_cosines():
    rng = np.random.default_rng(0)
    traits, embeddings = rng.normal(size=(2, 16)), rng.normal(size=(2, 64))
    w = 0.3

    fused = fusion.fuse(traits, embeddings, w, 64).astype("float64")

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    expected = w * cos(*traits) + (1 - w) * cos(*embeddings)
    assert cos(*fused) == pytest.approx(expected, abs=1e-5)
    assert np.linalg.norm(fused, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_a_customer_without_embedding_is_fused_from_traits_alone():
    traits = np.array([[3.0, 4.0]])

    fused = fusion.fuse(traits, np.full((1, 3), np.nan), 0.5, 3)

    assert fused[0].tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0, 0.0])


def test_weight_tuning_prefers_the_view_that_predicts_the_target():
    rng = np.random.default_rng(1)
    n = 400
    target = rng.random(n) < 0.3
    informative = rng.normal(size=(n, 8)) + 2.5 * target[:, None]  # separates buyers
    noise = rng.normal(size=(n, 8))

    tuned_on_embedding = fusion.fusion_weight_tune(noise, informative, target.astype(int))
    tuned_on_traits = fusion.fusion_weight_tune(informative, noise, target.astype(int))

    assert tuned_on_embedding["weight"] <= 0.25
    assert tuned_on_traits["weight"] >= 0.75
    assert tuned_on_traits["auc_by_weight"]["1.0"] > tuned_on_traits["auc_by_weight"]["0.0"] + 0.2


def _features(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_lifecycle_rules_at_their_boundaries():
    frame = _features(
        days_since_last_event=[None, 5.0, 30.0, 30.5, 90.0, 90.5, 10.0],
        tenure_days=[None, 400.0, 400.0, 400.0, 400.0, 400.0, 12.0],
    )

    assert labels.lifecycle_stages(frame).tolist() == [
        "dormant", "active", "active", "at_risk", "at_risk", "lapsed", "new",
    ]


def test_value_tiers_follow_the_buyer_percentiles():
    net = pd.Series([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0])
    frequency = pd.Series([0] + [1] * 10)
    thresholds = labels.value_thresholds(net, frequency)  # buyers 10…100: P40 = 46, P80 = 82

    tiers = labels.value_tiers(pd.DataFrame({"net_monetary": net, "frequency": frequency}), thresholds)

    assert thresholds == {"high": pytest.approx(82.0), "medium": pytest.approx(46.0)}
    assert tiers.tolist() == ["none", "low", "low", "low", "low", "medium", "medium", "medium", "medium", "high", "high"]


def test_pipeline_imputes_standardises_and_reduces_to_a_fixed_width():
    rng = np.random.default_rng(2)
    names = ["frequency", "monetary", "rating_mean", "hour_sin"]
    matrix = np.column_stack([rng.poisson(3, 200), rng.lognormal(3, 1, 200), np.full(200, np.nan), rng.normal(size=200)])
    matrix[::7, 0] = np.nan

    pipeline = preprocessing.pipeline_fit(matrix, names, components=16)
    vectors = preprocessing.vectors(pipeline, matrix, 16)
    blob, checksum = preprocessing.pipeline_dump(pipeline, key=b"test key")

    assert vectors.shape == (200, 16) and np.isfinite(vectors).all()
    assert np.allclose(vectors[:, 4:], 0)  # 4 columns → at most 4 components, zero-padded
    z = preprocessing.standardised(pipeline, matrix)
    assert np.allclose(z[:, [0, 1, 3]].mean(axis=0), 0, atol=1e-9)
    assert np.allclose(z[:, 2], 0)  # a column undefined for everyone stays, as zeros
    reloaded = preprocessing.pipeline_load(blob, checksum, keys=[b"test key"])
    assert np.array_equal(preprocessing.vectors(reloaded, matrix, 16), vectors)


def test_two_fits_of_the_same_customers_agree_although_two_features_mirror_each_other():
    """price_sensitivity = 1 − price_percentile ties scikit-learn's sign rule (largest loading positive)
    exactly; noise of 1e-13 (sums added in another order on a worker) then flipped whole components,
    28 fits in 40 here before components were oriented by a fixed generic direction."""
    rng = np.random.default_rng(3)
    share = rng.uniform(0, 1, 400)
    matrix = np.column_stack([rng.standard_normal((400, 6)), share, 1 - share])
    names = [f"trait_{i}" for i in range(6)] + ["price_percentile", "price_sensitivity"]
    reference = preprocessing.vectors(preprocessing.pipeline_fit(matrix, names, components=8), matrix, 8)

    for seed in range(40):
        noise = np.random.default_rng(100 + seed).standard_normal(matrix.shape) * 1e-13
        refit = preprocessing.pipeline_fit(matrix + noise, names, components=8)
        assert np.allclose(preprocessing.vectors(refit, matrix, 8), reference, atol=1e-6), seed
    reordered = rng.permutation(400)
    refit = preprocessing.pipeline_fit(matrix[reordered], names, components=8)
    assert np.allclose(preprocessing.vectors(refit, matrix, 8), reference, atol=1e-6)


def test_feature_report_keeps_an_informative_combination_and_rarely_a_noise_one():
    """The rule is a permutation test at 5%: over ten independent shops, the combination the
    target depends on is always kept, the product of two noise columns at most twice
    (P(≥ 3 of 10) ≈ 1% when each is kept with probability 0.05)."""
    names = ["recency_days", "frequency", "monetary", "days_since_last_event", "view_to_cart", "price_sensitivity"]
    kept_informative, kept_noise = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        n = 1000
        matrix = np.column_stack([
            rng.uniform(1, 100, n), rng.integers(1, 20, n), rng.lognormal(3, 1, n), rng.uniform(0, 200, n),
            rng.uniform(0, 1, n), rng.uniform(0, 1, n),
        ])
        # the target depends on recency relative to frequency, not on either alone
        target = (matrix[:, 0] / matrix[:, 1] < 5).astype(int)

        report = preprocessing.feature_report(matrix, names, target, seed=seed)

        kept = {c["name"]: c["kept"] for c in report["combinations"]}
        kept_informative += kept["recency_per_frequency"]
        kept_noise += kept["cart_rate_x_price_sensitivity"]
        assert report["positives"] == int(target.sum())
    assert kept_informative == 10
    assert kept_noise <= 2


def test_feature_report_does_not_depend_on_the_order_rows_arrive_in():
    """The database returns customers in no fixed order; the k-NN estimator breaks ties among
    equal counts by noise assigned in row order, so without a canonical order the report (and
    which combinations are kept) changed from run to run."""
    names = ["recency_days", "frequency", "monetary", "days_since_last_event", "view_to_cart", "price_sensitivity"]
    rng = np.random.default_rng(5)
    n = 800
    matrix = np.column_stack([
        rng.integers(0, 60, n), rng.integers(1, 6, n), rng.lognormal(3, 1, n), rng.integers(0, 90, n),
        rng.uniform(0, 1, n), rng.uniform(0, 1, n),
    ]).astype(float)
    target = (matrix[:, 1] + rng.integers(0, 3, n) > 4).astype(int)

    reference = preprocessing.feature_report(matrix, names, target, seed=0)
    for shuffle_seed in (1, 2):
        order = np.random.default_rng(shuffle_seed).permutation(n)
        assert preprocessing.feature_report(matrix[order], names, target[order], seed=0) == reference
