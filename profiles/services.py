"""Writes of the profiles app: fit a feature set, build profiles in batch (chunk by chunk; the
Celery fan-out is profiles.tasks), store profiles and learned embeddings, and the pending marks that
coalesce real-time refreshes (the refresh flow itself is pipeline.flows.customers_refresh)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Func, IntegerField, Max, Value
from django.utils import timezone

from ingestion.models import EventType
from profiles import fusion, labels, preprocessing
from profiles.features import (
    NUMERIC_FEATURES,
    FeatureWindow,
    features_compute,
    numeric_matrix,
    store_as_of,
    traits_records,
)
from profiles.models import (
    EMBEDDING_DIMENSIONS,
    FEATURE_VECTOR_DIMENSIONS,
    BuildStatus,
    FeatureSet,
    ProfileBuild,
)

logger = logging.getLogger(__name__)

TARGET_DAYS = 30
EXPLANATION_FEATURES = 3
_PERCENTILES = list(range(0, 101, 5))


class NothingToProfile(Exception):
    """The store has no events yet."""


# --- feature sets ----------------------------------------------------------------------------------


def _customer_sample(size: int, seed: int) -> list[int]:
    """A deterministic pseudo-random sample of customers that have events."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.id FROM ingestion_customer c
            WHERE c.merged_into_id IS NULL AND EXISTS (SELECT 1 FROM ingestion_event e WHERE e.customer_id = c.id)
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
            FROM ingestion_event e JOIN ingestion_customer c ON c.id = e.customer_id
            WHERE e.event_type IN (%s, %s) AND e.value IS NOT NULL
            GROUP BY e.customer_id
            """,
            [int(EventType.PURCHASE), int(EventType.PURCHASE), int(EventType.REFUND)],
        )
        return cursor.rowcount


def _window_through(moment: datetime) -> FeatureWindow:
    return FeatureWindow(as_of=moment, until=moment + timedelta(microseconds=1))


@dataclass
class _Fitted:
    names: list[str]
    combinations: tuple[preprocessing.Combination, ...]
    pipeline: object


def _feature_matrix(features: pd.DataFrame, combinations) -> tuple[np.ndarray, list[str]]:
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

    current = features_compute(customer_ids=sample, window=_window_through(as_of))
    matrix, names = _feature_matrix(current, kept)
    pipeline = preprocessing.pipeline_fit(matrix, names, components=FEATURE_VECTOR_DIMENSIONS, seed=seed)
    blob, checksum = preprocessing.pipeline_dump(pipeline)
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
    matrix, _ = _feature_matrix(subset, kept)
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


@lru_cache(maxsize=8)
def _pipeline_of(feature_set_id: int, checksum: str):
    blob = FeatureSet.objects.values_list("pipeline", flat=True).get(pk=feature_set_id)
    return preprocessing.pipeline_load(blob, checksum)


def feature_set_active() -> FeatureSet | None:
    return FeatureSet.objects.filter(is_active=True).defer("pipeline").first()


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
FROM profile_stage s JOIN ingestion_customer c ON c.id = s.customer_id AND c.merged_into_id IS NULL
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
    pipeline = _pipeline_of(feature_set.pk, feature_set.pipeline_sha256)
    combinations = tuple(c for c in preprocessing.COMBINATIONS if c.name in feature_set.population["combinations"])
    features = features_compute(customer_ids=customer_ids, window=_window_through(_reference_time(feature_set, customer_ids)))
    matrix, names = _feature_matrix(features, combinations)
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


# --- batch builds -------------------------------------------------------------------------------------

# A batch build rewrites every profile; keeping these HNSW indexes up to date row by row costs
# more than the rest of the build (~0.6 ms a row here), so big builds drop them and build them
# again at the end (pgvector's advice for bulk loads). Meanwhile similarity search on these two
# spaces still answers, by exact scan. The learned-embedding index belongs to training.
_REBUILT_INDEXES = ("profile_feature_vector_hnsw", "profile_fused_hnsw")


def _vector_indexes():
    from profiles.models import Profile

    return [index for index in Profile._meta.indexes if index.name in _REBUILT_INDEXES]


def _vector_indexes_drop() -> None:
    with connection.cursor() as cursor:
        for index in _vector_indexes():
            cursor.execute(f'DROP INDEX IF EXISTS "{index.name}"')


def profile_vector_indexes_ensure() -> list[str]:
    """Create any of the profile vector indexes that is missing; returns the names created."""
    from profiles.models import Profile

    created = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'profiles_profile'")
        present = {row[0] for row in cursor.fetchall()}
    for index in _vector_indexes():
        if index.name not in present:
            with transaction.atomic(), connection.schema_editor(atomic=False) as editor:
                editor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                editor.add_index(Profile, index)
            created.append(index.name)
    return created



def _customer_id_ranges(chunk_customers: int) -> tuple[list[tuple[int, int]], int]:
    """Inclusive id ranges of `chunk_customers` live customers each, and the number of customers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM ingestion_customer WHERE merged_into_id IS NULL ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    ranges = [(ids[i], ids[min(i + chunk_customers, len(ids)) - 1]) for i in range(0, len(ids), chunk_customers)]
    return ranges, len(ids)


