"""The unfiltered similar search from the in-memory graph (profiles.vector_index, profiles.memory_search):
the same answers as the store's exact order, every answer checked against the store, changes
followed through the trigger-written log (a late commit included), erasure scrubbing memory and
snapshot files, and pgvector answering wherever the graph cannot."""

import numpy as np
import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestion.models import Customer
from profiles import memory_search, selectors
from profiles.models import FUSED_DIMENSIONS, FeatureSet, Profile
from profiles.vector_index import MemoryIndex

K = 10


def _unit(rng, count, dimensions=FUSED_DIMENSIONS, clusters=20):
    centres = rng.normal(size=(clusters, dimensions))
    vectors = centres[rng.integers(clusters, size=count)] + rng.normal(scale=0.5, size=(count, dimensions))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# --- the graph alone -------------------------------------------------------------------------------

def test_the_graph_finds_the_exact_neighbours_and_never_the_anchor():
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 2_000)
    ids = np.arange(1_000, 3_000, dtype=np.int64)
    index = MemoryIndex.build(ids=ids, vectors=vectors)
    hits = 0
    for position in range(0, 2_000, 40):
        found, similarities = index.search(vectors[position], k=K, ef_search=100, exclude_id=ids[position])
        exact = ids[np.argsort(-(vectors @ vectors[position]))]
        exact = exact[exact != ids[position]][:K]
        assert ids[position] not in found and len(found) == K
        assert np.all(np.diff(similarities) <= 1e-6)
        hits += len(set(found.tolist()) & set(exact.tolist()))
    assert hits / (K * 50) >= 0.98


def test_a_vector_without_direction_is_not_stored_and_a_query_without_one_finds_nothing():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [np.nan, 1.0], [0.0, 2.0]], dtype=np.float32)
    index = MemoryIndex.build(ids=np.array([1, 2, 3, 4]), vectors=vectors)
    assert len(index) == 2 and 1 not in index and 3 not in index
    assert index.search([0.0, 0.0], k=2, ef_search=10)[0].tolist() == []
    np.testing.assert_allclose(index.vector(4), [0.0, 1.0])  # stored normalised


def test_a_removed_node_is_scrubbed_from_memory_and_never_found_and_an_upsert_moves_a_node(tmp_path):
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 500, dimensions=16)
    ids = np.arange(500, dtype=np.int64)
    index = MemoryIndex.build(ids=ids, vectors=vectors)
    target = int(index.search(vectors[0], k=2, ef_search=50, exclude_id=0)[0][0])

    index.remove(ids=[target])

    assert index.vector(target) is None and target not in index and len(index) == 499
    assert target not in index.search(vectors[0], k=50, ef_search=100)[0]
    assert not np.any(np.all(np.isclose(index._stored(), vectors[target]), axis=1))  # the bytes are gone
    assert target not in index._ids  # and so is the id
    index.upsert(ids=[7], vectors=[vectors[0]])  # customer 7 now has customer 0's vector
    assert index.search(vectors[0], k=2, ef_search=50, exclude_id=0)[0][0] == 7
    assert len(index) == 499

    index.save(tmp_path / "graph", meta={"xmin": 5})
    loaded, meta = MemoryIndex.load(tmp_path / "graph")
    assert meta["xmin"] == 5 and meta["removed"] == 2 and len(loaded) == 499 and loaded.removed_count == 2
    assert target not in loaded and target not in loaded.search(vectors[0], k=50, ef_search=100)[0]
    assert vectors[target].tobytes() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


# --- against the store -----------------------------------------------------------------------------

def _store(rng, count=600):
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64,
                                            is_active=True)
    customers = Customer.objects.bulk_create([Customer(key=f"mem-{i}", source="test") for i in range(count)])
    vectors = _unit(rng, count)
    Profile.objects.bulk_create([
        Profile(customer=customer, feature_set=feature_set, fused=vector.tolist(), snapshot_at=timezone.now())
        for customer, vector in zip(customers, vectors, strict=True)
    ])
    return feature_set, np.array([c.pk for c in customers], dtype=np.int64), vectors


def _similar(feature_set, customer_id, vector, k=K):
    return selectors.profiles_similar_to(customer_id=int(customer_id), feature_set_id=feature_set.pk, model_version_id=None,
                                         vector=vector.tolist(), k=k, space="fused", ef_search=100)


def _answered_in_memory(queries) -> bool:
    sql = " ".join(query["sql"] for query in queries)
    assert ("= ANY(" in sql) != ("hnsw.ef_search" in sql), sql
    return "= ANY(" in sql


