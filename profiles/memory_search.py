"""The unfiltered similar search answered from an in-memory HNSW graph (profiles.vector_index)
instead of pgvector's, with PostgreSQL still the one store and the judge of every answer.

- A **snapshot** of one space's vectors in the active coordinates (feature set, model version) is
  built by `memory_snapshot_build` (a Celery task after each profile build, `manage.py
  similarity_snapshot`) into SIMILARITY_INDEX_DIR, with the transaction snapshot it read at.
- Each process **loads** the snapshot at its first search and **follows the change log**
  (`profiles_vectorchange`, written by triggers on the profile table in the same transaction as each
  change, migration 0010) at most every SIMILARITY_MEMORY_SYNC_SECONDS: a changed profile's
  current vector replaces its node, a deleted one (erasure, merge) is scrubbed from memory.
  Changes are read by transaction visibility against the snapshot of the last read (CHANGES_SINCE),
  so a change committed late is not skipped; applying one twice changes nothing.
- Every **answer is checked against the store** in one statement: the graph's nearest candidates
  (k plus a margin) are read back from the profile table by primary key under the same visibility
  and comparability rules as the pgvector search, with their distances to the anchor computed
  there. A candidate erased, merged, no longer consenting or moved to other coordinates since the
  graph saw it is not returned, whatever the graph holds.
- Where the graph cannot answer (no snapshot for these coordinates, more pending changes than
  SIMILARITY_MEMORY_REBUILD_FRACTION of the graph, fewer than k candidates left after the check)
  the caller searches pgvector's index as before (`None`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connections, router
from django.db.models import BooleanField, Value
from django.db.models.expressions import RawSQL
from pgvector import Vector

from config.compiled_query import CompiledQuery, Slot

from profiles import selectors
from profiles.models import Profile
from profiles.vector_index import MemoryIndex

logger = logging.getLogger(__name__)

# written by migration 0010; pipeline.citus drops them on a cluster, where no snapshot is then written
VECTOR_CHANGE_TRIGGERS = ("profiles_profile_vectors_inserted", "profiles_profile_vectors_updated",
                          "profiles_profile_vectors_deleted")
# The graph's search breadth for a request's ef_search (calibrated on pgvector's index): FAISS's graph of the
# same m and ef_construction recalls less at the same breadth. bench/similarity.py at 1M × 64 (2026-12-02):
# pgvector 0.9654 at ef 200, FAISS 0.9657 at efSearch 294 (an earlier build: 0.9652 at 200 against 290).
GRAPH_EF_FACTOR = 1.5


def graph_ef_search(ef_search: int) -> int:
    return round(int(ef_search) * GRAPH_EF_FACTOR)


# candidates read back per answer beyond k: room for those the store's check drops
CANDIDATE_MARGIN = 10
# The profiles whose changes a reader holding snapshot %s (pg_current_snapshot() as text, given twice)
# has not seen: logged by a transaction that had not committed when that snapshot was taken and has now
# (one still running is read once it has), or by the reader's own open transaction (read again at each
# call while it lasts: its changes are visible to it before they commit).
CHANGES_SINCE = ("SELECT DISTINCT customer_id FROM profiles_vectorchange WHERE xid >= pg_snapshot_xmin(%s::pg_snapshot) "
                 "AND (NOT pg_visible_in_snapshot(xid, %s::pg_snapshot) OR xid = pg_current_xact_id_if_assigned())")


def snapshot_path(*, space: str, feature_set_id: int | None, model_version_id: int | None, alias: str = "default") -> Path:
    """The snapshot's files of one space and coordinates of this store: named by the database and
    its profile table too, so a directory shared by several databases (a test run's, a demo's) never
    hands one of them another's graph with the same coordinates' ids."""
    return Path(settings.SIMILARITY_INDEX_DIR) / f"{_store_name(alias)}-{space}-fs{feature_set_id or 0}-mv{model_version_id or 0}"


_STORE_NAMES: dict[str, str] = {}


def _store_name(alias: str = "default") -> str:
    """Asked of the database the caller reads (a replica's answer is its primary's: the same cluster)."""
    connection = connections[alias]
    key = alias
    if key not in _STORE_NAMES:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database(), (SELECT oid FROM pg_database WHERE datname = current_database()), "
                           "'profiles_profile'::regclass::oid")
            name, database_oid, table_oid = cursor.fetchone()
        safe = "".join(character if character.isalnum() or character in "_." else "_" for character in name)
        _STORE_NAMES[key] = f"{safe}.{database_oid}.{table_oid}"
    return _STORE_NAMES[key]


def memory_snapshot_build(*, space: str = "fused", m: int = 16, ef_construction: int = 128) -> dict:
    """Write the snapshot of `space` in the active coordinates (every profile with a vector there,
    visible or not: visibility is checked per answer) and prune the change log past its retention.
    Idempotent: a rerun writes the same graph of the store as it is then."""
    if not _change_log_written():
        raise RuntimeError("profile changes are not logged here (a Citus cluster?): no process could follow a snapshot")
    feature_set_id, model_version_id = selectors.coordinates_active(space=space)
    column = selectors.SPACES[space]
    started = time.monotonic()
    with connections["default"].cursor() as cursor:
        # taken before the rows are read: whatever change the read misses is not visible in it, and
        # is read from the log from there on (CHANGES_SINCE)
        cursor.execute("SELECT pg_current_snapshot()::text")
        snapshot = cursor.fetchone()[0]
        where, params = _coordinates_where(space, feature_set_id, model_version_id)
        cursor.execute(f"SELECT customer_id, {column}::text FROM profiles_profile WHERE {where} ORDER BY customer_id", params)
        ids, vectors = _rows_as_arrays(cursor.fetchall(), dimensions=selectors.SPACE_DIMENSIONS[space])
        cursor.execute("DELETE FROM profiles_vectorchange WHERE logged_at < now() - make_interval(secs => %s)",
                       [settings.SIMILARITY_CHANGE_LOG_RETENTION_S])
    read_s = time.monotonic() - started
    index = MemoryIndex.build(ids=ids, vectors=vectors, m=m, ef_construction=ef_construction)
    path = snapshot_path(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id)
    loaded = _Loaded(index=index, space=space, feature_set_id=feature_set_id, model_version_id=model_version_id,
                     path=path, built_at=0.0, synced_snapshot=snapshot)
    with _snapshot_files_lock() as cursor:
        # what changed while the graph was built (an erasure among it) goes into the file written;
        # a later erasure waits for the lock and scrubs this file (memory_snapshots_scrub)
        cursor.execute(f"SELECT ARRAY({CHANGES_SINCE})", [snapshot, snapshot])
        changed = cursor.fetchone()[0]
        if changed:
            _apply(loaded, cursor, changed)
        meta = {"space": space, "feature_set_id": feature_set_id, "model_version_id": model_version_id, "snapshot": snapshot,
                "built_at": time.time(), "profiles": len(index), "m": m, "ef_construction": ef_construction}
        index.save(path, meta=meta)
    return {**meta, "read_s": round(read_s, 3), "build_s": round(time.monotonic() - started - read_s, 3)}


_SNAPSHOT_FILES_LOCK = 0x5349_4D49  # pg_advisory_lock key of the snapshot files (any process, any host)


@contextlib.contextmanager
def _snapshot_files_lock():
    """Held while a snapshot file is written or scrubbed, so an erasure never scrubs a file that a
    build then replaces with one read before the erasure."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_SNAPSHOT_FILES_LOCK])
        try:
            yield cursor
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_SNAPSHOT_FILES_LOCK])


