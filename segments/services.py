"""Writes of the segments app: create rule, lookalike and cluster segments, and materialise their
membership. Every refresh recomputes the member set from the current profiles and swaps it in one
transaction (members who stay keep their 'member since'), so a refresh can run any number of
times and readers never see half a segment."""

from __future__ import annotations

import uuid

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.citus_mode import shard_writes_sequential
from privacy.guard import ingest_guard
from profiles import selectors as profile_selectors
from segments.models import Segment, SegmentKind, SegmentSnapshot, SegmentStatus
from segments.rules import rule_canonical, rule_parse, rule_to_q

MAX_CLUSTERS = 50
# k-means is fitted on at most this many profiles (MiniBatchKMeans); every profile is then assigned.
CLUSTER_FIT_SAMPLE = 200_000


class SegmentError(ValueError):
    """A segment cannot be created or refreshed as asked; the message says why."""


class SegmentLimitReached(SegmentError):
    """Creating these segments would pass SEGMENTS_MAX or the token's SEGMENTS_MAX_PER_TOKEN."""


def _segments_room_check(*, adding: int, token) -> None:
    """Refuse `adding` more segments past the limits. Under a transaction-scoped advisory lock, so
    concurrent creations cannot pass a limit together."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('portrait:segments-create'))")
    total = Segment.objects.count()
    if total + adding > settings.SEGMENTS_MAX:
        raise SegmentLimitReached(f"the store holds {total} segments and allows {settings.SEGMENTS_MAX} "
                                  "(SEGMENTS_MAX): delete some first")
    if token is not None:
        owned = Segment.objects.filter(created_by_token=token).count()
        if owned + adding > settings.SEGMENTS_MAX_PER_TOKEN:
            raise SegmentLimitReached(f"this token owns {owned} segments and may own "
                                      f"{settings.SEGMENTS_MAX_PER_TOKEN} (SEGMENTS_MAX_PER_TOKEN): delete some first")


@transaction.atomic
def segment_create_rule(*, name: str, rule: str, created_by=None, created_by_token=None,
                        refresh: str = "none") -> Segment:
    """A segment of the profiles a rule selects. `refresh`: "inline" (after commit) or "none" (the
    caller queues it: segments.tasks.segment_refresh_queue)."""
    canonical = rule_canonical(rule)  # raises RuleError with the position of the problem
    _segments_room_check(adding=1, token=created_by_token)
    segment = Segment.objects.create(name=name, kind=SegmentKind.RULE, rule=canonical, created_by=created_by,
                                     created_by_token=created_by_token)
    _after_create(segment, refresh)
    return segment


@transaction.atomic
def segment_create_lookalike(
    *, name: str, seed_keys: list[str], size: int, method: str = "centroid", space: str = "fused", created_by=None,
    created_by_token=None, refresh: str = "none",
) -> Segment:
    """The `size` customers most like a seed audience (the seed itself not included)."""
    if not 1 <= size <= settings.SEGMENT_MAX_LOOKALIKE:
        raise SegmentError(f"size must be 1 to {settings.SEGMENT_MAX_LOOKALIKE}")
    if method not in profile_selectors.LOOKALIKE_METHODS or space not in profile_selectors.SPACES:
        raise SegmentError("unknown method or space")
    seeds = profile_selectors.profiles_by_keys(keys=list(dict.fromkeys(seed_keys)))
    if not seeds:
        raise SegmentError("none of the seed keys names a visible profile")
    if method == "multi_query" and len(seeds) * size > settings.SEGMENT_MAX_SEARCH_ROWS:
        raise SegmentError(f"multi_query runs one search per seed: seeds × size must be at most "
                           f"{settings.SEGMENT_MAX_SEARCH_ROWS} (SEGMENT_MAX_SEARCH_ROWS), not {len(seeds)} × {size}")
    _segments_room_check(adding=1, token=created_by_token)
    segment = Segment.objects.create(
        name=name, kind=SegmentKind.LOOKALIKE, created_by=created_by, created_by_token=created_by_token,
        definition={"seed_customer_ids": sorted(p.pk for p in seeds), "size": size, "method": method, "space": space},
    )
    _after_create(segment, refresh)
    return segment


@transaction.atomic
def segments_create_clusters(*, k: int, space: str = "embedding", name_prefix: str = "Cluster", created_by=None,
                             created_by_token=None, refresh: str = "none", seed: int = 0) -> list[Segment]:
    """k cluster segments from one k-means fit over the profiles' vectors in `space`; they are
    fitted, described and filled by the first refresh."""
    if not 2 <= k <= MAX_CLUSTERS:
        raise SegmentError(f"k must be 2 to {MAX_CLUSTERS}")
    if space not in profile_selectors.SPACES:
        raise SegmentError("unknown space")
    _segments_room_check(adding=k, token=created_by_token)
    clustering = str(uuid.uuid4())
    segments = [
        Segment.objects.create(
            name=f"{name_prefix} {i + 1}", kind=SegmentKind.CLUSTER, created_by=created_by,
            created_by_token=created_by_token,
            definition={"clustering": clustering, "index": i, "k": k, "space": space, "seed": seed},
        )
        for i in range(k)
    ]
    _after_create(segments[0], refresh)
    return segments


def _after_create(segment: Segment, refresh: str) -> None:
    if refresh == "inline":
        transaction.on_commit(lambda: segment_refresh(segment_id=segment.pk))
    elif refresh != "none":
        raise ValueError(f"refresh must be 'inline' or 'none', got {refresh!r}")


def segment_delete(*, segment: Segment) -> None:
    Segment.objects.filter(pk=segment.pk).delete()


def segment_refresh(*, segment_id: int) -> int:
    """Recompute the segment's members (for a cluster segment: its whole clustering) and return
    its size. A failure is recorded on the segment and re-raised."""
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:
        return 0  # deleted since the refresh was queued
    try:
        if segment.kind == SegmentKind.RULE:
            _materialise(segment, _rule_members_sql(segment))
        elif segment.kind == SegmentKind.LOOKALIKE:
            _materialise(segment, _lookalike_members(segment))
        else:
            _refresh_clustering(segment.definition["clustering"])
    except Exception as error:
        Segment.objects.filter(pk=segment.pk).update(
            status=SegmentStatus.FAILED, error=f"{error.__class__.__name__}: {error}"[:2000],
        )
        raise
    return Segment.objects.get(pk=segment.pk).size


def _rule_members_sql(segment: Segment) -> tuple[str, list]:
    query = profile_selectors.profiles_visible().filter(rule_to_q(rule_parse(segment.rule))).values("customer_id")
    sql, params = query.query.sql_with_params()
    return f"SELECT customer_id, NULL::float8 AS score FROM ({sql}) AS members", list(params)


def _lookalike_members(segment: Segment) -> list[tuple[int, float]]:
    definition = segment.definition
    seeds = list(profile_selectors.profiles_visible().filter(customer_id__in=definition["seed_customer_ids"]))
    result = profile_selectors.lookalike_expand(
        seeds=seeds, n=definition["size"], space=definition["space"], method=definition["method"],
    )
    return [(p.pk, float(s)) for p, s in result.results]


def _materialise(segment: Segment, members: tuple[str, list] | list[tuple[int, float]]) -> None:
    """Swap in a member set given as SQL (customer_id, score) or as pairs, then describe it."""
    with transaction.atomic(), connection.cursor() as cursor:
        shard_writes_sequential(cursor)  # the segment row is written after the memberships' multi-shard writes
        # memberships name customers: as a writer of subject data, wait out an erasure in progress and
        # keep the next one waiting until this commits, so an erased customer is never inserted
        # (else the foreign key fails at commit)
        ingest_guard(cursor)
        Segment.objects.select_for_update().filter(pk=segment.pk).first()
        cursor.execute("DROP TABLE IF EXISTS segment_members")  # a caller's transaction may hold the last one
        cursor.execute("CREATE TEMP TABLE segment_members (customer_id bigint PRIMARY KEY, score float8) ON COMMIT DROP")
        if isinstance(members, tuple):
            sql, params = members
            cursor.execute(f"INSERT INTO segment_members {sql}", params)
        else:
            with cursor.copy("COPY segment_members (customer_id, score) FROM STDIN") as copy:
                for customer_id, score in members:
                    copy.write_row((customer_id, score))
        # an uncorrelated subquery: a Citus cluster runs it once and sends its result to the shards; it
        # cannot correlate a sharded table with a coordinator-only temporary table row by row
        cursor.execute(
            "DELETE FROM segments_segmentmembership m WHERE m.segment_id = %s"
            " AND m.customer_id NOT IN (SELECT customer_id FROM segment_members)",
            [segment.pk],
        )
        cursor.execute(
            "INSERT INTO segments_segmentmembership (segment_id, customer_id, score, added_at)"
            " SELECT %s, customer_id, score, now() FROM segment_members"
            " ON CONFLICT (segment_id, customer_id) DO UPDATE SET score = EXCLUDED.score",
            [segment.pk],
        )
        cursor.execute("SELECT count(*) FROM segment_members")
        (size,) = cursor.fetchone()
        description = {**_describe(cursor, segment.pk), **_kind_description(segment)}
        Segment.objects.filter(pk=segment.pk).update(
            size=size, status=SegmentStatus.READY, error="", refreshed_at=timezone.now(), description=description,
        )
        SegmentSnapshot.objects.create(segment_id=segment.pk, size=size)


def _kind_description(segment: Segment) -> dict:
    if segment.kind == SegmentKind.RULE:
        return {"rule": segment.rule}
    if segment.kind == SegmentKind.LOOKALIKE:
        d = segment.definition
        return {"seeds": len(d["seed_customer_ids"]), "method": d["method"], "space": d["space"]}
    return {"cluster": segment.definition["index"] + 1, "of": segment.definition["k"], "space": segment.definition["space"]}


_DESCRIBE_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (p.traits->>'recency_days')::float8),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (p.traits->>'frequency')::float8),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (p.traits->>'net_monetary')::float8)
FROM segments_segmentmembership m JOIN profiles_profile p ON p.customer_id = m.customer_id
WHERE m.segment_id = %s
"""
_TOP_CATEGORIES_SQL = """
SELECT c.key, sum(c.value::float8) AS share
FROM segments_segmentmembership m JOIN profiles_profile p ON p.customer_id = m.customer_id,
     jsonb_each_text(CASE WHEN jsonb_typeof(p.traits->'category_shares') = 'object'
                          THEN p.traits->'category_shares' ELSE '{}'::jsonb END) AS c
WHERE m.segment_id = %s
GROUP BY c.key ORDER BY share DESC, c.key LIMIT 3
"""


