"""Feature sets: fit the preprocessing pipeline (cleaning, combinations, PCA, standardisation)
and the fusion weight on a sample of the store, keep it versioned, and find the active one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils.crypto import salted_hmac

from ingestion.models import EventType
from profiles import fusion, labels, preprocessing
from profiles.features import (
    NUMERIC_FEATURES,
    FeatureWindow,
    features_compute,
    numeric_matrix,
    store_as_of,
)
from profiles.models import (
    FEATURE_VECTOR_DIMENSIONS,
    FeatureSet,
)

logger = logging.getLogger(__name__)

TARGET_DAYS = 30
_PERCENTILES = list(range(0, 101, 5))

PIPELINE_KEY_SALT = "profiles.feature_sets.pipeline"


class NothingToProfile(Exception):
    """The store has no events yet."""


# --- feature sets ----------------------------------------------------------------------------------


def _customer_sample(size: int, seed: int) -> list[int]:
    """A deterministic pseudo-random sample of customers that have events."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.id FROM ingestion_customer c
            WHERE c.merged_into_id IS NULL AND c.consent_profiling AND EXISTS (SELECT 1 FROM ingestion_event e WHERE e.customer_id = c.id)
            ORDER BY md5(c.id::text || %s) LIMIT %s
            """,
            [str(seed), size],
        )
        return [row[0] for row in cursor.fetchall()]


def _purchasers_between(customer_ids: list[int], start: datetime, stop: datetime) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT customer_id FROM ingestion_event WHERE customer_id = ANY(%s) AND event_type = 6 "
            "AND occurred_at >= %s AND occurred_at < %s",
            [customer_ids, start, stop],
        )
        return {row[0] for row in cursor.fetchall()}


def customer_values_snapshot() -> int:
    """Recompute every customer's net spend in one pass over purchase and refund events."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM profiles_customervalue")  # not TRUNCATE: legal inside any transaction
        cursor.execute(
            """
            INSERT INTO profiles_customervalue (customer_id, net_value)
            SELECT e.customer_id,
                   sum(CASE WHEN e.event_type = %s THEN e.value ELSE -e.value END)::float8
            FROM ingestion_event e JOIN ingestion_customer c ON c.id = e.customer_id AND c.consent_profiling
            WHERE e.event_type IN (%s, %s) AND e.value IS NOT NULL
            GROUP BY e.customer_id
            """,
            [int(EventType.PURCHASE), int(EventType.PURCHASE), int(EventType.REFUND)],
        )
        return cursor.rowcount


def window_through(moment: datetime) -> FeatureWindow:
    return FeatureWindow(as_of=moment, until=moment + timedelta(microseconds=1))


@dataclass
class _Fitted:
    names: list[str]
    combinations: tuple[preprocessing.Combination, ...]
    pipeline: object


def feature_matrix(features: pd.DataFrame, combinations) -> tuple[np.ndarray, list[str]]:
    base = list(NUMERIC_FEATURES)
    return preprocessing.combinations_apply(numeric_matrix(features, base), base, combinations)