def memory_snapshots_scrub(*, customer_ids: list[int]) -> int:
    """Remove these customers from every snapshot file of this store and every graph this process
    holds (erasure: their vectors overwritten, their ids dropped); other processes drop them at
    their next change-log read. Returns how many graph nodes were removed."""
    removed = 0
    ids = np.asarray(customer_ids, dtype=np.int64)
    for loaded in list(_LOADED.values()):
        with loaded.lock:
            present = [customer_id for customer_id in ids if customer_id in loaded.index]
            loaded.index.remove(ids=present)
            removed += len(present)
    directory = Path(settings.SIMILARITY_INDEX_DIR)
    if not len(ids) or not directory.exists():
        return removed
    with _snapshot_files_lock():
        for meta_path in sorted(directory.glob(f"{_store_name()}-*.json")):
            path = meta_path.with_name(meta_path.name[: -len(".json")])
            index, meta = MemoryIndex.load(path)
            present = [customer_id for customer_id in ids if customer_id in index]
            if present:
                index.remove(ids=present)
                index.save(path, meta=meta)
                removed += len(present)
    return removed


def memory_snapshots_refresh() -> dict:
    """Build the snapshot of each space in SIMILARITY_MEMORY_SPACES that has none for the active
    coordinates, or whose graph more changes wait for than a process takes in place; leave the
    others. What the beat and the end of a profile build run."""
    done = {}
    if not settings.SIMILARITY_MEMORY_INDEX or not _change_log_written():
        return done
    for space in settings.SIMILARITY_MEMORY_SPACES:
        feature_set_id, model_version_id = selectors.coordinates_active(space=space)
        path = snapshot_path(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id)
        meta_path = path.with_name(path.name + ".json")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            with connections["default"].cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM ({CHANGES_SINCE}) changed", [meta["snapshot"], meta["snapshot"]])
                changed = cursor.fetchone()[0]
            if changed <= max(1_000, settings.SIMILARITY_MEMORY_REBUILD_FRACTION * meta["profiles"]) / 2:
                _snapshots_of_other_coordinates_delete(space=space, keep=path)
                continue
        done[space] = memory_snapshot_build(space=space)
        _snapshots_of_other_coordinates_delete(space=space, keep=path)
    return done


