"""Reads of the profiles app: one profile, its scores, and nearest-neighbour search (similar
customers, lookalike audiences) over the pgvector HNSW indexes."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from django.db import connections, transaction
from django.db.models import Q, QuerySet, Value
from pgvector.django import CosineDistance

from profiles.models import EMBEDDING_DIMENSIONS, FEATURE_VECTOR_DIMENSIONS, FUSED_DIMENSIONS, Profile, ValueTier

ANONYMOUS_SUFFIX = ":anonymous"

SPACES = {"traits": "feature_vector", "embedding": "embedding", "fused": "fused"}
SPACE_DIMENSIONS = {"traits": FEATURE_VECTOR_DIMENSIONS, "embedding": EMBEDDING_DIMENSIONS, "fused": FUSED_DIMENSIONS}
EF_SEARCH_BOUNDS = (10, 1000)
# How far an iterative index scan may walk to fill k rows past a filter (pgvector's
# hnsw.max_scan_tuples); beyond it a very selective filter returns fewer rows, never a slow scan.
MAX_SCAN_TUPLES = 100_000
# A filter known to keep at most this many rows (NeighbourFilter.max_rows: a segment's materialised size)
# is answered by the exact plan: the filter's own index finds the rows and their distances are sorted.
# bench/similarity.py (README, issue 20): 998 matching rows of 100,000 took 0.90 ms exactly against
# 14.7 ms through the HNSW iterative scan (recall 0.963); 9,923 of 1M took 18.5 ms against 29.0 ms.
EXACT_SEARCH_MAX_ROWS = 10_000
# The recall@10 a caller may ask for, and the ef_search that reached it: the lowest of bench/similarity.py's
# sweep (1M clustered 64-d vectors, the profile indexes' m 16 and ef_construction 64) whose recall@10 was at
# least that. A smaller store reaches a higher recall at the same ef_search, so these are on the safe side.
RECALL_EF_SEARCH = {"0.9": 0, "0.95": 0, "0.99": 0}
VALUE_TIER_ORDER = [ValueTier.NONE, ValueTier.LOW, ValueTier.MEDIUM, ValueTier.HIGH]


def profiles_visible() -> QuerySet[Profile]:
    """Profiles an app may see: not merged into another customer, and consenting to profiling."""
    return Profile.objects.filter(customer__merged_into__isnull=True, customer__consent_profiling=True)


def profile_get(*, key: str) -> Profile | None:
    """The visible profile of the customer with this pseudonymous key, or None (also for a customer
    merged into another: its profile lives on in the survivor's)."""
    return (
        profiles_visible().select_related("customer", "feature_set")
        .defer("feature_set__pipeline", "feature_set__report")
        .filter(customer__key=key)
        .first()
    )


def profiles_by_keys(*, keys: list[str]) -> list[Profile]:
    return list(profiles_visible().select_related("customer").filter(customer__key__in=keys))


@dataclass(frozen=True)
class NeighbourFilter:
    """Which profiles may be returned: a rule over traits (segments.rules), lifecycle stages, a
    minimum value tier (membership of a segment is a `where`: segments.selectors.segment_members_q).
    `max_rows`: at most this many profiles pass, when the caller knows it cheaply (a segment's
    materialised size); at or below EXACT_SEARCH_MAX_ROWS the search is exact (profiles_nearest)."""

    where: Q | None = None
    lifecycle_stages: tuple[str, ...] = ()
    value_tier_min: str | None = None
    exclude_customer_ids: tuple[int, ...] = field(default=())
    max_rows: int | None = None

    @property
    def selective(self) -> bool:
        return self.max_rows is not None and self.max_rows <= EXACT_SEARCH_MAX_ROWS

    def q(self) -> Q:
        q = Q()
        if self.where is not None:
            q &= self.where
        if self.lifecycle_stages:
            q &= Q(lifecycle_stage__in=self.lifecycle_stages)
        if self.value_tier_min:
            q &= Q(value_tier__in=VALUE_TIER_ORDER[VALUE_TIER_ORDER.index(self.value_tier_min):])
        if self.exclude_customer_ids:
            q &= ~Q(customer_id__in=self.exclude_customer_ids)
        return q


def profiles_comparable(*, space: str, feature_set_id: int | None, model_version_id: int | None) -> QuerySet[Profile]:
    """Profiles whose vectors in this space live in the same coordinates: the same feature-set
    version for the traits, the same model version for the embedding, both for the fusion."""
    column = SPACES[space]
    candidates = profiles_visible().filter(**{f"{column}__isnull": False})
    if space in ("traits", "fused"):
        candidates = candidates.filter(feature_set_id=feature_set_id)
    if space in ("embedding", "fused"):
        candidates = candidates.filter(model_version_id=model_version_id) if model_version_id else candidates.filter(
            model_version__isnull=True
        )
    return candidates


def profiles_comparable_active(*, space: str) -> QuerySet[Profile]:
    """Visible profiles with a vector in `space` in the current coordinates: the active feature
    set's and the active model's."""
    from profiles.models import FeatureSet
    from training.services import model_version_active

    feature_set = FeatureSet.objects.filter(is_active=True).only("pk").first()
    model = model_version_active()
    return profiles_comparable(
        space=space, feature_set_id=feature_set.pk if feature_set else None, model_version_id=model.pk if model else None,
    )


def profiles_nearest(
    *, candidates: QuerySet[Profile], column: str, vector, k: int, ef_search: int, exact: bool = False,
) -> list[tuple[Profile, float]]:
    """The k candidates nearest to `vector` by cosine distance through the column's HNSW index.
    Filters are applied during the index walk (pgvector's iterative scan, relaxed order), so a
    filtered query still returns k rows when k exist within MAX_SCAN_TUPLES; rows are re-sorted
    here because relaxed order may swap near ties.

    `exact` (a filter known to keep few rows): the distances of the candidates are sorted without the
    HNSW index, so the filter's own index (a segment's memberships, the labels) finds the rows. The
    planner would not choose it by itself: it prices the HNSW walk as if the filter cost nothing."""
    distance = CosineDistance(column, vector)
    if exact:
        # `+ 0` is no longer the expression the HNSW index orders by
        distance = distance + Value(0.0)
    query = (
        candidates.annotate(distance=distance).order_by("distance")
        .select_related("customer").only("customer_id", "customer__key", "value_tier", "lifecycle_stage")[:k]
    )
    if exact:
        return _similarities(list(query))
    ef_search = min(max(int(ef_search), EF_SEARCH_BOUNDS[0]), EF_SEARCH_BOUNDS[1])
    # the settings are transaction-local: set them on the connection the query reads from (a replica's in a
    # replica-read scope, config.db_router)
    with transaction.atomic(using=query.db), connections[query.db].cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " set_config('hnsw.max_scan_tuples', %s, true)",
            [str(ef_search), str(MAX_SCAN_TUPLES)],
        )
        rows = list(query)
    return _similarities(rows)


