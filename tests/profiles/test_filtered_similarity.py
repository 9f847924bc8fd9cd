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
