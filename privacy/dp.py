"""Differentially private release of aggregate counts (segment sizes, category demand).

Noise comes from OpenDP's discrete Laplace (geometric) mechanism; the privacy
accounting is OpenDP's own privacy map, so the library, not this module,
certifies that a release spends no more than the epsilon it was given.
"""

import math
import numbers
from collections.abc import Mapping

import opendp.prelude as dp
from django.conf import settings

# OpenDP gates make_laplace behind "contrib": it has a written proof, not yet a formal vetting.
dp.enable_features("contrib")

DEFAULT_EPSILON = 1.0

_INTEGER_VECTOR_SPACE = (
    dp.vector_domain(dp.atom_domain(T=dp.i64)),
    dp.l1_distance(T=dp.i64),
)


def dp_counts(
    counts: Mapping[str, int],
    *,
    epsilon: float | None = None,
    sensitivity: int = 1,
    disjoint: bool = False,
) -> dict[str, int]:
    """Return `counts` with discrete Laplace noise, clamped at 0, as one epsilon-DP release.

    `epsilon` is the budget for the whole release, not per count; it defaults to
    `settings.DP_EPSILON` (1.0 when unset). Neighbouring datasets differ by adding or
    removing one customer, who changes each count by at most `sensitivity`.

    - `disjoint=False` (default, always safe): one customer may touch every count, as
      with rule segments that overlap. The L1 sensitivity of the vector is
      `len(counts) * sensitivity`, which is basic composition: each count gets
      epsilon / len(counts).
    - `disjoint=True`: each customer is in at most one count, as with the clusters of
      one clustering or a partition by category. Parallel composition: each count gets
      the whole epsilon. Passing it for overlapping counts breaks the guarantee.

    Clamping at 0 is post-processing and costs no privacy. Small counts are biased
    upwards by the clamp; the zeros themselves are noisy, so a 0 does not reveal an
    empty segment.
    """
    epsilon = dp_epsilon_validated(epsilon)
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise ValueError(f"sensitivity must be a positive integer, got {sensitivity!r}")
    if not counts:
        return {}

    keys = list(counts)
    true_values = [_count_validated(key, counts[key]) for key in keys]
    l1_sensitivity = sensitivity if disjoint else sensitivity * len(keys)
    mechanism = dp_counts_mechanism(l1_sensitivity=l1_sensitivity, epsilon=epsilon)
    noisy_values = mechanism(true_values)
    return {key: max(0, int(value)) for key, value in zip(keys, noisy_values)}


def dp_counts_mechanism(*, l1_sensitivity: int, epsilon: float) -> dp.Measurement:
    """The smallest-noise OpenDP discrete Laplace mechanism whose privacy map certifies
    `epsilon` for vectors of integer counts at `l1_sensitivity`.

    The scale is about `l1_sensitivity / epsilon`; a binary search on the library's privacy
    map finds it, because that division alone can round to a scale that spends a hair
    more than `epsilon` (e.g. 3 / 0.7).
    """
    epsilon = dp_epsilon_validated(epsilon)
    scale = dp.binary_search_param(
        lambda s: _INTEGER_VECTOR_SPACE >> dp.m.then_laplace(scale=s),
        d_in=l1_sensitivity,
        d_out=epsilon,
    )
    return _INTEGER_VECTOR_SPACE >> dp.m.then_laplace(scale=scale)


def dp_epsilon_validated(epsilon: float | None) -> float:
    """`epsilon` as a float, or `settings.DP_EPSILON` when None; ValueError unless finite and > 0."""
    if epsilon is None:
        epsilon = getattr(settings, "DP_EPSILON", DEFAULT_EPSILON)
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a number, got {epsilon!r}")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    return float(epsilon)


def _count_validated(key: str, value: int) -> int:
    as_int = int(value)
    if as_int != value or as_int < 0:
        raise ValueError(f"count for {key!r} must be a non-negative integer, got {value!r}")
    return as_int
