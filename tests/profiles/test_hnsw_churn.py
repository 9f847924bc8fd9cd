"""The fused vector's HNSW index under churn: for a bounded time, concurrent connections insert,
update and delete profile vectors while another vacuums the table. Afterwards every index on the
profiles table is valid, the product's similarity query still walks the HNSW index, deleted
profiles never come back, and recall@10 of that query (at the API's default ef_search) against an
exact search over the stored vectors is at least 0.95. (No amcheck here: the embedded
PostgreSQL ships without it, and it checks only B-tree indexes anyway.)"""

import contextlib
import random
import threading
import time

import numpy as np
import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from ingestion.models import Customer
from profiles import selectors
from profiles.models import FUSED_DIMENSIONS, FeatureSet, Profile

pytestmark = pytest.mark.django_db(transaction=True)

INITIAL_PROFILES = 3000
CLUSTERS = 40
CHURN_SECONDS = 20
QUERIES = 40
K = 10


def _vector(rng: np.random.Generator, centres: np.ndarray) -> list[float]:
    """A point near one of the cluster centres: the neighbourhoods real profiles form, not uniform noise
    (on which every neighbour is nearly as far as every other and recall means little)."""
    centre = centres[rng.integers(len(centres))]
    return (centre + rng.normal(scale=0.35, size=FUSED_DIMENSIONS)).astype(np.float32).tolist()


def _profile(customer: Customer, feature_set: FeatureSet, vector: list[float]) -> Profile:
    return Profile(customer=customer, feature_set=feature_set, fused=vector, snapshot_at=timezone.now())


@pytest.fixture
def store():
    """INITIAL_PROFILES profiles of the active feature set with clustered fused vectors."""
    rng = np.random.default_rng(18)
    centres = rng.normal(size=(CLUSTERS, FUSED_DIMENSIONS))
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64,
                                            is_active=True)
    customers = Customer.objects.bulk_create(
        [Customer(key=f"churn-{i}", source="test") for i in range(INITIAL_PROFILES)]
    )
    Profile.objects.bulk_create([_profile(c, feature_set, _vector(rng, centres)) for c in customers])
    return feature_set, centres