def _similarities(rows: list[Profile]) -> list[tuple[Profile, float]]:
    # a zero vector (a customer whose standardised traits are all at the mean) has no direction:
    # its cosine distance is NaN, which is no similarity at all
    rows = sorted((p for p in rows if p.distance is not None and math.isfinite(p.distance)), key=lambda p: p.distance)
    return [(p, 1.0 - p.distance) for p in rows]


def profiles_similar(
    *, profile: Profile, k: int = 10, space: str = "fused", ef_search: int = 100, where: NeighbourFilter | None = None,
) -> list[tuple[Profile, float]]:
    """The k profiles nearest to this one by cosine similarity in one vector space — the
    standardised traits, the learned embedding, or their fusion — through the space's HNSW index.
    Self excluded; only vectors of the same feature-set and model version are compared."""
    column = SPACES[space]
    vector = getattr(profile, column)
    if vector is None:
        return []
    candidates = profiles_comparable(
        space=space, feature_set_id=profile.feature_set_id, model_version_id=profile.model_version_id,
    )
    where = where or NeighbourFilter()
    candidates = candidates.exclude(pk=profile.pk).filter(where.q())
    return profiles_nearest(candidates=candidates, column=column, vector=vector, k=k, ef_search=ef_search,
                            exact=where.selective)


def profiles_near_vector(
    *, vector, space: str, k: int, ef_search: int = 100, where: NeighbourFilter | None = None,
) -> list[tuple[Profile, float]]:
    """The k profiles nearest to a given vector, among the active feature set's and the active
    model's profiles (the coordinates an app's vector is taken to be in)."""
    where = where or NeighbourFilter()
    candidates = profiles_comparable_active(space=space).filter(where.q())
    return profiles_nearest(candidates=candidates, column=SPACES[space], vector=vector, k=k, ef_search=ef_search,
                            exact=where.selective)