def feature_set_fit(*, sample_size: int | None = None, seed: int = 0) -> FeatureSet:
    """Fit and activate a new feature-set version on a sample of customers.

    1. Feature report on a time split: features as of `as_of − 30 days` against "purchased in the
       30 days after"; combinations that earn their place join the feature list.
    2. The preprocessing pipeline is fitted on the sample's features as of `as_of`, together with
       the population statistics labels and explanations use.
    """
    sample_size = sample_size or settings.PROFILE_FIT_SAMPLE_CUSTOMERS
    as_of = store_as_of()
    if as_of is None:
        raise NothingToProfile("the event store is empty; import events first")
    customer_values_snapshot()
    sample = _customer_sample(sample_size, seed)

    cutoff = as_of - timedelta(days=TARGET_DAYS)
    past = features_compute(customer_ids=sample, window=FeatureWindow.at(cutoff))
    past = past[past["events"] > 0]
    bought = _purchasers_between(list(past.index), cutoff, as_of + timedelta(microseconds=1))
    target = past.index.isin(list(bought)).astype(int)
    base = list(NUMERIC_FEATURES)
    report: dict = {
        "target": f"purchase within {TARGET_DAYS} days after {cutoff.isoformat()}",
        "cutoff": cutoff.isoformat(),
    }
    kept: tuple[preprocessing.Combination, ...] = ()
    if len(past) >= 20 and 0 < target.sum() < len(target):
        report.update(preprocessing.feature_report(numeric_matrix(past, base), base, target, seed=seed))
        kept_names = {c["name"] for c in report["combinations"] if c["kept"]}
        kept = tuple(c for c in preprocessing.COMBINATIONS if c.name in kept_names)
    else:
        report["skipped"] = "too few customers with history, or the target has one class only"

    current = features_compute(customer_ids=sample, window=window_through(as_of))
    matrix, names = feature_matrix(current, kept)
    pipeline = preprocessing.pipeline_fit(matrix, names, components=FEATURE_VECTOR_DIMENSIONS, seed=seed)
    blob, checksum = feature_set_pipeline_dump(pipeline)
    pca = pipeline.named_steps["reduce"]
    report["pca"] = {
        "components": int(pca.n_components_),
        "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
    }
    fusion_weight, report["fusion"] = _fusion_weight(pipeline, past, target, kept, cutoff)
    population = {
        "as_of": as_of.isoformat(),
        "value_thresholds": labels.value_thresholds(current["net_monetary"], current["frequency"]),
        "combinations": [c.name for c in kept],
        "percentiles": _percentiles(matrix, names),
    }
    with transaction.atomic():
        version = (FeatureSet.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        FeatureSet.objects.filter(is_active=True).update(is_active=False)
        return FeatureSet.objects.create(
            version=version, feature_names=names, pipeline=blob, pipeline_sha256=checksum,
            population=_finite(population), report=_finite(report), customers_fitted=len(sample), is_active=True,
            fusion_weight=fusion_weight,
        )


def _finite(value):
    """JSON-safe: NaN and infinities (PCA of a handful of customers, say) become None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _fusion_weight(pipeline, past: pd.DataFrame, target: np.ndarray, kept, cutoff: datetime) -> tuple[float, dict]:
    """Tune w of the fused vector on the report's validation task (kNN prediction of a purchase in
    the next 30 days) over the sample customers. Both views are taken as of the cutoff: the traits
    are, and the embeddings are re-encoded by the active model from events before it (a stored
    embedding has seen the very purchases the task asks about)."""
    from training.services import customer_embeddings_encode, model_version_active

    version = model_version_active()
    if version is None:
        return 1.0, {"weight": 1.0, "reason": "no learned model is active"}
    embeddings = customer_embeddings_encode(customer_ids=list(past.index), version=version, before=cutoff)
    if len(embeddings) < 50:
        return 1.0, {"weight": 1.0, "reason": "fewer than 50 sampled customers have a learned embedding"}
    rows = np.array([customer_id in embeddings for customer_id in past.index])
    subset = past[rows]
    matrix, _ = feature_matrix(subset, kept)
    traits = preprocessing.vectors(pipeline, matrix, FEATURE_VECTOR_DIMENSIONS)
    learned = np.vstack([embeddings[c] for c in subset.index])
    outcome = target[rows]
    if outcome.min() == outcome.max():
        return 1.0, {"weight": 1.0, "reason": "the validation target has one class only"}
    tuned = fusion.fusion_weight_tune(traits, learned, outcome)
    return float(tuned["weight"]), {**tuned, "customers": int(rows.sum()), "task": "kNN AUC of purchase in the next 30 days"}


def _percentiles(matrix: np.ndarray, names: list[str]) -> dict:
    """Per feature: values at every 5th percentile (for "where does this customer sit")."""
    out = {}
    for i, name in enumerate(names):
        column = matrix[:, i]
        column = column[np.isfinite(column)]
        out[name] = np.percentile(column, _PERCENTILES).round(4).tolist() if len(column) else []
    return out


def _pipeline_signing_keys() -> list[bytes]:
    """One key per Django secret, the current one first: SECRET_KEY_FALLBACKS keep pipelines signed
    before a SECRET_KEY rotation loadable until the next fit signs a new one."""
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return [salted_hmac(PIPELINE_KEY_SALT, "feature-set pipeline", secret=secret).digest() for secret in secrets]


def feature_set_pipeline_dump(pipeline) -> tuple[bytes, str]:
    return preprocessing.pipeline_dump(pipeline, key=_pipeline_signing_keys()[0])


@lru_cache(maxsize=8)
def feature_set_pipeline(feature_set_id: int, checksum: str):
    blob = FeatureSet.objects.values_list("pipeline", flat=True).get(pk=feature_set_id)
    return preprocessing.pipeline_load(blob, checksum, keys=_pipeline_signing_keys())


def feature_set_active() -> FeatureSet | None:
    return FeatureSet.objects.filter(is_active=True).defer("pipeline").first()
