"""An HNSW graph of profile vectors held in memory (FAISS), beside the pgvector indexes: the same
kind of graph without PostgreSQL's per-element buffer access, about 10× faster per query at the
same recall (README, issue 20). Arrays in, arrays out: no ORM here (profiles.memory_search is the
adapter that keeps it in step with the store and checks every answer against it).

Vectors are compared by cosine similarity: they are stored L2-normalised and searched by inner
product. A vector with no direction (all zeros, or not finite) is not stored: its cosine is
undefined, and pgvector's search drops it too. A removed profile's vector is overwritten with
zeros in the graph's storage (an erased customer's embedding does not stay readable in the
process) and its node is excluded from every search; the node still routes the walk until the
next snapshot rebuilds the graph without it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np


class MemoryIndex:
    def __init__(self, *, index: faiss.IndexHNSWFlat, ids: np.ndarray):
        self._index = index
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)  # graph position → customer id
        # customer id → position: the nodes the graph was made with by a sorted array (a dict of a million
        # ints would cost ~100 MB a process), the ones added since by a dict
        self._base_order = np.argsort(self._ids, kind="stable")
        self._base_sorted = self._ids[self._base_order]
        self._added: dict[int, int] = {}
        self._live = int(np.count_nonzero(self._ids >= 0))
        self._kept = np.full(_bitmap_bytes(len(self._ids)), 255, dtype=np.uint8)  # bit clear: excluded
        self._removed_count = 0
        self._lock = threading.Lock()

    @classmethod
    def build(cls, *, ids: np.ndarray, vectors: np.ndarray, m: int = 16, ef_construction: int = 128) -> MemoryIndex:
        ids, vectors = _directed(ids, vectors)
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        if len(ids):
            index.add(vectors)
        return cls(index=index, ids=ids)

    @property
    def dimensions(self) -> int:
        return self._index.d

    def __len__(self) -> int:
        return self._live

    def __contains__(self, customer_id: int) -> bool:
        return self._position(int(customer_id)) is not None

    @property
    def removed_count(self) -> int:
        """Nodes excluded since the graph was built (removed or replaced profiles)."""
        return self._removed_count

    def vector(self, customer_id: int) -> np.ndarray | None:
        position = self._position(int(customer_id))
        return None if position is None else self._stored()[position].copy()

    def upsert(self, *, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Put these profiles' current vectors in the graph (a new node each; the old one, if any,
        is removed). A vector with no direction only removes."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = _as_rows(vectors, len(ids), self.dimensions)
        _, last = np.unique(ids[::-1], return_index=True)  # an id given twice: its last vector
        keep = np.sort(len(ids) - 1 - last)
        ids, vectors = ids[keep], vectors[keep]
        with self._lock:
            self._remove_locked(ids)
            ids, vectors = _directed(ids, vectors)
            if not len(ids):
                return
            start = len(self._ids)
            self._index.add(vectors)
            self._ids = np.concatenate([self._ids, ids])
            for offset, customer_id in enumerate(ids):
                self._added[int(customer_id)] = start + offset
            self._live += len(ids)
            grown = np.full(_bitmap_bytes(len(self._ids)), 255, dtype=np.uint8)
            grown[: len(self._kept)] = self._kept
            self._kept = grown

    def remove(self, *, ids) -> None:
        with self._lock:
            self._remove_locked(np.asarray(ids, dtype=np.int64))

    def _remove_locked(self, ids: np.ndarray) -> None:
        stored = self._stored()
        for customer_id in ids:
            position = self._position(int(customer_id))
            if position is None:
                continue
            self._added.pop(int(customer_id), None)
            self._live -= 1
            stored[position] = 0.0
            self._ids[position] = -1  # the id goes with the vector: a saved graph keeps neither
            self._kept[position >> 3] &= np.uint8(~(1 << (position & 7)) & 0xFF)
            self._removed_count += 1

    def search(self, vector, *, k: int, ef_search: int, exclude_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The customer ids of the k stored vectors nearest to `vector` by cosine similarity, best
        first, and their similarities; `exclude_id` (the anchor) is never among them. Fewer than k
        when fewer are stored."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0.0 or not self._live:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        query = query / norm
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(int(ef_search), k + 1)
        with self._lock:
            if not self._removed_count:
                # nothing excluded but the anchor: one more neighbour is cheaper than a selector
                similarities, positions = self._index.search(query, k + 1, params=params)
                found = positions[0] >= 0
                ids, similarities = self._ids[positions[0][found]], similarities[0][found]
                similarities = similarities[ids >= 0]
                ids = ids[ids >= 0]
                if exclude_id is not None:
                    keep = ids != int(exclude_id)
                    ids, similarities = ids[keep], similarities[keep]
                return ids[:k], similarities[:k]
            kept = self._kept
            position = None if exclude_id is None else self._position(int(exclude_id))
            if position is not None:
                kept = kept.copy()
                kept[position >> 3] &= np.uint8(~(1 << (position & 7)) & 0xFF)
            params.sel = faiss.IDSelectorBitmap(len(self._ids), faiss.swig_ptr(kept))
            similarities, positions = self._index.search(query, k, params=params)
            found = positions[0] >= 0
            return self._ids[positions[0][found]], similarities[0][found]

    def _position(self, customer_id: int) -> int | None:
        position = self._added.get(customer_id)
        if position is not None:
            return position
        found = int(np.searchsorted(self._base_sorted, customer_id))
        if found < len(self._base_sorted) and self._base_sorted[found] == customer_id:
            position = int(self._base_order[found])
            if self._ids[position] == customer_id:  # not removed since
                return position
        return None

    def _stored(self) -> np.ndarray:
        storage = faiss.downcast_index(self._index.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), self._index.ntotal * self._index.d).reshape(-1, self._index.d)

    def save(self, path: Path, *, meta: dict) -> None:
        """Write the graph, its ids and `meta`: the data files under a new name, then `<path>.json`
        naming them replaced whole, then the files it named before deleted (a reader sees the old
        graph or the new one, never parts of both; a reader still loading the old one when its files
        go retries, `load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path = path.with_name(path.name + ".json")
        with self._lock:
            version = f"{time.time_ns()}-{os.getpid()}"
            data = {".faiss": lambda target: faiss.write_index(self._index, str(target)),
                    ".ids.npy": lambda target: _array_write(target, self._ids),
                    ".live.npy": lambda target: _array_write(target, self._kept)}
            for suffix, write in data.items():
                write(_data_path(path, version, suffix))
            meta = {**meta, "removed": int(self._removed_count), "version": version}
            previous = _meta_read(meta_path)
            partial = meta_path.with_name(meta_path.name + f".{os.getpid()}.partial")
            partial.write_text(json.dumps(meta))
            os.replace(partial, meta_path)
            if previous and previous.get("version") != version:
                for suffix in data:
                    _data_path(path, previous["version"], suffix).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> tuple[MemoryIndex, dict]:
        path = Path(path)
        for attempt in range(3):
            meta = _meta_read(path.with_name(path.name + ".json"))
            if meta is None:
                raise FileNotFoundError(path)
            try:
                index = faiss.read_index(str(_data_path(path, meta["version"], ".faiss")))
                ids = np.load(_data_path(path, meta["version"], ".ids.npy"))
                kept = np.load(_data_path(path, meta["version"], ".live.npy"))
            except (OSError, RuntimeError):  # replaced while being read: read the new one
                if attempt == 2:
                    raise
                continue
            loaded = cls(index=index, ids=ids)
            loaded._kept = kept
            loaded._removed_count = len(ids) - int(np.unpackbits(kept, bitorder="little")[: len(ids)].sum())
            return loaded, meta
        raise AssertionError("unreachable")


def _data_path(path: Path, version: str, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{version}{suffix}")


def _array_write(target: Path, array: np.ndarray) -> None:
    with open(target, "wb") as file:
        np.save(file, array)


def _meta_read(meta_path: Path) -> dict | None:
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None


def _as_rows(vectors, count: int, dimensions: int | None) -> np.ndarray:
    """`vectors` as a (count, dimensions) float32 array; none at all is a (0, dimensions) one."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if count == 0:
        return vectors.reshape(0, dimensions if dimensions is not None else (vectors.shape[-1] if vectors.ndim == 2 else 0))
    return vectors.reshape(count, -1)


def _bitmap_bytes(count: int) -> int:
    return (count + 7) // 8


def _directed(ids, vectors) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, vectors) whose vectors have a direction, the vectors L2-normalised as float32."""
    ids = np.asarray(ids, dtype=np.int64)
    vectors = _as_rows(vectors, len(ids), None)
    norms = np.linalg.norm(vectors, axis=1)
    keep = np.isfinite(norms) & (norms > 0)
    return ids[keep], np.ascontiguousarray(vectors[keep] / norms[keep, None], dtype=np.float32)