def profile_build_start(*, created_by=None, chunk_customers: int | None = None, sample_size: int | None = None) -> ProfileBuild:
    """Fit a new feature set and plan the chunks. Run them with `profile_build_chunk` (inline) or
    `profiles.tasks.profile_build_queue` (Celery)."""
    build = ProfileBuild.objects.create(created_by=created_by)
    try:
        feature_set = feature_set_fit(sample_size=sample_size)
    except Exception as exc:
        ProfileBuild.objects.filter(pk=build.pk).update(status=BuildStatus.FAILED, error=str(exc)[:10_000], finished_at=timezone.now())
        raise
    ranges, customers = _customer_id_ranges(chunk_customers or settings.PROFILE_BUILD_CHUNK_CUSTOMERS)
    if customers >= settings.PROFILE_BUILD_REINDEX_MIN_CUSTOMERS:
        _vector_indexes_drop()
    build.feature_set = feature_set
    build.chunks_total = len(ranges)
    build.save(update_fields=["feature_set", "chunks_total"])
    build.ranges = ranges
    return build


BUILD_STALE_AFTER = timedelta(hours=6)


def profile_build_running() -> bool:
    """A build is running unless it finished or has been "running" so long that its worker died."""
    return ProfileBuild.objects.filter(status=BuildStatus.RUNNING, started_at__gte=timezone.now() - BUILD_STALE_AFTER).exists()


def profile_build_chunk(*, build_id: int, index: int, first_id: int, last_id: int) -> int:
    """Profile the live customers with first_id ≤ id ≤ last_id. Idempotent: a repeated chunk
    rewrites the same profiles and is counted once."""
    build = ProfileBuild.objects.select_related("feature_set").get(pk=build_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM ingestion_customer WHERE id BETWEEN %s AND %s AND merged_into_id IS NULL", [first_id, last_id]
        )
        ids = [row[0] for row in cursor.fetchall()]
    written = profiles_store(customer_ids=ids, feature_set=build.feature_set)
    ProfileBuild.objects.filter(pk=build_id).exclude(done_chunks__contains=[index]).update(
        chunks_done=F("chunks_done") + 1,
        profiles_written=F("profiles_written") + written,
        done_chunks=Func(F("done_chunks"), Value(index, output_field=IntegerField()), function="array_append"),
    )
    return written


def profile_build_finish(*, build_id: int) -> ProfileBuild:
    profile_vector_indexes_ensure()
    # Fresh statistics before the first reads: with stale ones (every row rewritten), the planner
    # chose a scan-and-sort over the HNSW index for filtered similarity searches until autovacuum
    # came by (measured: p50 188 ms against 35 ms right after a build, bench/api_load.py).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE profiles_profile")
    ProfileBuild.objects.filter(pk=build_id, status=BuildStatus.RUNNING).update(
        status=BuildStatus.SUCCEEDED, finished_at=timezone.now()
    )
    return ProfileBuild.objects.get(pk=build_id)


def profile_build_fail(*, build_id: int, error: str) -> None:
    profile_vector_indexes_ensure()
    ProfileBuild.objects.filter(pk=build_id).update(status=BuildStatus.FAILED, error=error[:10_000], finished_at=timezone.now())


def profiles_build(*, created_by=None, chunk_customers: int | None = None, sample_size: int | None = None,
                   on_chunk: Callable[[ProfileBuild], None] | None = None) -> ProfileBuild:
    """The whole batch build in this process, chunk after chunk."""
    build = profile_build_start(created_by=created_by, chunk_customers=chunk_customers, sample_size=sample_size)
    try:
        for index, (first_id, last_id) in enumerate(build.ranges):
            profile_build_chunk(build_id=build.pk, index=index, first_id=first_id, last_id=last_id)
            if on_chunk:
                build.refresh_from_db()
                on_chunk(build)
    except Exception as exc:
        profile_build_fail(build_id=build.pk, error=f"{exc.__class__.__name__}: {exc}")
        raise
    return profile_build_finish(build_id=build.pk)


# --- real-time refresh --------------------------------------------------------------------------------

_PENDING_KEY = "portrait:profile-refresh-pending:{}"
_PENDING_TTL_S = 300  # a lost task only delays the next refresh of its customers by this much


def _redis():
    import redis
    from celery import current_app

    return redis.Redis.from_url(current_app.conf.broker_url, socket_connect_timeout=2, socket_timeout=2)


def refresh_pending_mark(*, customer_ids) -> list[int]:
    """Mark these customers' refresh as queued; returns those not marked already (the ones to
    queue). Bursts coalesce: a customer whose refresh is queued but not started is queued once.
    Raises redis.RedisError when Redis is unreachable."""
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        return []
    pipe = _redis().pipeline(transaction=False)
    for customer_id in ids:
        pipe.set(_PENDING_KEY.format(customer_id), 1, nx=True, ex=_PENDING_TTL_S)
    return [cid for cid, was_set in zip(ids, pipe.execute(), strict=True) if was_set]


def refresh_pending_clear(*, customer_ids) -> int:
    """Clear the marks (a refresh, before it reads events, so nothing arriving later is missed; an
    erasure, so no key names an erased customer). Returns how many marks existed."""
    ids = [int(c) for c in customer_ids]
    return int(_redis().delete(*(_PENDING_KEY.format(c) for c in ids))) if ids else 0


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
            "FROM embedding_stage s WHERE p.customer_id = s.customer_id",
            [model_version_id],
        )
        return cursor.rowcount