@pytest.fixture
def store(db, settings):
    settings.SIMILARITY_MEMORY_SYNC_SECONDS = 0.0
    return _store(np.random.default_rng(3))


def test_with_a_snapshot_the_search_is_answered_from_memory_in_the_stores_exact_order(store):
    feature_set, ids, vectors = store
    with CaptureQueriesContext(connection) as before:
        first = _similar(feature_set, ids[0], vectors[0])
    assert not _answered_in_memory(before.captured_queries)  # no snapshot yet: pgvector

    report = memory_search.memory_snapshot_build(space="fused")
    assert report["profiles"] == len(ids) and report["feature_set_id"] == feature_set.pk

    hits = 0
    for position in range(0, len(ids), 30):
        with CaptureQueriesContext(connection) as captured:
            found = _similar(feature_set, ids[position], vectors[position])
        assert _answered_in_memory(captured.captured_queries)
        exact = ids[np.argsort(-(vectors @ vectors[position]))]
        exact = exact[exact != ids[position]][:K]
        similarities = [similarity for _, similarity in found]
        np.testing.assert_allclose(similarities, np.sort(vectors[np.isin(ids, [p.pk for p, _ in found])] @ vectors[position])[::-1],
                                   atol=1e-5)
        assert similarities == sorted(similarities, reverse=True)
        hits += len({p.pk for p, _ in found} & set(exact.tolist()))
    assert hits / (K * len(range(0, len(ids), 30))) >= 0.98
    assert {p.pk for p, _ in _similar(feature_set, ids[0], vectors[0])} & {p.pk for p, _ in first}


def test_a_candidate_the_store_no_longer_shows_is_never_returned_even_before_the_graph_hears_of_it(store, settings):
    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    nearest = [p.pk for p, _ in _similar(feature_set, ids[0], vectors[0])]
    settings.SIMILARITY_MEMORY_SYNC_SECONDS = 3600.0  # the graph keeps what it loaded

    Customer.objects.filter(pk=nearest[0]).update(consent_profiling=False)
    Profile.objects.filter(pk=nearest[1]).delete()
    other = FeatureSet.objects.create(version=2, feature_names=["x"], pipeline=b"", pipeline_sha256="1" * 64)
    Profile.objects.filter(pk=nearest[2]).update(feature_set=other)

    with CaptureQueriesContext(connection) as captured:
        found = [p.pk for p, _ in _similar(feature_set, ids[0], vectors[0])]
    assert _answered_in_memory(captured.captured_queries)
    assert len(found) == K and not set(found) & set(nearest[:3])
    assert set(nearest[3:]) <= set(found)


def test_changes_reach_the_graph_through_the_log_and_deleted_vectors_leave_memory(store):
    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    _similar(feature_set, ids[0], vectors[0])  # loads the graph
    loaded = next(iter(memory_search._LOADED.values()))
    far = int(ids[np.argmin(vectors @ vectors[0])])

    Profile.objects.filter(pk=far).update(fused=vectors[0].tolist())  # now the anchor's twin
    Profile.objects.filter(pk=ids[1]).delete()

    found = _similar(feature_set, ids[0], vectors[0])
    assert found[0][0].pk == far and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert ids[1] not in loaded.index and loaded.index.vector(int(ids[1])) is None
    np.testing.assert_allclose(loaded.index.vector(far), vectors[0], atol=1e-6)


def test_an_unchanged_rewrite_of_a_profile_logs_nothing_and_a_vector_change_logs_one_row(store):
    feature_set, ids, vectors = store
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_vectorchange WHERE customer_id = %s", [int(ids[5])])
        before = cursor.fetchone()[0]
        Profile.objects.filter(pk=ids[5]).update(traits={"x": 1}, value_tier="high")
        cursor.execute("SELECT count(*) FROM profiles_vectorchange WHERE customer_id = %s", [int(ids[5])])
        assert cursor.fetchone()[0] == before
        Profile.objects.filter(pk=ids[5]).update(fused=vectors[6].tolist())
        cursor.execute("SELECT count(*) FROM profiles_vectorchange WHERE customer_id = %s", [int(ids[5])])
        assert cursor.fetchone()[0] == before + 1