def _snapshots_of_other_coordinates_delete(*, space: str, keep: Path) -> None:
    """The snapshots of this store's earlier feature sets and model versions go: no search of the active
    coordinates reads them, and they hold vectors of people (a process that loaded one keeps it)."""
    directory = Path(settings.SIMILARITY_INDEX_DIR)
    with _snapshot_files_lock():
        for meta_path in directory.glob(f"{_store_name()}-{space}-*.json"):
            path = meta_path.with_name(meta_path.name[: -len(".json")])
            if path == keep:
                continue
            for data in path.parent.glob(glob.escape(path.name) + ".*"):
                if data != meta_path:
                    data.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)


def _coordinates_where(space: str, feature_set_id: int | None, model_version_id: int | None) -> tuple[str, list]:
    """The profile rows with a vector in `space` in these coordinates, as selectors.profiles_comparable
    selects them but visible or not (the graph holds them all; visibility is checked per answer)."""
    filters, params = [f"{selectors.SPACES[space]} IS NOT NULL"], []
    for column, value, spaces in (("feature_set_id", feature_set_id, ("traits", "fused")),
                                  ("model_version_id", model_version_id, ("embedding", "fused"))):
        if space in spaces:
            filters.append(f"{column} = %s" if value is not None else f"{column} IS NULL")
            params += [value] if value is not None else []
    return " AND ".join(filters), params


def _change_log_written() -> bool:
    """Whether every profile change is logged (not on a Citus cluster: pipeline.citus drops the triggers)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'profiles_profile'::regclass AND tgname = ANY(%s)",
                       [list(VECTOR_CHANGE_TRIGGERS)])
        return cursor.fetchone()[0] == len(VECTOR_CHANGE_TRIGGERS)


def _rows_as_arrays(rows, *, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.empty((len(rows), dimensions), dtype=np.float32)
    for position, (_, text) in enumerate(rows):
        vectors[position] = _vector_from_text(text)
    return ids, vectors


def _vector_from_text(text: str) -> np.ndarray:
    """pgvector's text form ('[1,2.5,-3]') as float32."""
    return np.array(text[1:-1].split(","), dtype=np.float32)


