"""Reads of the profiles app: one profile, its scores, and nearest-neighbour search (similar
customers, lookalike audiences) over the pgvector HNSW indexes."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from django.db import connections, router
from django.db.models import Q, QuerySet, TextField, Value
from django.db.models.functions import Cast
from django.db.models.base import ModelState
from pgvector import Vector
from pgvector.django import CosineDistance

from config.compiled_query import CompiledQuery, Slot

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
# The recall@10 a caller may ask for (the API's `recall`), and the ef_search it is searched with. Measured by
# bench/similarity.py at 1M clustered 64-d vectors with the profile indexes' m 16 and ef_construction 64
# (2026-12-02, README "Nearest-neighbour search against its limit"): recall@10 0.9053 at ef 100, 0.9193 at 120,
# 0.954 at 200, 0.9657 at 250, 0.988 at 1000 (the most a request may ask). Two builds of the same data differ
# by about 0.01 (an earlier one: 0.892 at 100, 0.942 at 200, 0.954 at 250), so each target takes the lowest
# ef that passed it by 0.01 or more. 0.99 was not reached at 1M within the bound: it gets the bound; a smaller
# store reaches more at every ef (0.9956 at ef 300 with 100,000 vectors). Since the indexes are built with
# ef_construction 128 (issue 20, second round), the same bench measured 0.9532 at ef 150, 0.9664 at 200,
# 0.9745 at 250, 0.9861 at 400: 0.95 is now searched at 200; 0.9 keeps 120 (ef 100-120 not measured on the
# new graph, which recalls more than the old at every ef measured) and 0.99 the bound.
RECALL_EF_SEARCH = {"0.9": 120, "0.95": 200, "0.99": 1000}
VALUE_TIER_ORDER = [ValueTier.NONE, ValueTier.LOW, ValueTier.MEDIUM, ValueTier.HIGH]


def profiles_visible() -> QuerySet[Profile]:
    """Profiles an app may see: not merged into another customer, and consenting to profiling."""
    return Profile.objects.filter(customer__merged_into__isnull=True, customer__consent_profiling=True)


# read on every profile request: compiled once per process (config.compiled_query). Without what the
# profile API never shows: the three vectors (the neighbours are searched from the fused vector's text,
# `fused_text`, which needs no parsing into numbers and back), the customer's other columns (its PII
# ciphertexts among them), the feature set's fitted pipeline and report; each is read if touched.
def _profile_by_key(key: str, *, embedding: bool) -> QuerySet[Profile]:
    unshown = ("feature_vector", "fused") if embedding else ("feature_vector", "embedding", "fused")
    return (
        profiles_visible().select_related("customer", "feature_set")
        .only(*[f.name for f in Profile._meta.concrete_fields if f.name not in unshown],
              "customer__key", "feature_set__version", "feature_set__population")
        .annotate(fused_text=Cast("fused", output_field=TextField()))
        .filter(customer__key=key).order_by("pk")[:1]
    )


_PROFILE_BY_KEY = {
    embedding: CompiledQuery(lambda key, embedding=embedding: _profile_by_key(key, embedding=embedding), key=Slot("\x00key"))
    for embedding in (False, True)
}


def profile_get(*, key: str, embedding: bool = False) -> Profile | None:
    """The visible profile of the customer with this pseudonymous key, or None (also for a customer
    merged into another: its profile lives on in the survivor's). Its fused vector as pgvector's text in
    `fused_text` (None without one); the learned embedding only when asked for (recommendations)."""
    found = _PROFILE_BY_KEY[embedding].instances(key=key)
    return found[0] if found else None


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


def coordinates_active(*, space: str) -> tuple[int | None, int | None]:
    """(feature set id, model version id) of the current coordinates of `space`: the active feature set's
    (traits, fused) and the active model's (embedding, fused); None where the space has no such part
    or nothing is active."""
    from profiles.models import FeatureSet
    from training.services import model_version_active

    feature_set = FeatureSet.objects.filter(is_active=True).only("pk").first()
    model = model_version_active()
    return (feature_set.pk if feature_set and space in ("traits", "fused") else None,
            model.pk if model and space in ("embedding", "fused") else None)


def profiles_comparable_active(*, space: str) -> QuerySet[Profile]:
    """Visible profiles with a vector in `space` in the current coordinates: the active feature
    set's and the active model's."""
    feature_set_id, model_version_id = coordinates_active(space=space)
    return profiles_comparable(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id)


NEIGHBOUR_VALUES = ("customer_id", "customer__key", "value_tier", "lifecycle_stage", "distance")
# the search settings, set for the one transaction of the statement string they lead
# SET LOCAL statements, not set_config(): a Citus coordinator passes the statements on to the shards'
# connections (citus.propagate_set_commands = local, set by citus_distribute), not the function
_SEARCH_SETTINGS = ("SET LOCAL hnsw.ef_search = {ef_search}; SET LOCAL hnsw.iterative_scan = relaxed_order; "
                    "SET LOCAL hnsw.max_scan_tuples = {max_scan_tuples}")


def _nearest_query(*, candidates: QuerySet[Profile], column: str, vector, k: int, exact: bool = False) -> QuerySet:
    distance = CosineDistance(column, vector)
    if exact:
        # `+ 0` is no longer the expression the HNSW index orders by
        distance = distance + Value(0.0)
    return candidates.annotate(distance=distance).order_by("distance").values_list(*NEIGHBOUR_VALUES)[:k]


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
    query = _nearest_query(candidates=candidates, column=column, vector=vector, k=k, exact=exact)
    sql, params = query.query.sql_with_params()
    return _nearest_run(alias=query.db, sql=sql, params=list(params), ef_search=None if exact else ef_search)


def _nearest_run(*, alias: str, sql: str, params: list, ef_search: int | None) -> list[tuple[Profile, float]]:
    """Run a nearest-neighbour statement (NEIGHBOUR_VALUES) on `alias` (a replica's in a replica-read
    scope, config.db_router), led by the search settings unless `ef_search` is None (the exact plan).
    The settings and the query go as one statement string: PostgreSQL runs it as one transaction, so
    the transaction-local settings hold for the query and end with it, in one round trip instead of
    four (BEGIN, settings, query, COMMIT). Inside a caller's transaction they last until its end, as
    SET LOCAL would. Needs Django's client-side binding cursor (the default), which sends the string
    by the simple query protocol."""
    with connections[alias].cursor() as cursor:
        if ef_search is None:
            cursor.execute(sql, params)
        else:
            ef_search = min(max(int(ef_search), EF_SEARCH_BOUNDS[0]), EF_SEARCH_BOUNDS[1])
            settings = _SEARCH_SETTINGS.format(ef_search=int(ef_search), max_scan_tuples=int(MAX_SCAN_TUPLES))
            cursor.execute(f"{settings}; {sql}", params)
            for _ in range(_SEARCH_SETTINGS.count(";") + 1):  # past the settings' results to the query's
                cursor.nextset()
        rows = cursor.fetchall()
    # a zero vector (a customer whose standardised traits are all at the mean) has no direction:
    # its cosine distance is NaN, which is no similarity at all
    rows = sorted((row for row in rows if row[4] is not None and math.isfinite(row[4])), key=lambda row: row[4])
    return [(_neighbour(alias, row), 1.0 - row[4]) for row in rows]




def _neighbour(alias: str, row: tuple) -> Profile:
    """A Profile with what a neighbour shows (the other fields deferred: read on access, as
    QuerySet.only's), its customer's key loaded."""
    from ingestion.models import Customer

    customer_id, key, value_tier, lifecycle_stage, distance = row
    profile = _loaded_as_deferred(Profile, alias, customer_id=customer_id, value_tier=value_tier,
                                  lifecycle_stage=lifecycle_stage, distance=distance)
    Profile.customer.field.set_cached_value(profile, _loaded_as_deferred(Customer, alias, id=customer_id, key=key))
    return profile


def _loaded_as_deferred(model, alias: str, **values):
    """What Model.from_db makes of a row with only these fields, without Model.__init__'s pass over every
    field (a deferred field is one missing from the instance's __dict__, which is what from_db leaves):
    20 of them per similar request cost ~0.6 ms (cProfile of bench/api_load.py's requests)."""
    instance = model.__new__(model)
    instance._state = ModelState()
    instance._state.adding, instance._state.db = False, alias
    instance.__dict__.update(values)
    return instance


# The unfiltered search from one profile, the API's hot path: compiled once per process and shape
# (config.compiled_query) instead of on every request.
_ID_SLOT = -2_000_000_001


def _similar_compiled(space: str, k: int, feature_set: bool, model_version: bool) -> CompiledQuery:
    key = (space, k, feature_set, model_version)
    if key not in _SIMILAR_COMPILED:
        slots = {"vector": Slot("\x00vector"), "exclude_id": Slot(_ID_SLOT)}
        if feature_set and space in ("traits", "fused"):
            slots["feature_set_id"] = Slot(_ID_SLOT - 1)
        if model_version and space in ("embedding", "fused"):
            slots["model_version_id"] = Slot(_ID_SLOT - 2)

        def build(vector, exclude_id, feature_set_id=None, model_version_id=None):
            candidates = profiles_comparable(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id)
            return _nearest_query(candidates=candidates.exclude(pk=exclude_id), column=SPACES[space],
                                  vector=Value(vector), k=k)

        _SIMILAR_COMPILED[key] = CompiledQuery(build, **slots)
    return _SIMILAR_COMPILED[key]


_SIMILAR_COMPILED: dict[tuple, CompiledQuery] = {}


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
    return profiles_similar_to(
        customer_id=profile.pk, feature_set_id=profile.feature_set_id, model_version_id=profile.model_version_id,
        vector=vector, k=k, space=space, ef_search=ef_search, where=where,
    )


def profiles_similar_to(
    *, customer_id: int, feature_set_id: int | None, model_version_id: int | None, vector, k: int, space: str,
    ef_search: int, where: NeighbourFilter | None = None,
) -> list[tuple[Profile, float]]:
    """profiles_similar from what it needs of the profile (search_anchor_get): its id, coordinates
    and vector (a list, an array, or pgvector's text)."""
    where = where or NeighbourFilter()
    if where == NeighbourFilter():
        from profiles.memory_search import profiles_similar_in_memory

        found = profiles_similar_in_memory(customer_id=customer_id, feature_set_id=feature_set_id,
                                           model_version_id=model_version_id, vector=vector, k=k, space=space,
                                           ef_search=ef_search)
        if found is not None:
            return found
        compiled = _similar_compiled(space, k, feature_set_id is not None, model_version_id is not None)
        text = vector if isinstance(vector, str) else Vector._to_db(vector)
        params = compiled.params(vector=text, exclude_id=customer_id, feature_set_id=feature_set_id,
                                 model_version_id=model_version_id)
        return _nearest_run(alias=router.db_for_read(Profile), sql=compiled.sql(), params=params, ef_search=ef_search)
    candidates = profiles_comparable(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id)
    candidates = candidates.exclude(pk=customer_id).filter(where.q())
    return profiles_nearest(candidates=candidates, column=SPACES[space], vector=Value(vector) if isinstance(vector, str) else vector,
                            k=k, ef_search=ef_search, exact=where.selective)


@dataclass(frozen=True)
class SearchAnchor:
    """What a search from one profile needs of it: its id, coordinates and vector (pgvector's text)."""

    customer_id: int
    feature_set_id: int | None
    model_version_id: int | None
    vector: str | None


_ANCHORS = {
    space: CompiledQuery(
        lambda key, column=column: profiles_visible().filter(customer__key=key).values_list(
            "customer_id", "feature_set_id", "model_version_id", column)[:1],
        key=Slot("\x00key"),
    )
    for space, column in SPACES.items()
}


def search_anchor_get(*, key: str, space: str) -> SearchAnchor | None:
    """The visible profile with this pseudonymous key as a search anchor in `space` (as profile_get
    finds it), or None."""
    rows = _ANCHORS[space].rows(key=key)
    return SearchAnchor(*rows[0]) if rows else None


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