def _churn(feature_set: FeatureSet, centres: np.ndarray, seconds: float) -> tuple[dict, set[int], list[BaseException]]:
    """Inserts, updates, deletes (each on its own connection, one row per transaction) and VACUUM
    ANALYZE, concurrently until `seconds` have passed. Returns the operation counts, the deleted
    customer ids and any exception a thread raised."""
    deadline = time.monotonic() + seconds
    counts = {"insert": 0, "update": 0, "delete": 0, "vacuum": 0}
    deleted: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()
    ids = list(Profile.objects.values_list("pk", flat=True))

    def worker(name: str, step, pause: float):
        rng = np.random.default_rng(hash(name) % 2**32)
        try:
            while time.monotonic() < deadline:
                if step(rng) is not False:
                    with lock:
                        counts[name] += 1
                time.sleep(pause)
        except BaseException as exc:  # reported by the test, not lost on the thread
            errors.append(exc)
        finally:
            connections.close_all()

    def insert(rng):
        with transaction.atomic():
            customer = Customer.objects.create(key=f"churn-new-{rng.integers(2**62)}", source="test")
            _profile(customer, feature_set, _vector(rng, centres)).save(force_insert=True)
        with lock:
            ids.append(customer.pk)

    def update(rng):
        with lock:
            pk = random.choice(ids)
        # a move to another neighbourhood: the old graph position is now wrong for this row
        Profile.objects.filter(pk=pk).update(fused=_vector(rng, centres), snapshot_at=timezone.now())

    def delete(rng):
        with lock:
            # deletes are faster than inserts (a customer, its key lookup row and a profile): keep the
            # store from draining, which would leave nothing to update or delete
            if len(ids) <= INITIAL_PROFILES // 2:
                return False
            pk = ids.pop(int(rng.integers(len(ids))))
            deleted.add(pk)
        Profile.objects.filter(pk=pk).delete()

    def vacuum(rng):
        with connection.cursor() as cursor:
            # the customers table churns with the inserts: the planner's estimate of the join needs its statistics
            cursor.execute("VACUUM (ANALYZE) profiles_profile, ingestion_customer")

    threads = [
        threading.Thread(target=worker, args=("insert", insert, 0.0)),
        threading.Thread(target=worker, args=("update", update, 0.0)),
        threading.Thread(target=worker, args=("delete", delete, 0.0)),
        threading.Thread(target=worker, args=("vacuum", vacuum, 1.0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    assert not any(thread.is_alive() for thread in threads), "a churn thread did not stop"
    return counts, deleted, errors


def _exact_top_k(matrix: np.ndarray, pks: np.ndarray, query_row: int, k: int) -> set[int]:
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = unit @ unit[query_row]
    similarity[query_row] = -np.inf  # the product's query excludes the profile itself
    return set(pks[np.argsort(-similarity)[:k]].tolist())


@contextlib.contextmanager
def index_forced():
    """On a store this small the planner rightly prefers an exact scan and sort (it did here, at ~2,000
    profiles and the default ef_search), which would make the recall below trivially perfect: forbid
    both for this transaction so the product's query has to walk the HNSW index."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        yield


def _product_query_plan(profile: Profile) -> str:
    """EXPLAIN of the query profiles_similar runs, with the settings it runs under."""
    from pgvector.django import CosineDistance

    candidates = selectors.profiles_comparable(
        space="fused", feature_set_id=profile.feature_set_id, model_version_id=profile.model_version_id,
    ).exclude(pk=profile.pk).filter(selectors.NeighbourFilter().q())
    query = candidates.annotate(distance=CosineDistance("fused", profile.fused)).order_by("distance")[:K]
    with index_forced(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            [str(settings.SIMILARITY_EF_SEARCH)],
        )
        return query.explain()


def test_hnsw_stays_valid_and_accurate_under_concurrent_churn_and_vacuum(store):
    feature_set, centres = store

    started = time.monotonic()
    counts, deleted, errors = _churn(feature_set, centres, CHURN_SECONDS)

    assert not errors, f"churn raised: {errors!r}"
    # the churn really ran concurrently, all four kinds (bounded by time, so counts vary with load)
    assert counts["insert"] >= 20 and counts["update"] >= 20 and counts["delete"] >= 20, counts
    assert counts["vacuum"] >= 2, counts
    assert time.monotonic() - started < CHURN_SECONDS + 120

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid, i.indisready, i.indislive FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'profiles_profile'::regclass"
        )
        indexes = {name: (valid, ready, live) for name, valid, ready, live in cursor.fetchall()}
    assert "profile_fused_hnsw" in indexes
    assert all(state == (True, True, True) for state in indexes.values()), indexes

    rows = list(Profile.objects.order_by("pk").values_list("pk", "fused"))
    pks = np.array([pk for pk, _ in rows])
    matrix = np.array([np.asarray(vector, dtype=np.float64) for _, vector in rows])
    assert len(rows) == INITIAL_PROFILES + counts["insert"] - counts["delete"]
    assert not deleted & set(pks.tolist())

    rng = random.Random(18)
    sample = rng.sample(range(len(rows)), QUERIES)
    plan = _product_query_plan(Profile.objects.get(pk=int(pks[sample[0]])))
    assert "profile_fused_hnsw" in plan, plan

    recalls = []
    for row in sample:
        profile = Profile.objects.get(pk=int(pks[row]))
        with index_forced():
            found = selectors.profiles_similar(profile=profile, k=K, space="fused", ef_search=settings.SIMILARITY_EF_SEARCH)
        found_pks = {p.pk for p, _ in found}
        assert len(found) == K
        assert not found_pks & deleted, "a deleted profile came back from the index"
        recalls.append(len(found_pks & _exact_top_k(matrix, pks, row, K)) / K)
    recall = float(np.mean(recalls))
    print(f"churn {counts} over {CHURN_SECONDS} s; recall@{K} {recall:.3f} over {QUERIES} queries")
    assert recall >= 0.95, f"recall@{K} {recall:.3f} after churn {counts}"
