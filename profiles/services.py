"""Writes of the profiles app: compute and store profiles (traits, feature vector, fused vector),
store learned embeddings, and the pending marks that coalesce real-time refreshes (the refresh
flow itself is pipeline.flows.customers_refresh). Feature sets: profiles.feature_sets; batch
builds: profiles.builds."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection, transaction

from config.broker_redis import broker_redis
from profiles import fusion, labels, preprocessing
from profiles.features import (
    NUMERIC_FEATURES,
    features_compute,
    traits_records,
)
from profiles.models import (
    EMBEDDING_DIMENSIONS,
    FEATURE_VECTOR_DIMENSIONS,
    FeatureSet,
)

logger = logging.getLogger(__name__)
from profiles.feature_sets import feature_matrix, feature_set_pipeline, window_through

EXPLANATION_FEATURES = 3

# --- computing and storing profiles ------------------------------------------------------------------


_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS profile_stage (
    customer_id bigint, traits text, explanation text, value_tier text, lifecycle_stage text,
    feature_vector text, fused text, events_included bigint, last_event_at timestamptz,
    watermark timestamptz, embedding text, model_version_id bigint
) ON COMMIT DELETE ROWS
"""

_MERGE = """
INSERT INTO profiles_profile (
    customer_id, traits, explanation, value_tier, lifecycle_stage, feature_set_id, feature_vector, fused,
    events_included, last_event_at, watermark, snapshot_at, computed_at, embedding, model_version_id
)
SELECT s.customer_id, s.traits::jsonb, s.explanation::jsonb, s.value_tier, s.lifecycle_stage, %(feature_set)s,
       s.feature_vector::vector, s.fused::vector, s.events_included, s.last_event_at, s.watermark,
       %(snapshot_at)s, now(), s.embedding::vector, s.model_version_id
FROM profile_stage s JOIN ingestion_customer c
     ON c.id = s.customer_id AND c.merged_into_id IS NULL AND c.consent_profiling
ORDER BY s.customer_id
ON CONFLICT (customer_id) DO UPDATE SET
    traits = EXCLUDED.traits, explanation = EXCLUDED.explanation, value_tier = EXCLUDED.value_tier,
    lifecycle_stage = EXCLUDED.lifecycle_stage, feature_set_id = EXCLUDED.feature_set_id,
    feature_vector = EXCLUDED.feature_vector, fused = EXCLUDED.fused,
    events_included = EXCLUDED.events_included, last_event_at = EXCLUDED.last_event_at,
    watermark = EXCLUDED.watermark, snapshot_at = EXCLUDED.snapshot_at, computed_at = EXCLUDED.computed_at,
    -- a freshly encoded embedding replaces the stored one; none staged keeps it
    embedding = coalesce(EXCLUDED.embedding, profiles_profile.embedding),
    model_version_id = CASE WHEN EXCLUDED.embedding IS NULL THEN profiles_profile.model_version_id
                            ELSE EXCLUDED.model_version_id END
WHERE profiles_profile.snapshot_at <= EXCLUDED.snapshot_at
"""


def _vector_text(row: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in row) + "]"


def _explanations(z: np.ndarray, matrix: np.ndarray, names: list[str], top_categories: pd.Series) -> list[dict]:
    """Per customer: top categories, and the traits where the customer is furthest from the
    population (largest |z|, among traits defined for them)."""
    scores = np.where(np.isfinite(matrix), np.abs(z), -1.0)
    order = np.argsort(-scores, axis=1)[:, :EXPLANATION_FEATURES]
    out = []
    for row, (picks, top) in enumerate(zip(order, top_categories.to_numpy(), strict=True)):
        distinctive = [
            {
                "feature": names[i],
                "value": round(float(matrix[row, i]), 4),
                "z": round(float(z[row, i]), 2),
                "direction": "above" if z[row, i] > 0 else "below",
            }
            for i in picks if scores[row, i] >= 0
        ]
        out.append({"top_categories": top if isinstance(top, list) else [], "distinctive": distinctive})
    return out


def _existing_embeddings(customer_ids: list[int]) -> dict[int, np.ndarray]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT customer_id, embedding::text FROM profiles_profile WHERE customer_id = ANY(%s) AND embedding IS NOT NULL",
            [customer_ids],
        )
        return {cid: np.array(json.loads(text), dtype="float64") for cid, text in cursor.fetchall()}