LOOKALIKE_METHODS = ("centroid", "multi_query")


@dataclass(frozen=True)
class Lookalike:
    method: str
    space: str
    seeds_used: int
    results: list[tuple[Profile, float]]


def lookalike_expand(
    *, seeds: list[Profile], n: int, space: str = "fused", method: str = "centroid", ef_search: int = 100,
    where: NeighbourFilter | None = None,
) -> Lookalike:
    """Lookalike audience expansion: the n customers most like a seed audience, seeds excluded.

    - centroid: one search around the mean of the seeds' (unit) vectors: fast, and right when the
      seed is one coherent group;
    - multi_query: one search per seed, each candidate scored by its best similarity to any seed:
      keeps the seed's sub-groups when it has several (costs one index search per seed).
    Seeds are compared in the first seed's coordinates (feature set, model version); seeds in
    other coordinates or without a vector in this space are not used."""
    column = SPACES[space]
    usable = [s for s in seeds if getattr(s, column) is not None]
    if usable:
        anchor = usable[0]
        usable = [
            s for s in usable if (s.feature_set_id, s.model_version_id) == (anchor.feature_set_id, anchor.model_version_id)
        ]
    if not usable:
        return Lookalike(method=method, space=space, seeds_used=0, results=[])
    seed_ids = tuple(s.pk for s in usable)
    base = where or NeighbourFilter()
    exclude = NeighbourFilter(
        where=base.where, lifecycle_stages=base.lifecycle_stages, value_tier_min=base.value_tier_min,
        exclude_customer_ids=(*base.exclude_customer_ids, *seed_ids), max_rows=base.max_rows,
    )
    candidates = profiles_comparable(
        space=space, feature_set_id=anchor.feature_set_id, model_version_id=anchor.model_version_id,
    ).filter(exclude.q())
    vectors = np.array([np.asarray(getattr(s, column), dtype="float64") for s in usable])
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if method == "centroid":
        centroid = vectors.mean(axis=0)
        centroid /= max(np.linalg.norm(centroid), 1e-12)
        results = profiles_nearest(candidates=candidates, column=column, vector=centroid, k=n, ef_search=max(ef_search, n),
                                   exact=exclude.selective)
    else:
        best: dict[int, tuple[Profile, float]] = {}
        for vector in vectors:
            for profile, similarity in profiles_nearest(candidates=candidates, column=column, vector=vector, k=n,
                                                        ef_search=max(ef_search, n), exact=exclude.selective):
                if profile.pk not in best or best[profile.pk][1] < similarity:
                    best[profile.pk] = (profile, similarity)
        results = sorted(best.values(), key=lambda pair: -pair[1])[:n]
    return Lookalike(method=method, space=space, seeds_used=len(usable), results=results)


RFM_TRAITS = {"recency": "recency_days", "frequency": "frequency", "monetary": "net_monetary"}


def profile_scores(profile: Profile) -> dict:
    """RFM scores 1–5 (quintiles of the population the feature set was fitted on; a low recency
    scores high) and the population percentile of each, from the feature set's percentile table."""
    table = (profile.feature_set.population or {}).get("percentiles", {})
    scores: dict = {}
    for name, trait in RFM_TRAITS.items():
        value, grid = profile.traits.get(trait), table.get(trait) or []
        if value is None or not grid:
            scores[name] = None
            continue
        percentile = _percentile_of(value, grid)
        if name == "recency":
            percentile = 100.0 - percentile
        scores[name] = {"score": min(5, int(percentile // 20) + 1), "percentile": round(percentile, 1)}
    if all(scores.values()):
        scores["rfm"] = "".join(str(scores[n]["score"]) for n in RFM_TRAITS)
    return scores


def _percentile_of(value: float, grid: list[float]) -> float:
    """Where `value` sits in a table of values at every 5th percentile (0, 5, …, 100)."""
    step = 100.0 / (len(grid) - 1)
    lower, upper = bisect.bisect_left(grid, value), bisect.bisect_right(grid, value)
    return min(100.0, step * (lower + upper) / 2)




def profiled_customer_ids() -> list[int]:
    """Every customer that has a profile (whose embedding a model switch rewrites)."""
    return list(Profile.objects.values_list("customer_id", flat=True))