@dataclass
class _Loaded:
    index: MemoryIndex
    space: str
    feature_set_id: int | None
    model_version_id: int | None
    path: Path
    built_at: float
    synced_snapshot: str  # pg_snapshot of the last read of the log
    synced_at: float = 0.0
    pending: bool = False  # more changes waiting than the graph takes in place: answer from pgvector
    lock: threading.Lock = field(default_factory=threading.Lock)


_LOADED: dict[tuple, _Loaded] = {}
_LOAD_LOCK = threading.Lock()


def memory_graphs_loaded() -> list[MemoryIndex]:
    """The graphs this process holds now."""
    return [loaded.index for loaded in list(_LOADED.values())]


def memory_indexes_forget() -> None:
    """Drop every loaded graph (tests; a process that must reload from disk)."""
    with _LOAD_LOCK:
        _LOADED.clear()
        _STORE_NAMES.clear()


def _loaded(space: str, feature_set_id: int | None, model_version_id: int | None, alias: str) -> _Loaded | None:
    key = (space, feature_set_id, model_version_id)
    loaded = _LOADED.get(key)
    if loaded is not None:
        return loaded
    path = snapshot_path(space=space, feature_set_id=feature_set_id, model_version_id=model_version_id, alias=alias)
    if not path.with_name(path.name + ".json").exists():
        return None
    with _LOAD_LOCK:
        if key not in _LOADED:
            index, meta = MemoryIndex.load(path)
            _LOADED[key] = _Loaded(index=index, space=space, feature_set_id=feature_set_id, model_version_id=model_version_id,
                                   path=path, built_at=meta["built_at"], synced_snapshot=meta["snapshot"])
        return _LOADED[key]


def _sync(loaded: _Loaded, alias: str) -> None:
    """Take in the changes logged since the last read (or reload a newer snapshot), at most every
    SIMILARITY_MEMORY_SYNC_SECONDS."""
    now = time.monotonic()
    if now - loaded.synced_at < settings.SIMILARITY_MEMORY_SYNC_SECONDS:
        return
    with loaded.lock:
        if now - loaded.synced_at < settings.SIMILARITY_MEMORY_SYNC_SECONDS:
            return
        if _snapshot_newer(loaded):
            fresh, meta = MemoryIndex.load(loaded.path)
            loaded.index, loaded.built_at, loaded.synced_snapshot = fresh, meta["built_at"], meta["snapshot"]
        with connections[alias].cursor() as cursor:
            cursor.execute(f"SELECT pg_current_snapshot()::text, ARRAY({CHANGES_SINCE})",
                           [loaded.synced_snapshot, loaded.synced_snapshot])
            snapshot, changed = cursor.fetchone()
            if len(changed) > max(1_000, settings.SIMILARITY_MEMORY_REBUILD_FRACTION * len(loaded.index)):
                # a rebuild's worth of changes: pgvector answers until the next snapshot
                loaded.pending, loaded.synced_at = True, now
                return
            if changed:
                _apply(loaded, cursor, changed)
        loaded.synced_snapshot, loaded.synced_at, loaded.pending = snapshot, now, False


def _snapshot_newer(loaded: _Loaded) -> bool:
    try:
        return json.loads(loaded.path.with_name(loaded.path.name + ".json").read_text())["built_at"] > loaded.built_at
    except (OSError, ValueError, KeyError):
        return False


