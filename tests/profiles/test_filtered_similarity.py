"""A filter that keeps 1% of profiles still gets k rows from the HNSW index: the product's nearest-
neighbour query runs pgvector's iterative scan (profiles.selectors.profiles_nearest), so the walk goes
on past ef_search candidates until k of them pass the filter. Without it, the walk stops after
ef_search candidates and a 1% filter keeps about ef_search / 100 of them."""

import contextlib

import numpy as np
import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from pgvector.django import CosineDistance

from ingestion.models import Customer
from profiles import selectors
from profiles.models import FUSED_DIMENSIONS, FeatureSet, Profile
from segments.rules import rule_parse, rule_to_q

pytestmark = pytest.mark.django_db

PROFILES = 3000
RARE_EVERY = 100  # every 100th profile matches each filter below: 1%
CLUSTERS = 40
K = 10
EF_SEARCH = 10  # the API's lowest: one index walk alone would yield ~0.1 matching rows


@pytest.fixture
def store():
    """PROFILES profiles of the active feature set with clustered fused vectors; every RARE_EVERY-th is
    lapsed, high-tier and a big spender, the rest active, low-tier and small."""
    rng = np.random.default_rng(20)
    centres = rng.normal(size=(CLUSTERS, FUSED_DIMENSIONS))
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64,
                                            is_active=True)
    customers = Customer.objects.bulk_create([Customer(key=f"rare-{i}", source="test") for i in range(PROFILES)])
    vectors = centres[rng.integers(CLUSTERS, size=PROFILES)] + rng.normal(scale=0.35, size=(PROFILES, FUSED_DIMENSIONS))
    Profile.objects.bulk_create([
        Profile(customer=c, feature_set=feature_set, fused=v.astype(np.float32).tolist(), snapshot_at=timezone.now(),
                lifecycle_stage="lapsed" if i % RARE_EVERY == 0 else "active",
                value_tier="high" if i % RARE_EVERY == 0 else "low",
                traits={"monetary": 5000.0 if i % RARE_EVERY == 0 else 20.0})
        for i, (c, v) in enumerate(zip(customers, vectors, strict=True))
    ])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE profiles_profile, ingestion_customer")
    return centres


@contextlib.contextmanager
def index_forced():
    """On 3,000 rows the planner rightly prefers an exact scan and sort, which would make the test pass
    trivially: forbid both so the query has to walk the HNSW index."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        yield


@pytest.mark.parametrize("where", [
    selectors.NeighbourFilter(lifecycle_stages=("lapsed",)),
    selectors.NeighbourFilter(value_tier_min="high"),
    selectors.NeighbourFilter(where=rule_to_q(rule_parse("monetary > 1000"))),
], ids=["stage", "tier", "rule"])
def test_a_one_percent_filter_still_returns_k_of_the_nearest_matching_profiles(store, where):
    matching = list(Profile.objects.filter(where.q()).values_list("pk", "fused"))
    assert len(matching) == PROFILES // RARE_EVERY
    pks = np.array([pk for pk, _ in matching])
    unit = np.array([np.asarray(v, dtype=np.float64) for _, v in matching])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    rng = np.random.default_rng(7)

    overlaps = []
    for centre in store[:10]:
        query = centre + rng.normal(scale=0.35, size=FUSED_DIMENSIONS)
        with index_forced():
            plan = Profile.objects.filter(Q(fused__isnull=False) & where.q()).order_by(
                CosineDistance("fused", query.tolist()))[:K].explain()
            found = selectors.profiles_near_vector(vector=query.tolist(), space="fused", k=K, ef_search=EF_SEARCH,
                                                   where=where)
        assert "profile_fused_hnsw" in plan, plan
        assert len(found) == K
        assert {p.pk for p, _ in found} <= set(pks.tolist())
        exact = set(pks[np.argsort(-(unit @ (query / np.linalg.norm(query))))[:K]].tolist())
        overlaps.append(len({p.pk for p, _ in found} & exact) / K)
    assert np.mean(overlaps) >= 0.9, overlaps


def _segment_of(name: str, customer_ids: list[int]):
    from segments.models import Segment, SegmentKind, SegmentMembership, SegmentStatus

    segment = Segment.objects.create(name=name, kind=SegmentKind.RULE, status=SegmentStatus.READY, size=len(customer_ids))
    SegmentMembership.objects.bulk_create([SegmentMembership(segment=segment, customer_id=c) for c in customer_ids])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE segments_segmentmembership")
    return segment


def _search_planned(*, segment, query, k: int) -> tuple[list, str]:
    """The product's search filtered to the segment (as the API builds the filter), and the plan of the
    nearest-neighbour query it ran, explained with sequential scans and sorts priced out of reach."""
    from django.test.utils import CaptureQueriesContext

    from segments.selectors import segment_members_q

    where = selectors.NeighbourFilter(where=segment_members_q(segment_id=segment.pk), max_rows=segment.size)
    with CaptureQueriesContext(connection) as captured:
        found = selectors.profiles_near_vector(vector=query.tolist(), space="fused", k=k, ef_search=EF_SEARCH, where=where)
    [sql] = [q["sql"] for q in captured.captured_queries if "<=>" in q["sql"]]
    if sql.startswith("SET LOCAL"):  # the search settings lead the query in one statement string
        sql = sql.split("; ")[-1]
    with index_forced(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return found, plan


def test_a_selective_segment_is_searched_exactly_through_its_memberships(store):
    rng = np.random.default_rng(21)
    profiles = list(Profile.objects.values_list("pk", "fused"))
    chosen = sorted(rng.choice(len(profiles), size=60, replace=False).tolist())
    members = [profiles[i][0] for i in chosen]
    segment = _segment_of("few", members)
    unit = np.array([np.asarray(profiles[i][1], dtype=np.float64) for i in chosen])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)

    for centre in store[:5]:
        query = centre + rng.normal(scale=0.35, size=FUSED_DIMENSIONS)
        found, plan = _search_planned(segment=segment, query=query, k=K)

        exact = np.array(members)[np.argsort(-(unit @ (query / np.linalg.norm(query))))[:K]].tolist()
        assert [p.pk for p, _ in found] == exact
        assert "profile_fused_hnsw" not in plan and "segmentmembership" in plan, plan


def test_a_large_segment_is_still_searched_through_the_hnsw_index(store, monkeypatch):
    monkeypatch.setattr(selectors, "EXACT_SEARCH_MAX_ROWS", 100)
    members = list(Profile.objects.order_by("pk").values_list("pk", flat=True)[::2])
    segment = _segment_of("half", members)

    found, plan = _search_planned(segment=segment, query=store[0], k=K)

    assert len(found) == K and {p.pk for p, _ in found} <= set(members)
    assert "profile_fused_hnsw" in plan, plan