def _describe(cursor, segment_id: int) -> dict:
    """What the members have in common: the median RFM and the categories they favour most
    (mean share of interest across members)."""
    cursor.execute("SELECT count(*) FROM segments_segmentmembership WHERE segment_id = %s", [segment_id])
    (size,) = cursor.fetchone()
    cursor.execute(_DESCRIBE_SQL, [segment_id])
    recency, frequency, monetary = cursor.fetchone()
    cursor.execute(_TOP_CATEGORIES_SQL, [segment_id])
    top = [{"name": name, "share": round(share / size, 4)} for name, share in cursor.fetchall()] if size else []

    def rounded(v):
        return None if v is None else round(float(v), 2)

    description = {
        "top_categories": top,
        "median_recency_days": rounded(recency), "median_frequency": rounded(frequency),
        "median_net_monetary": rounded(monetary),
    }
    return {**description, "summary": _summary(description, size)}


def _summary(description: dict, size: int) -> str:
    """One line a business user can read, e.g. "1,204 customers · Books 41%, Music 22% · median 3
    orders, 118.40 spent, last purchase 12 days ago"."""
    parts = [f"{size:,} customers"]
    if description["top_categories"]:
        parts.append(", ".join(f"{c['name']} {c['share']:.0%}" for c in description["top_categories"]))
    if description["median_frequency"] is not None:
        rfm = f"median {description['median_frequency']:g} orders"
        if description["median_net_monetary"] is not None:
            rfm += f", {description['median_net_monetary']:,.2f} spent"
        if description["median_recency_days"] is not None:
            rfm += f", last purchase {description['median_recency_days']:.0f} days ago"
        parts.append(rfm)
    return " · ".join(parts)