def _apply(loaded: _Loaded, cursor, changed: list[int]) -> None:
    column = selectors.SPACES[loaded.space]
    where, params = _coordinates_where(loaded.space, loaded.feature_set_id, loaded.model_version_id)
    cursor.execute(f"SELECT customer_id, {column}::text FROM profiles_profile WHERE customer_id = ANY(%s) AND {where}",
                   [list(changed), *params])
    ids, vectors = _rows_as_arrays(cursor.fetchall(), dimensions=loaded.index.dimensions)
    gone = np.setdiff1d(np.asarray(changed, dtype=np.int64), ids)
    loaded.index.remove(ids=gone)
    loaded.index.upsert(ids=ids, vectors=vectors)


_CHECKED: dict[tuple, CompiledQuery] = {}
# the candidates' ids go as an array's text ('{1,2,3}'), not a list: psycopg's client-side binding quotes a
# list element by element in Python (24 µs for 30 ids, against 5 µs for the text; issue 20)
_IDS_SLOT = "{-2000000101}"


def _checked_query(space: str, k: int, feature_set: bool, model_version: bool) -> CompiledQuery:
    """The candidates' rows as the pgvector search returns them, under the same rules
    (selectors.profiles_comparable), ordered by their distance to the anchor computed here."""
    key = (space, k, feature_set, model_version)
    if key not in _CHECKED:
        slots = {"vector": Slot("\x00vector"), "exclude_id": Slot(selectors._ID_SLOT), "ids": Slot(_IDS_SLOT)}
        if feature_set and space in ("traits", "fused"):
            slots["feature_set_id"] = Slot(selectors._ID_SLOT - 1)
        if model_version and space in ("embedding", "fused"):
            slots["model_version_id"] = Slot(selectors._ID_SLOT - 2)

        def build(vector, exclude_id, ids, feature_set_id=None, model_version_id=None):
            candidates = selectors.profiles_comparable(space=space, feature_set_id=feature_set_id,
                                                       model_version_id=model_version_id)
            # `= ANY(array)`: an index scan of the primary key (IN (SELECT unnest(…)) took 0.36 ms a statement
            # against 0.14-0.23 ms, bench/similarity.py's table, 20 ids)
            candidates = candidates.filter(
                RawSQL(f'"{Profile._meta.db_table}"."customer_id" = ANY(%s::bigint[])', (ids,), output_field=BooleanField())
            ).exclude(pk=exclude_id)
            return selectors._nearest_query(candidates=candidates, column=selectors.SPACES[space], vector=Value(vector),
                                            k=k, exact=True)

        _CHECKED[key] = CompiledQuery(build, **slots)
    return _CHECKED[key]


def profiles_similar_in_memory(
    *, customer_id: int, feature_set_id: int | None, model_version_id: int | None, vector, k: int, space: str,
    ef_search: int,
) -> list[tuple[Profile, float]] | None:
    """selectors.profiles_similar_to without a filter, from the in-memory graph; None where the
    graph cannot answer (the caller searches pgvector's index)."""
    if not settings.SIMILARITY_MEMORY_INDEX:
        return None
    alias = router.db_for_read(Profile)
    loaded = _loaded(space, feature_set_id, model_version_id, alias)
    if loaded is None:
        return None
    _sync(loaded, alias)
    if loaded.pending:
        return None
    text = vector if isinstance(vector, str) else None
    query = _vector_from_text(text) if text is not None else np.asarray(vector, dtype=np.float32)
    wanted = k + CANDIDATE_MARGIN
    ids, _ = loaded.index.search(query, k=wanted, ef_search=graph_ef_search(ef_search), exclude_id=customer_id)
    if not len(ids):
        return None
    compiled = _checked_query(space, k, feature_set_id is not None, model_version_id is not None)
    params = compiled.params(vector=text if text is not None else Vector._to_db(vector), exclude_id=customer_id,
                             ids="{" + ",".join(str(int(i)) for i in ids) + "}", feature_set_id=feature_set_id,
                             model_version_id=model_version_id)
    rows = selectors._nearest_run(alias=alias, sql=compiled.sql(), params=params, ef_search=None)
    if len(rows) < k and len(ids) == wanted:
        return None  # the check dropped more than the margin: the store's own index finds k
    return rows