@pytest.mark.django_db(transaction=True)  # the changes commit, as a worker's would
def test_more_pending_changes_than_the_graph_takes_in_place_hand_the_search_to_pgvector(store, settings):
    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    settings.SIMILARITY_MEMORY_REBUILD_FRACTION = 0.0
    with connection.cursor() as cursor:  # the floor of a rebuild's worth is 1,000 changes
        cursor.execute("INSERT INTO profiles_vectorchange (customer_id) SELECT g FROM generate_series(-1001, -1) g")

    with CaptureQueriesContext(connection) as captured:
        found = _similar(feature_set, ids[0], vectors[0])
    assert not _answered_in_memory(captured.captured_queries) and len(found) == K

    assert memory_search.memory_snapshots_refresh()["fused"]["profiles"] == len(ids)  # a new snapshot...
    assert memory_search.memory_snapshots_refresh() == {}  # ...once
    with CaptureQueriesContext(connection) as captured:
        _similar(feature_set, ids[0], vectors[0])
    assert _answered_in_memory(captured.captured_queries)  # loaded at the next read of the log


def test_without_the_setting_or_for_other_coordinates_pgvector_answers(store, settings):
    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    other = FeatureSet.objects.create(version=2, feature_names=["x"], pipeline=b"", pipeline_sha256="1" * 64)
    with CaptureQueriesContext(connection) as captured:
        selectors.profiles_similar_to(customer_id=int(ids[0]), feature_set_id=other.pk, model_version_id=None,
                                      vector=vectors[0].tolist(), k=K, space="fused", ef_search=100)
    assert not _answered_in_memory(captured.captured_queries)
    settings.SIMILARITY_MEMORY_INDEX = False
    with CaptureQueriesContext(connection) as captured:
        _similar(feature_set, ids[0], vectors[0])
    assert not _answered_in_memory(captured.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_a_change_committed_after_a_later_one_was_read_still_reaches_the_graph(settings):
    """Changes are read by transaction id from the oldest one running at the last read: a
    transaction that began first and commits last is read when it commits."""
    settings.SIMILARITY_MEMORY_SYNC_SECONDS = 0.0
    feature_set, ids, vectors = _store(np.random.default_rng(4), count=200)
    memory_search.memory_snapshot_build(space="fused")
    _similar(feature_set, ids[0], vectors[0])
    loaded = next(iter(memory_search._LOADED.values()))
    params = connection.get_connection_params()
    slow = psycopg.connect(**{k: v for k, v in params.items() if k not in ("cursor_factory", "context")})
    try:
        slow.execute("UPDATE profiles_profile SET fused = %s::vector WHERE customer_id = %s",
                     [str(vectors[0].tolist()), int(ids[100])])  # uncommitted: its transaction is open
        Profile.objects.filter(pk=ids[101]).update(fused=vectors[0].tolist())  # begins later, commits first
        _similar(feature_set, ids[0], vectors[0])
        np.testing.assert_allclose(loaded.index.vector(int(ids[101])), vectors[0], atol=1e-6)
        assert not np.allclose(loaded.index.vector(int(ids[100])), vectors[0], atol=1e-3)
        slow.commit()
        found = {p.pk for p, _ in _similar(feature_set, ids[0], vectors[0], k=2)}
        np.testing.assert_allclose(loaded.index.vector(int(ids[100])), vectors[0], atol=1e-6)
        assert found == {int(ids[100]), int(ids[101])}
    finally:
        slow.close()


def test_erasure_scrubs_the_snapshot_files_and_this_process_graph(store, settings):
    from pathlib import Path

    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    _similar(feature_set, ids[0], vectors[0])
    loaded = next(iter(memory_search._LOADED.values()))

    assert memory_search.memory_snapshots_scrub(customer_ids=[int(ids[3]), int(ids[4])]) == 4  # memory + file, twice

    assert ids[3] not in loaded.index and ids[4] not in loaded.index
    files = b"".join(path.read_bytes() for path in Path(settings.SIMILARITY_INDEX_DIR).iterdir()
                     if path.name.startswith(loaded.path.name + "."))
    assert vectors[3].tobytes() not in files and vectors[4].tobytes() not in files
    assert vectors[5].tobytes() in files  # the others' stay, as stored (unit vectors, float32)
    fresh, _ = MemoryIndex.load(loaded.path)
    assert ids[3] not in fresh and len(fresh) == len(ids) - 2


def test_a_snapshot_takes_in_what_changed_while_it_was_built(store, monkeypatch):
    """An erasure committed between the snapshot's read and its file write is in the file written."""
    feature_set, ids, vectors = store
    build = MemoryIndex.build

    def build_then_erase(**kwargs):
        graph = build(**kwargs)
        with transaction.atomic():
            Profile.objects.filter(pk=ids[9]).delete()
        return graph

    monkeypatch.setattr(memory_search.MemoryIndex, "build", staticmethod(build_then_erase))
    memory_search.memory_snapshot_build(space="fused")
    path = memory_search.snapshot_path(space="fused", feature_set_id=feature_set.pk, model_version_id=None)
    saved, _ = MemoryIndex.load(path)
    assert ids[9] not in saved and len(saved) == len(ids) - 1


@pytest.mark.django_db(transaction=True)  # committed profiles, as the command meets them
def test_the_command_writes_missing_snapshots_once_and_rebuilds_on_force(store):
    from io import StringIO

    from django.core.management import call_command

    feature_set, ids, _ = store
    out = StringIO()
    call_command("similarity_snapshot", stdout=out)
    assert f"fused: {len(ids)} profiles" in out.getvalue()
    path = memory_search.snapshot_path(space="fused", feature_set_id=feature_set.pk, model_version_id=None)
    first = MemoryIndex.load(path)[1]["version"]
    call_command("similarity_snapshot", stdout=(out := StringIO()))
    assert "snapshots current; none written" in out.getvalue() and MemoryIndex.load(path)[1]["version"] == first
    call_command("similarity_snapshot", "--force", stdout=StringIO())
    assert MemoryIndex.load(path)[1]["version"] != first
    assert len(list(path.parent.glob(path.name + ".*.faiss"))) == 1  # the replaced graph's files are gone


@pytest.mark.django_db(transaction=True)  # the import's threads write on connections of their own
def test_after_a_build_the_api_answers_from_memory_what_pgvector_answers(settings, make_api_client):
    """The inline build (pipeline.flows.profiles_build) writes the snapshot; the API's similar search
    then reads the graph, and finds neighbours as similar as pgvector's exact-breadth search does."""
    from ingestion.import_jobs import synthetic_shop_load
    from pipeline.flows import profiles_build

    synthetic_shop_load(customers=120, events=2_400, seed=5)
    profiles_build()
    reader = make_api_client("similarity:read")
    keys = list(Profile.objects.exclude(fused=None).order_by("customer_id").values_list("customer__key", flat=True)[:5])
    for key in keys:
        with CaptureQueriesContext(connection) as captured:
            from_memory = reader.get(f"/api/v1/profiles/{key}/similar?k=5")
        assert from_memory.status_code == 200 and _answered_in_memory(captured.captured_queries)
        settings.SIMILARITY_MEMORY_INDEX = False
        from_pgvector = reader.get(f"/api/v1/profiles/{key}/similar?k=5&ef_search=1000")
        settings.SIMILARITY_MEMORY_INDEX = True
        # the same similarities, best first (a shop's profiles tie often: which of equals comes first may differ)
        assert len(from_memory.json()) == 5 and key not in {n["key"] for n in from_memory.json()}
        np.testing.assert_allclose([n["similarity"] for n in from_memory.json()],
                                   [n["similarity"] for n in from_pgvector.json()], atol=1e-5)


def test_a_refresh_for_new_coordinates_deletes_the_snapshots_of_the_old_ones(store):
    feature_set, ids, _ = store
    memory_search.memory_snapshot_build(space="fused")
    old = memory_search.snapshot_path(space="fused", feature_set_id=feature_set.pk, model_version_id=None)
    assert list(old.parent.glob(old.name + ".*"))
    FeatureSet.objects.filter(pk=feature_set.pk).update(is_active=False)
    newer = FeatureSet.objects.create(version=2, feature_names=["x"], pipeline=b"", pipeline_sha256="1" * 64, is_active=True)

    assert memory_search.memory_snapshots_refresh()["fused"]["feature_set_id"] == newer.pk

    assert not list(old.parent.glob(old.name + ".*"))  # graph, ids and meta of the old coordinates
    current = memory_search.snapshot_path(space="fused", feature_set_id=newer.pk, model_version_id=None)
    assert MemoryIndex.load(current)[1]["profiles"] == 0


def test_a_sync_that_only_deletes_and_an_empty_upsert_leave_the_graph_serving(store):
    feature_set, ids, vectors = store
    memory_search.memory_snapshot_build(space="fused")
    _similar(feature_set, ids[0], vectors[0])
    loaded = next(iter(memory_search._LOADED.values()))
    loaded.index.upsert(ids=[], vectors=np.empty((0, FUSED_DIMENSIONS), dtype=np.float32))

    Profile.objects.filter(pk__in=[int(ids[7]), int(ids[8])]).delete()  # the log holds deletions only

    with CaptureQueriesContext(connection) as captured:
        found = {p.pk for p, _ in _similar(feature_set, ids[0], vectors[0])}
    assert _answered_in_memory(captured.captured_queries) and len(found) == K
    assert ids[7] not in loaded.index and ids[8] not in loaded.index and len(loaded.index) == len(ids) - 2
