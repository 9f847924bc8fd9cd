"""The preprocessing stage as one fitted scikit-learn Pipeline (imputation → standardisation → PCA),
feature combinations, and the feature report (mutual information against a business target).
No Django here: arrays in, arrays out."""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Sequence
from dataclasses import dataclass

import joblib
import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.feature_selection import mutual_info_classif
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

# Heavy-tailed counts and amounts are compressed first so a few whales do not own the variance.
LOG_SCALED = frozenset({
    "frequency", "monetary", "average_order_value", "events", "views", "searches", "carts", "purchase_events",
    "units", "refunds", "cancellations", "ratings", "sessions", "events_per_session", "shares", "degree",
    "referrals_made", "referrals_received", "neighbours_net_value", "recency_days", "tenure_days",
    "recency_per_frequency", "days_since_last_event",
})


@dataclass(frozen=True)
class Combination:
    """A feature made from two others; kept only if it tells more about the target than either part."""

    name: str
    parts: tuple[str, str]
    formula: str

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.name == "recency_per_frequency":
                return a / np.where(b > 0, b, np.nan)
            if self.name == "frequency_decayed":
                return np.log1p(np.clip(a, 0, None)) - b / 30.0
            if self.name == "cart_rate_x_price_sensitivity":
                return a * b
        raise ValueError(self.name)


COMBINATIONS = (
    # days since the last purchase per order made: "overdue" relative to the customer's own cadence
    Combination("recency_per_frequency", ("recency_days", "frequency"), "recency_days / frequency"),
    # ln of the order count, discounted by e-folds of 30 idle days: a buyer who went quiet fades
    Combination(
        "frequency_decayed", ("frequency", "days_since_last_event"), "ln(1 + frequency) − days_since_last_event / 30"
    ),
    Combination(
        "cart_rate_x_price_sensitivity", ("view_to_cart", "price_sensitivity"), "view_to_cart × price_sensitivity"
    ),
)


def combinations_apply(matrix: np.ndarray, names: list[str], combinations) -> tuple[np.ndarray, list[str]]:
    """Append the combinations' columns to a matrix whose columns are `names`."""
    columns = [matrix]
    for combo in combinations:
        a, b = (matrix[:, names.index(p)] for p in combo.parts)
        columns.append(combo.compute(a, b)[:, None])
    return np.hstack(columns), [*names, *(c.name for c in combinations)]


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _log_columns(names: list[str]) -> list[int]:
    return [i for i, n in enumerate(names) if n in LOG_SCALED]


class _LogSelected:
    """Callable (picklable) that log-compresses the chosen columns."""

    def __init__(self, columns: list[int]):
        self.columns = columns

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype="float64", copy=True)
        x[:, self.columns] = _signed_log1p(x[:, self.columns])
        return x


def pipeline_fit(matrix: np.ndarray, names: list[str], *, components: int, seed: int = 0) -> Pipeline:
    """Fit impute (median) → log-compress heavy tails → standardise → PCA to `components`.

    Columns that are undefined for everyone (e.g. ratings in a shop without ratings) are imputed
    to 0 so the column count, and so the vector layout, stays fixed.
    """
    n_components = max(1, min(components, matrix.shape[1], matrix.shape[0]))
    pipeline = Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("log", FunctionTransformer(_LogSelected(_log_columns(names)))),
        ("scale", StandardScaler()),
        ("reduce", PCA(n_components=n_components, random_state=seed)),
    ])
    pipeline.fit(matrix)
    _components_oriented(pipeline.named_steps["reduce"])
    return pipeline


def _components_oriented(pca: PCA) -> None:
    """Give each component the sign whose projection on a fixed generic direction is positive.

    scikit-learn makes each component's largest loading positive. Two features that mirror each other
    (price_sensitivity = 1 − price_percentile) tie on that exactly, so float noise far below anything
    meaningful (a worker's chunked sums adding in another order) flipped a whole component between two
    fits of the same customers. A generic direction has no such ties: a projection near zero would take
    a component orthogonal to it by chance, not by the features' structure.
    """
    direction = np.random.default_rng(20261203).standard_normal(pca.components_.shape[1])
    pca.components_ *= np.where(pca.components_ @ direction < 0, -1.0, 1.0)[:, None]


def standardised(pipeline: Pipeline, matrix: np.ndarray) -> np.ndarray:
    """z-scores of each trait before the reduction (for explanations)."""
    return pipeline[:-1].transform(matrix)


def vectors(pipeline: Pipeline, matrix: np.ndarray, dimensions: int) -> np.ndarray:
    """The compact feature vector, zero-padded to `dimensions` when PCA kept fewer components."""
    reduced = pipeline.transform(matrix)
    out = np.zeros((matrix.shape[0], dimensions), dtype="float32")
    out[:, : reduced.shape[1]] = reduced[:, :dimensions]
    return out


