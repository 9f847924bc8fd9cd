"""Differentially private release of counts: shape, noise scale, budget accounting, validation.

The noise comes from the OS's CSPRNG inside OpenDP and cannot be seeded, so the statistical
checks use enough draws that their bounds sit far outside sampling error: the mean absolute
error of 2,000 discrete Laplace draws has a standard error of about 2% of its mean, and the
bounds allow a factor of 2 either way.
"""

import math

import pytest

from privacy.dp import dp_counts, dp_counts_mechanism, dp_epsilon_validated

DRAWS = 2_000
# Far from 0, so the clamp at 0 never touches the error being measured.
LARGE_COUNT = 100_000


@pytest.fixture(autouse=True)
def cache_empty():
    """Override the shared fixture: these tests use no cache, and clearing it flushes a shared Redis DB."""


def discrete_laplace_mean_absolute_error(scale: float) -> float:
    """E|X| for P(x) ∝ q^|x|, q = exp(-1/scale): 2q / (1 - q²)."""
    q = math.exp(-1 / scale)
    return 2 * q / (1 - q * q)


def mean_absolute_error(true_count: int, released: list[int]) -> float:
    return sum(abs(value - true_count) for value in released) / len(released)


def released_disjoint(*, epsilon: float, sensitivity: int = 1) -> list[int]:
    """DRAWS disjoint counts in one release: each gets noise at scale sensitivity / epsilon."""
    counts = {f"category-{i}": LARGE_COUNT for i in range(DRAWS)}
    return list(dp_counts(counts, epsilon=epsilon, sensitivity=sensitivity, disjoint=True).values())


def test_release_keeps_keys_and_gives_non_negative_integers():
    counts = {"empty": 0, "tiny": 1, "small": 3, "large": 50_000}

    released = dp_counts(counts, epsilon=0.1)

    assert list(released) == list(counts)
    assert all(type(value) is int and value >= 0 for value in released.values())


def test_small_counts_are_clamped_at_zero_not_released_negative():
    released = dp_counts({f"segment-{i}": 0 for i in range(200)}, epsilon=0.1, disjoint=True)

    assert min(released.values()) == 0
    # Half the noise is positive: zeros do not all come back as zero, so a 0 reveals nothing certain.
    assert max(released.values()) > 0


def test_noise_matches_the_discrete_laplace_scale_for_epsilon():
    epsilon = 0.5
    expected = discrete_laplace_mean_absolute_error(1 / epsilon)

    error = mean_absolute_error(LARGE_COUNT, released_disjoint(epsilon=epsilon))

    assert 0.5 * expected < error < 2 * expected


def test_smaller_epsilon_gives_larger_error():
    error_at_1 = mean_absolute_error(LARGE_COUNT, released_disjoint(epsilon=1.0))
    error_at_0_1 = mean_absolute_error(LARGE_COUNT, released_disjoint(epsilon=0.1))

    # Expected 0.85 and 10.0: a ratio near 12.
    assert error_at_0_1 > 5 * error_at_1


def test_sensitivity_scales_the_noise():
    expected = discrete_laplace_mean_absolute_error(5 / 1.0)

    error = mean_absolute_error(LARGE_COUNT, released_disjoint(epsilon=1.0, sensitivity=5))

    assert 0.5 * expected < error < 2 * expected


def test_overlapping_counts_split_epsilon_and_disjoint_counts_each_get_all_of_it():
    # Given 10 counts and a total budget of 1: overlapping counts get epsilon 0.1 each
    # (basic composition), disjoint ones the full 1 each (parallel composition).
    counts = {f"segment-{i}": LARGE_COUNT for i in range(10)}
    overlapping, disjoint = [], []

    for _ in range(DRAWS // len(counts)):
        overlapping += dp_counts(counts, epsilon=1.0).values()
        disjoint += dp_counts(counts, epsilon=1.0, disjoint=True).values()

    overlapping_expected = discrete_laplace_mean_absolute_error(10 / 1.0)
    disjoint_expected = discrete_laplace_mean_absolute_error(1 / 1.0)
    assert 0.5 * overlapping_expected < mean_absolute_error(LARGE_COUNT, overlapping) < 2 * overlapping_expected
    assert 0.5 * disjoint_expected < mean_absolute_error(LARGE_COUNT, disjoint) < 2 * disjoint_expected


@pytest.mark.parametrize(("l1_sensitivity", "epsilon"), [(1, 1.0), (3, 0.7), (10, 1.0), (25, 0.05)])
def test_opendp_privacy_map_certifies_the_budget_and_no_more_noise_is_wasted(l1_sensitivity, epsilon):
    mechanism = dp_counts_mechanism(l1_sensitivity=l1_sensitivity, epsilon=epsilon)

    assert mechanism.map(l1_sensitivity) <= epsilon
    # Tight: a customer who could move the counts by one more would exceed the budget.
    assert mechanism.map(l1_sensitivity + 1) > epsilon


@pytest.mark.parametrize("epsilon", [0, 0.0, -1, float("nan"), float("inf"), float("-inf")])
def test_invalid_epsilon_is_refused(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        dp_counts({"a": 10}, epsilon=epsilon)


@pytest.mark.parametrize("epsilon", ["1", True])
def test_epsilon_that_is_not_a_number_is_refused(epsilon):
    with pytest.raises(TypeError, match="epsilon"):
        dp_counts({"a": 10}, epsilon=epsilon)


def test_invalid_epsilon_is_refused_even_for_an_empty_release():
    with pytest.raises(ValueError, match="epsilon"):
        dp_counts({}, epsilon=0)


@pytest.mark.parametrize("sensitivity", [0, -1, 1.5, True])
def test_invalid_sensitivity_is_refused(sensitivity):
    with pytest.raises(ValueError, match="sensitivity"):
        dp_counts({"a": 10}, epsilon=1.0, sensitivity=sensitivity)


@pytest.mark.parametrize("count", [-1, 2.5])
def test_counts_must_be_non_negative_integers(count):
    with pytest.raises(ValueError, match="count for 'a'"):
        dp_counts({"a": count}, epsilon=1.0)


def test_default_epsilon_comes_from_settings(settings):
    settings.DP_EPSILON = 0.25
    assert dp_epsilon_validated(None) == 0.25

    settings.DP_EPSILON = float("nan")
    with pytest.raises(ValueError, match="epsilon"):
        dp_counts({"a": 10})


def test_default_epsilon_is_1_when_settings_have_none(settings):
    del settings.DP_EPSILON

    assert dp_epsilon_validated(None) == 1.0
