"""``bench.py stores``: the vector-store backends built by our factory, on precomputed random
vectors.

For each backend (Chroma persistent, milvus-lite) and size, through
``rag_pipeline.stores.open_store``: insert throughput (``backend.write`` in batches of 1000),
query latency p50/p95 (k=5, 200 queries) without and with a metadata filter, time to reopen
the store in a fresh process (open + first query), and recall@5 against exact brute-force
cosine with queries that are perturbed copies of stored vectors. For Chroma, ef_search is also
swept. No embedding model is involved: vectors are random 384-dim unit vectors (fixed seed).
milvus-lite is skipped at a size whose run, extrapolated from the smallest size, would take
longer than a budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import (
    PACKAGES,
    REPO,
    RESULTS,
    latency_stats,
    load_average,
    machine_info,
    measured,
    portable_path,
    timed,
    write_results,
)

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.stores import Record, VectorBackend

DIM = 384
SEED = 1234
BATCH = 1000
K = 5
N_QUERIES = 200
NOISE = 0.02
FILTER = {"source": "s7.md"}
EF_SWEEP = (100, 200, 400)
MILVUS_BUDGET_S = 8 * 60
STORE_PACKAGES = (*PACKAGES, "numpy", "pymilvus", "milvus-lite", "faiss-cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10000,100000", help="store sizes, comma-separated")
    parser.add_argument("--backends", default="chroma,milvus", help="comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS / "stores.json")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the stores are built (temp folder)"
    )
    # Internal: the fresh process that times reopening a store.
    parser.add_argument(
        "--reopen-child", nargs=2, metavar=("BACKEND", "DIR"), help=argparse.SUPPRESS
    )


def model() -> EmbeddingModel:
    """An embedding model that is never called: the benchmark passes vectors itself."""
    from langchain_core.embeddings import Embeddings

    from rag_pipeline.embeddings import EmbeddingModel

    class NoEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("the benchmark must not embed anything")

        def embed_query(self, text: str) -> list[float]:
            raise AssertionError("the benchmark must not embed anything")

    return EmbeddingModel(NoEmbeddings(), "bench", "random", DIM)


def settings_for(backend: str, data_dir: Path, **store: Any) -> Settings:
    from rag_pipeline.config import Settings

    if backend == "chroma":
        cfg = {"mode": "persistent", **store}
    else:
        cfg = {"backend": "milvus", "uri": str(data_dir / "m.db"), **store}
    return Settings.model_validate({"data_dir": data_dir, "store": cfg})


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored vectors, indices of the queries' sources, queries = noisy copies of those)."""
    rng = np.random.default_rng(SEED)
    vectors = unit(rng.standard_normal((n, DIM), dtype=np.float32))
    qrng = np.random.default_rng(SEED + 1)
    sources = qrng.choice(n, size=N_QUERIES, replace=False)
    queries = unit(vectors[sources] + qrng.normal(0, NOISE, (N_QUERIES, DIM)).astype(np.float32))
    return vectors, sources, queries


def records(vectors: np.ndarray, start: int, stop: int) -> list[Record]:
    from rag_pipeline.stores import Record

    return [
        Record(
            f"id{i}",
            f"chunk {i}",
            {"source": f"s{i % 100}.md", "chunk_index": i},
            [float(v) for v in vectors[i]],
        )
        for i in range(start, stop)
    ]


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None
) -> list[set[int]]:
    """Indices of each query's exact top K by cosine (unit vectors: dot product)."""
    sims = queries @ vectors.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    return [{int(j) for j in row} for row in top]


def run_queries(
    backend: VectorBackend, queries: np.ndarray, where: dict[str, Any] | None
) -> tuple[list[float], list[set[int]]]:
    """(seconds per query, the indices each returned)."""
    times: list[float] = []
    results: list[set[int]] = []
    for q in [[float(v) for v in q] for q in queries]:
        hits, seconds = timed(partial(backend.search, q, K, where=where))
        times.append(seconds)
        results.append({int(str(h.document.id)[2:]) for h in hits})
    return times, results


def recall(results: list[set[int]], sources: np.ndarray, exact: list[set[int]]) -> dict[str, float]:
    return {
        "source_in_top5": round(
            float(np.mean([s in r for s, r in zip(sources, results, strict=True)])), 4
        ),
        "recall_at_5_vs_exact": round(
            float(np.mean([len(r & e) / K for r, e in zip(results, exact, strict=True)])), 4
        ),
    }


def reopen_child(backend: str, data_dir: str, query: list[float]) -> dict[str, float]:
    """In a fresh process: open the existing store (create=False) and run one query."""
    from rag_pipeline.stores import open_store

    settings, settings_s = timed(partial(settings_for, backend, Path(data_dir)))
    store, open_s = timed(partial(open_store, settings, model(), create=False))
    hits, query_s = timed(partial(store.search, query, K))
    store.close()
    return {
        "settings_s": round(settings_s, 4),
        "open_store_s": round(open_s, 4),
        "first_query_s": round(query_s, 4),
        "open_plus_first_query_s": round(open_s + query_s, 4),
        "hits": len(hits),
    }