def pipeline_dump(pipeline: Pipeline, *, key: bytes) -> tuple[bytes, str]:
    """The pipeline as bytes and their HMAC-SHA256 under `key`."""
    buffer = io.BytesIO()
    joblib.dump({"sklearn": sklearn.__version__, "pipeline": pipeline}, buffer)
    blob = buffer.getvalue()
    return blob, pipeline_signature(blob, key=key)


def pipeline_signature(blob: bytes, *, key: bytes) -> str:
    return hmac.new(key, bytes(blob), hashlib.sha256).hexdigest()


class PipelineIntegrityError(RuntimeError):
    pass


def pipeline_load(blob: bytes, signature: str, *, keys: Sequence[bytes]) -> Pipeline:
    """Load our own stored artifact, refusing one that none of `keys` signed. joblib unpickles, and
    unpickling runs code: a plain checksum would not do, since whoever can replace the blob can
    replace its checksum too."""
    blob = bytes(blob)
    if not any(hmac.compare_digest(pipeline_signature(blob, key=key), signature) for key in keys):
        raise PipelineIntegrityError("stored pipeline is not signed by this store's key")
    return joblib.load(io.BytesIO(blob))["pipeline"]


def mutual_information(matrix: np.ndarray, target: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Mutual information (nats) of each column with a binary target; NaN imputed by the median."""
    imputed = SimpleImputer(strategy="median", keep_empty_features=True).fit_transform(matrix)
    return mutual_info_classif(imputed, target.astype(int), discrete_features=False, random_state=seed, n_neighbors=5)


MI_REPEATS = 4


def _stable_mutual_information(matrix: np.ndarray, target: np.ndarray, *, seed: int) -> np.ndarray:
    """The estimator's mean over a few seeded row orders of rows already in canonical order.

    The k-NN estimator breaks ties among equal values (counts such as frequency) by a tiny noise
    assigned in row order, so one estimate of a discrete column moves by ±10% with the order the
    database returned the rows in; averaging seeded reorderings of a sorted matrix makes the report
    a function of the data alone and halves that spread."""
    rng = np.random.default_rng(seed)
    draws = []
    for repeat in range(MI_REPEATS):
        order = np.arange(len(target)) if repeat == 0 else rng.permutation(len(target))
        draws.append(mutual_information(matrix[order], target[order], seed=seed + repeat))
    return np.mean(draws, axis=0)


NULL_PERMUTATIONS = 99
NULL_SAMPLE = 5000  # customers the shuffles use: fewer than the report makes the test stricter


def _null_information(column: np.ndarray, target: np.ndarray, seed: int) -> float:
    """95th percentile of the information the column shows about shuffles of the target: what the
    estimator reports when there is nothing to find."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(target), size=min(len(target), NULL_SAMPLE), replace=False)
    column, target = column[rows, None], target[rows]
    draws = [float(mutual_information(column, rng.permutation(target), seed=seed)[0]) for _ in range(NULL_PERMUTATIONS)]
    return float(np.quantile(draws, 0.95))


def feature_report(matrix: np.ndarray, names: list[str], target: np.ndarray, *, seed: int = 0) -> dict:
    """Mutual information of every feature and candidate combination against the target.

    A combination earns its place when its information exceeds the better of its parts by 5% and
    by more than the 95th percentile of what the estimator finds in the combination against 99
    shuffles of the target: a one-sided permutation test at the 5% level, so a combination of
    pure noise is kept about one time in twenty. (The k-NN estimator is biased upwards and its
    noise depends on the column's distribution: a fixed margin in nats either admits noise or
    rejects real gains.)
    """
    combined, all_names = combinations_apply(matrix, names, COMBINATIONS)
    canonical = np.lexsort(np.column_stack([combined, target]).T[::-1])  # the report must not depend on row order
    combined, target = combined[canonical], target[canonical]
    mi = _stable_mutual_information(combined, target, seed=seed)
    by_name = dict(zip(all_names, mi.tolist(), strict=True))
    ranked = sorted(names, key=lambda n: -by_name[n])
    combos = []
    for offset, combo in enumerate(COMBINATIONS):
        best_part = max(by_name[p] for p in combo.parts)
        gain = by_name[combo.name] - best_part
        null = _null_information(combined[:, len(names) + offset], target, seed) if gain > 0 else None
        combos.append({
            "name": combo.name,
            "formula": combo.formula,
            "mutual_information": round(by_name[combo.name], 5),
            "best_part_mutual_information": round(best_part, 5),
            "noise_mutual_information": None if null is None else round(null, 5),
            "kept": null is not None and by_name[combo.name] > 1.05 * best_part and gain > null,
        })
    return {
        "method": "mutual information (k-NN estimator, nats), sklearn.feature_selection.mutual_info_classif",
        "customers": int(len(target)),
        "positives": int(np.sum(target)),
        "features": [
            {"name": n, "mutual_information": round(by_name[n], 5), "rank": i + 1} for i, n in enumerate(ranked)
        ],
        "combinations": combos,
    }