def _reference_time(feature_set: FeatureSet, customer_ids: list[int]) -> datetime:
    """The fitted as-of, moved forward to the newest event of these customers: live shops measure
    ages from now, historical data from its own end."""
    as_of = datetime.fromisoformat(feature_set.population["as_of"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(occurred_at) FROM ingestion_event WHERE customer_id = ANY(%s)", [customer_ids])
        (latest,) = cursor.fetchone()
    return max(as_of, latest) if latest else as_of


def profiles_compute(*, customer_ids: list[int], feature_set: FeatureSet, fresh_embeddings: dict | None = None,
                     model_version_id: int | None = None) -> pd.DataFrame:
    """Profiles of these customers under a feature set, as a frame ready to store (no writes).
    `fresh_embeddings` (customer id → vector, encoded by `model_version_id` just now) replace the
    stored embeddings of those customers; the others keep theirs."""
    pipeline = feature_set_pipeline(feature_set.pk, feature_set.pipeline_sha256)
    combinations = tuple(c for c in preprocessing.COMBINATIONS if c.name in feature_set.population["combinations"])
    features = features_compute(customer_ids=customer_ids, window=window_through(_reference_time(feature_set, customer_ids)))
    matrix, names = feature_matrix(features, combinations)
    if names != list(feature_set.feature_names):
        raise RuntimeError(f"feature set v{feature_set.version} expects {feature_set.feature_names}, got {names}")
    for i, combo in enumerate(combinations, start=len(NUMERIC_FEATURES)):
        features[combo.name] = matrix[:, i]
    vectors = preprocessing.vectors(pipeline, matrix, FEATURE_VECTOR_DIMENSIONS)
    z = preprocessing.standardised(pipeline, matrix)
    existing = {**_existing_embeddings(list(features.index)), **(fresh_embeddings or {})}
    embeddings = np.full((len(features), EMBEDDING_DIMENSIONS), np.nan)
    for row, customer_id in enumerate(features.index):
        if customer_id in existing:
            embeddings[row] = existing[customer_id]
    fused = fusion.fuse(vectors, embeddings, feature_set.fusion_weight, EMBEDDING_DIMENSIONS)
    thresholds = feature_set.population["value_thresholds"]
    out = pd.DataFrame(index=features.index)
    out["value_tier"] = labels.value_tiers(features, thresholds)
    out["lifecycle_stage"] = labels.lifecycle_stages(features)
    extra = tuple(c.name for c in combinations)
    out["traits"] = [json.dumps(t) for t in traits_records(features, extra)]
    out["explanation"] = [json.dumps(e) for e in _explanations(z, matrix, names, features["top_categories"])]
    out["feature_vector"] = [_vector_text(v) for v in vectors]
    out["fused"] = [_vector_text(v) for v in fused]
    fresh = fresh_embeddings or {}
    out["embedding"] = [_vector_text(fresh[c]) if c in fresh else None for c in features.index]
    out["model_version_id"] = [model_version_id if c in fresh else None for c in features.index]
    out["events_included"] = features["events"]
    out["last_event_at"] = features["last_event_at"]
    out["watermark"] = features["watermark"]
    return out


def profiles_store(*, customer_ids: list[int], feature_set: FeatureSet, fresh_embeddings: dict | None = None,
                   model_version_id: int | None = None) -> int:
    """Compute and write these customers' profiles; returns how many rows were written (a row
    whose stored profile was read from a later snapshot is left alone)."""
    if not customer_ids:
        return 0
    from privacy.guard import ingest_guard

    with transaction.atomic(), connection.cursor() as cursor:
        # An erasure holds this lock while it deletes: a refresh queued before it must not write
        # the profile of a customer it has removed.
        ingest_guard(cursor)
        cursor.execute("SELECT id FROM ingestion_customer WHERE id = ANY(%s)", [list(map(int, customer_ids))])
        customer_ids = sorted(row[0] for row in cursor.fetchall())
        if not customer_ids:
            return 0
        # Taken before the events are read: every event committed before this instant is included.
        cursor.execute("SELECT clock_timestamp()")
        (snapshot_at,) = cursor.fetchone()
        frame = profiles_compute(customer_ids=customer_ids, feature_set=feature_set,
                                 fresh_embeddings=fresh_embeddings, model_version_id=model_version_id)
        cursor.execute(_STAGE_DDL)
        cursor.execute("TRUNCATE profile_stage")  # a second call in the same transaction starts clean
        columns = ("traits", "explanation", "value_tier", "lifecycle_stage", "feature_vector", "fused",
                   "events_included", "last_event_at", "watermark", "embedding", "model_version_id")
        with cursor.copy(f"COPY profile_stage (customer_id, {', '.join(columns)}) FROM STDIN") as copy:
            for customer_id, row in zip(frame.index, frame.itertuples(index=False), strict=True):
                values = row._asdict()
                copy.write_row([
                    int(customer_id), *(None if pd.isna(values[c]) else values[c] for c in columns)
                ])
        cursor.execute(_MERGE, {"feature_set": feature_set.pk, "snapshot_at": snapshot_at})
        return cursor.rowcount


# --- real-time refresh --------------------------------------------------------------------------------

_PENDING_KEY = "portrait:profile-refresh-pending:{}"
_PENDING_TTL_S = 300  # a lost task only delays the next refresh of its customers by this much


def refresh_pending_mark(*, customer_ids) -> list[int]:
    """Mark these customers' refresh as queued; returns those not marked already (the ones to
    queue). Bursts coalesce: a customer whose refresh is queued but not started is queued once.
    Raises redis.RedisError when Redis is unreachable."""
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        return []
    pipe = broker_redis().pipeline(transaction=False)
    for customer_id in ids:
        pipe.set(_PENDING_KEY.format(customer_id), 1, nx=True, ex=_PENDING_TTL_S)
    return [cid for cid, was_set in zip(ids, pipe.execute(), strict=True) if was_set]


def refresh_pending_clear(*, customer_ids) -> int:
    """Clear the marks (a refresh, before it reads events, so nothing arriving later is missed; an
    erasure, so no key names an erased customer). Returns how many marks existed."""
    ids = [int(c) for c in customer_ids]
    return int(broker_redis().delete(*(_PENDING_KEY.format(c) for c in ids))) if ids else 0


def profile_embeddings_store(*, customer_ids, vectors: np.ndarray, model_version_id: int) -> int:
    """Write learned embeddings (and the version that made them) into these customers' profiles;
    returns the number of profiles written."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embedding_stage (customer_id bigint, embedding text) ON COMMIT DELETE ROWS"
        )
        with cursor.copy("COPY embedding_stage (customer_id, embedding) FROM STDIN") as copy:
            for customer_id, vector in zip(customer_ids, vectors, strict=True):
                copy.write_row([int(customer_id), _vector_text(vector)])
        cursor.execute(
            "UPDATE profiles_profile p SET embedding = s.embedding::vector, model_version_id = %s "
            "FROM embedding_stage s JOIN ingestion_customer c ON c.id = s.customer_id AND c.consent_profiling "
            "WHERE p.customer_id = s.customer_id",
            [model_version_id],
        )
        return cursor.rowcount


def customer_profiles_derived_erase(*, customer_ids: list[int]) -> dict[str, int]:
    """Delete what was derived from these customers' data for profiling (profile with traits and
    vectors, neighbour-value snapshot) and keep the merge journal (restriction of processing)."""
    counts = {}
    with connection.cursor() as cursor:
        for name, table in (("profiles", "profiles_profile"), ("customer_values", "profiles_customervalue")):
            cursor.execute(f"DELETE FROM {table} WHERE customer_id = ANY(%s)", [customer_ids])  # noqa: S608
            counts[name] = cursor.rowcount
    return counts


# Every relation to Customer in this app's models, and the erase service that deletes its rows
# (privacy.erasure checks that each such relation in every app is covered or exempted).
CUSTOMER_RELATIONS_ERASED = {
    "profiles.Profile.customer": "customer_profiles_erase",
    "profiles.CustomerValue.customer": "customer_profiles_erase",
    "profiles.IdentityMerge.merged": "customer_profiles_erase",
    "profiles.IdentityMerge.survivor": "customer_profiles_erase",
}


def customer_profiles_erase(*, customer_ids: list[int]) -> dict[str, int]:
    """Delete these customers' profiles, neighbour-value snapshots and identity-merge journal entries
    (which hold profile snapshots); returns the rows deleted per table."""
    counts = {}
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM profiles_identitymerge WHERE merged_id = ANY(%s) OR survivor_id = ANY(%s)",
                       [customer_ids, customer_ids])
        counts["identity_merges"] = cursor.rowcount
        for name, table in (("profiles", "profiles_profile"), ("customer_values", "profiles_customervalue")):
            cursor.execute(f"DELETE FROM {table} WHERE customer_id = ANY(%s)", [customer_ids])  # noqa: S608
            counts[name] = cursor.rowcount
    return counts