def reopen(backend: str, data_dir: Path, query: np.ndarray) -> dict[str, Any]:
    """Time ``reopen_child`` in a fresh ``bench.py stores --reopen-child`` process."""
    command = [
        sys.executable,
        str(REPO / "scripts" / "bench.py"),
        "stores",
        "--reopen-child",
        backend,
        str(data_dir),
    ]
    proc, wall = timed(
        partial(
            subprocess.run,
            command,
            input=json.dumps([float(v) for v in query]),
            capture_output=True,
            text=True,
            check=True,
        )
    )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["subprocess_wall_s_incl_imports"] = round(wall, 3)
    return out


def chroma_ef_sweep(
    store: Any,
    settings: Settings,
    queries: np.ndarray,
    sources: np.ndarray,
    exact: list[set[int]],
) -> tuple[dict[str, Any], Any]:
    """Change hnsw ef_search of the existing collection and measure recall + latency.

    chromadb 1.5 stores the new ef_search at once but a client that has the index loaded keeps
    searching with the old value (measured: recall unchanged), so the collection is reopened
    (system cache cleared) after each change.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    from rag_pipeline.stores import open_store

    out: dict[str, Any] = {
        "method": "collection.modify(configuration={'hnsw': {'ef_search': N}}), then reopen"
    }
    for ef in EF_SWEEP:
        try:
            store._collection.modify(configuration={"hnsw": {"ef_search": ef}})
            store.close()
            SharedSystemClient.clear_system_cache()
            store = open_store(settings, model(), create=False)
            applied = (store._collection.configuration_json.get("hnsw") or {}).get("ef_search")
        except Exception as e:  # noqa: BLE001 - record why the sweep could not run
            out[str(ef)] = {"error": f"{type(e).__name__}: {e}"}
            continue
        store.search([float(v) for v in queries[0]], K)  # warm-up: loads the index
        times, results = run_queries(store, queries, None)
        out[str(ef)] = {
            "configured_ef_search_read_back": applied,
            **latency_stats(times),
            **recall(results, sources, exact),
        }
    return out, store


def bench(backend: str, n: int, workdir: Path) -> dict[str, Any]:
    """Every measurement of one backend at one size, in a fresh folder removed afterwards."""
    from rag_pipeline.stores import open_store

    data_dir = workdir / f"{backend}-{n}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    vectors, sources, queries = make_data(n)
    settings = settings_for(backend, data_dir)
    res: dict[str, Any] = {"backend": backend, "n": n, "ef_search": settings.store.ef_search}

    store, create_s = timed(partial(open_store, settings, model(), create=True))
    res["create_s"] = round(create_s, 3)

    batch_s = []
    for start in range(0, n, BATCH):
        recs = records(vectors, start, min(n, start + BATCH))  # built outside the timer
        batch_s.append(timed(partial(store.write, recs))[1])
    write_s = sum(batch_s)
    res["insert"] = {
        "total_s": round(write_s, 3),
        "chunks_per_s": round(n / write_s, 1),
        "first_batch_s": round(batch_s[0], 3),
        "last_batch_s": round(batch_s[-1], 3),
    }
    # As ingest does after writing: milvus-lite brute-forces unsealed rows until a flush.
    res["insert"]["flush_s"] = round(timed(store.flush)[1], 3)
    res["count"] = store.count()
    print(f"[{backend} {n}] insert {res['insert']['chunks_per_s']:.0f} chunks/s", flush=True)

    # warm-up, then latency + recall on the same perturbed queries
    store.search([float(v) for v in queries[0]], K)
    exact = exact_top(vectors, queries)
    mask = (np.arange(n) % 100) == 7
    exact_f = exact_top(vectors, queries, mask)
    times, results = run_queries(store, queries, None)
    ftimes, fresults = run_queries(store, queries, FILTER)
    res["query"] = {"k": K, "n_queries": N_QUERIES, **latency_stats(times)}
    res["query_filtered"] = {
        "filter": FILTER,
        "matching_rows": int(mask.sum()),
        **latency_stats(ftimes),
        "recall_at_5_vs_exact_filtered": recall(fresults, sources, exact_f)["recall_at_5_vs_exact"],
    }
    res["recall"] = {"noise_sigma": NOISE, **recall(results, sources, exact)}
    print(
        f"[{backend} {n}] query p50 {res['query']['p50_ms']:.1f} ms, filtered p50 "
        f"{res['query_filtered']['p50_ms']:.1f} ms; recall {res['recall']}",
        flush=True,
    )

    if backend == "chroma":
        res["ef_search_sweep"], store = chroma_ef_sweep(store, settings, queries, sources, exact)
        print(f"[{backend} {n}] ef_search sweep done", flush=True)

    store.close()
    if backend == "chroma":
        # the in-process chromadb client holds the folder; clear its cache before the child opens
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    else:
        from rag_pipeline.stores.milvus import release_lite

        release_lite(data_dir / "m.db")
    res["reopen"] = reopen(backend, data_dir, queries[0])
    print(f"[{backend} {n}] reopen {res['reopen']['open_plus_first_query_s']:.2f} s", flush=True)
    res["disk_mb"] = round(
        sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) / 1e6, 1
    )
    shutil.rmtree(data_dir, ignore_errors=True)
    return res


def milvus_skip(n: int, smallest: int, first: dict[str, Any]) -> dict[str, Any] | None:
    """A "skipped" row when milvus-lite at ``n``, extrapolated from its run at ``smallest``
    (insert at the measured rate, 2 x N_QUERIES queries with latency linear in n, as measured
    on unflushed rows), would exceed MILVUS_BUDGET_S; None to run it."""
    rate = first["insert"]["chunks_per_s"]
    per_query_ms = (first["query"]["p50_ms"] + first["query_filtered"]["p50_ms"]) / 2
    estimate = n / rate + 2 * N_QUERIES * per_query_ms / 1000 * n / first["n"]
    if estimate <= MILVUS_BUDGET_S:
        return None
    return {
        "backend": "milvus",
        "n": n,
        "skipped": f"extrapolated insert+queries {estimate:.0f}s > {MILVUS_BUDGET_S}s budget "
        f"at {rate:.0f} chunks/s measured at n={smallest}",
        "extrapolated_insert_s": round(n / rate, 1),
        "extrapolated_insert_plus_queries_s": round(estimate, 1),
    }


def summary(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':8} {'n':>7} {'ins/s':>9} {'p50':>7} {'p95':>7} {'fp50':>7} {'fp95':>7} "
        f"{'reopen':>7} {'src@5':>6} {'rec@5':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['backend']:8} {r['n']:>7} skipped: {r['skipped']}")
            continue
        print(
            f"{r['backend']:8} {r['n']:>7} {r['insert']['chunks_per_s']:>9.0f} "
            f"{r['query']['p50_ms']:>7.2f} {r['query']['p95_ms']:>7.2f} "
            f"{r['query_filtered']['p50_ms']:>7.2f} {r['query_filtered']['p95_ms']:>7.2f} "
            f"{r['reopen']['open_plus_first_query_s']:>7.2f} "
            f"{r['recall']['source_in_top5']:>6.3f} {r['recall']['recall_at_5_vs_exact']:>6.3f}"
        )
    print("(latencies in ms, reopen in s = open_store(create=False) + first query, fresh process)")


def run(args: argparse.Namespace) -> int:
    if args.reopen_child:
        backend, data_dir = args.reopen_child
        print(json.dumps(reopen_child(backend, data_dir, json.loads(sys.stdin.read()))))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        workdir = args.workdir or Path(tmp)
        result = run_all(sizes, backends, workdir, args.out)
    summary(result["results"])
    return 0


def run_all(sizes: list[int], backends: list[str], workdir: Path, out: Path) -> dict[str, Any]:
    """Every backend at every size; the results file is rewritten after each row, so an
    interrupted run keeps what it measured."""
    start_load = load_average()
    result: dict[str, Any] = {
        "benchmark": "stores",
        "machine": machine_info(STORE_PACKAGES, load_at_start=start_load),
        "data": {
            "vectors": f"random normal, normalised to unit length, dim {DIM}, seed {SEED}",
            "metadata": '{"source": f"s{i%100}.md", "chunk_index": i}',
            "text": '"chunk {i}"',
            "queries": f"{N_QUERIES} stored vectors + N(0, {NOISE}) noise, renormalised",
            "insert_batch": BATCH,
            "workdir": portable_path(workdir),
        },
        "results": [],
    }
    first_rows: dict[str, dict[str, Any]] = {}
    for n in sizes:
        for backend in backends:
            skip = None
            if backend == "milvus" and "milvus" in first_rows:
                skip = milvus_skip(n, min(sizes), first_rows["milvus"])
            if skip:
                print(f"[milvus {n}] skipped: {skip['skipped']}", flush=True)
                result["results"].append(skip)
                continue
            row, timing = measured(partial(bench, backend, n, workdir))
            row["run"] = timing  # wall, CPU and the load around this row
            first_rows.setdefault(backend, row)
            result["results"].append(row)
            result["machine"] = machine_info(STORE_PACKAGES, load_at_start=start_load)
            write_results(out, result, quiet=True)
    write_results(out, result)
    return result