def _clustering_vectors(space: str) -> tuple[np.ndarray, np.ndarray]:
    """The visible profiles' vectors in `space`, in the active coordinates (active feature set
    and model version), as (customer ids, unit vectors)."""
    candidates = profile_selectors.profiles_comparable_active(space=space)
    column = profile_selectors.SPACES[space]
    rows = list(candidates.order_by("customer_id").values_list("customer_id", column))
    if not rows:
        return np.zeros(0, dtype="int64"), np.zeros((0, profile_selectors.SPACE_DIMENSIONS[space]))
    ids = np.array([r[0] for r in rows], dtype="int64")
    vectors = np.array([r[1] for r in rows], dtype="float64")
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return ids, vectors


def _refresh_clustering(clustering: str) -> None:
    """Fit the clustering's centroids on first refresh (k-means on unit vectors, i.e. by cosine);
    later refreshes keep the centroids and assign every current profile to its nearest one, so a
    cluster keeps its meaning between refreshes."""
    segments = list(Segment.objects.filter(definition__clustering=clustering).order_by("pk"))
    if not segments:
        return
    definition = segments[0].definition
    ids, vectors = _clustering_vectors(definition["space"])
    k = definition["k"]
    if len(ids) < k:
        raise SegmentError(f"{len(ids)} profiles have a vector in the {definition['space']} space; k-means needs at least {k}")
    by_index = {s.definition["index"]: s for s in segments}
    centroids = [s.definition.get("centroid") for s in segments]
    if any(c is None for c in centroids):
        from sklearn.cluster import MiniBatchKMeans

        rng = np.random.default_rng(definition.get("seed", 0))
        sample = vectors if len(ids) <= CLUSTER_FIT_SAMPLE else vectors[rng.choice(len(ids), CLUSTER_FIT_SAMPLE, replace=False)]
        fitted = MiniBatchKMeans(n_clusters=k, random_state=definition.get("seed", 0), n_init=3, batch_size=4096).fit(sample)
        for index, centroid in enumerate(fitted.cluster_centers_):
            segment = by_index[index]
            segment.definition = {**segment.definition, "centroid": [round(float(v), 6) for v in centroid]}
            Segment.objects.filter(pk=segment.pk).update(definition=segment.definition)
    matrix = np.array([by_index[i].definition["centroid"] for i in range(k)], dtype="float64")
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    similarity = vectors @ matrix.T
    assigned = similarity.argmax(axis=1)
    for index in range(k):
        chosen = assigned == index
        _materialise(by_index[index], list(zip(ids[chosen].tolist(), similarity[chosen, index].round(6).tolist(), strict=True)))


# Every relation to Customer in this app's models, and the erase service that deletes its rows
# (privacy.erasure checks that each such relation in every app is covered or exempted).
CUSTOMER_RELATIONS_ERASED = {"segments.SegmentMembership.customer": "customer_memberships_erase"}


def customer_memberships_erase(*, customer_ids: list[int]) -> int:
    """Delete these customers' segment memberships (erasure, profiling opt-out); returns how many."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM segments_segmentmembership WHERE customer_id = ANY(%s)", [customer_ids])
        return cursor.rowcount
