"""Benchmark the vector-store backends built by our factory, on precomputed random vectors.

For each backend (Chroma persistent, milvus-lite) and size, through
``rag_pipeline.stores.open_store``: insert throughput (``backend.write`` in batches of 1000),
query latency p50/p95 (k=5, 200 queries) without and with a metadata filter, time to reopen
the store in a fresh process (open + first query), and recall@5 against exact brute-force
cosine with queries that are perturbed copies of stored vectors. For Chroma, ef_search is also
swept. No embedding model is involved: vectors are random 384-dim unit vectors (fixed seed).

    python scripts/bench_stores.py [--sizes 10000,100000] [--out bench-results/stores.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import EmbeddingModel
from rag_pipeline.stores import Record, VectorBackend, open_store

DIM = 384
SEED = 1234
BATCH = 1000
K = 5
N_QUERIES = 200
NOISE = 0.02
FILTER = {"source": "s7.md"}
EF_SWEEP = (100, 200, 400)
MILVUS_BUDGET_S = 8 * 60


class NoEmbeddings(Embeddings):
    """Stands in for the embedding model: the benchmark passes vectors, so never called."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the benchmark must not embed anything")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("the benchmark must not embed anything")


def model() -> EmbeddingModel:
    return EmbeddingModel(NoEmbeddings(), "bench", "random", DIM)


def settings_for(backend: str, data_dir: Path, **store: Any) -> Settings:
    if backend == "chroma":
        cfg = {"mode": "persistent", **store}
    else:
        cfg = {"backend": "milvus", "uri": str(data_dir / "m.db"), **store}
    return Settings(data_dir=data_dir, store=cfg)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    vectors = unit(rng.standard_normal((n, DIM), dtype=np.float32))
    qrng = np.random.default_rng(SEED + 1)
    sources = qrng.choice(n, size=N_QUERIES, replace=False)
    queries = unit(vectors[sources] + qrng.normal(0, NOISE, (N_QUERIES, DIM)).astype(np.float32))
    return vectors, sources, queries


def records(vectors: np.ndarray, start: int, stop: int) -> list[Record]:
    return [
        Record(
            f"id{i}",
            f"chunk {i}",
            {"source": f"s{i % 100}.md", "chunk_index": i},
            [float(v) for v in vectors[i]],
        )
        for i in range(start, stop)
    ]


def exact_top(vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None) -> list:
    sims = queries @ vectors.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    return [{int(j) for j in row} for row in top]


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3)  # ms


def run_queries(backend: VectorBackend, queries: np.ndarray, where: dict | None) -> tuple:
    times, results = [], []
    qlist = [[float(v) for v in q] for q in queries]
    for q in qlist:
        t = time.perf_counter()
        hits = backend.search(q, K, where=where)
        times.append(time.perf_counter() - t)
        results.append({int(str(h.document.id)[2:]) for h in hits})
    return times, results


def recall(results: list[set], sources: np.ndarray, exact: list[set]) -> dict[str, float]:
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
    t0 = time.perf_counter()
    settings = settings_for(backend, Path(data_dir))
    t1 = time.perf_counter()
    store = open_store(settings, model(), create=False)
    t2 = time.perf_counter()
    hits = store.search(query, K)
    t3 = time.perf_counter()
    store.close()
    return {
        "settings_s": round(t1 - t0, 4),
        "open_store_s": round(t2 - t1, 4),
        "first_query_s": round(t3 - t2, 4),
        "open_plus_first_query_s": round(t3 - t1, 4),
        "hits": len(hits),
    }


def reopen(backend: str, data_dir: Path, query: np.ndarray) -> dict[str, Any]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--reopen-child", backend, str(data_dir)],
        input=json.dumps([float(v) for v in query]),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["subprocess_wall_s_incl_imports"] = round(wall, 3)
    return out


def chroma_ef_sweep(
    store: Any, settings: Settings, queries: np.ndarray, sources: np.ndarray, exact: list
) -> tuple[dict[str, Any], Any]:
    """Change hnsw ef_search of the existing collection and measure recall + latency.

    chromadb 1.5 stores the new ef_search at once but a client that has the index loaded keeps
    searching with the old value (measured: recall unchanged), so the collection is reopened
    (system cache cleared) after each change.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

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
            "p50_ms": pct(times, 50),
            "p95_ms": pct(times, 95),
            **recall(results, sources, exact),
        }
    return out, store


def bench(backend: str, n: int, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / f"{backend}-{n}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    vectors, sources, queries = make_data(n)
    settings = settings_for(backend, data_dir)
    res: dict[str, Any] = {"backend": backend, "n": n, "ef_search": settings.store.ef_search}

    t = time.perf_counter()
    store = open_store(settings, model(), create=True)
    res["create_s"] = round(time.perf_counter() - t, 3)

    write_s = 0.0
    batch_s = []
    for start in range(0, n, BATCH):
        recs = records(vectors, start, min(n, start + BATCH))  # built outside the timer
        t = time.perf_counter()
        store.write(recs)
        dt_ = time.perf_counter() - t
        write_s += dt_
        batch_s.append(dt_)
    res["insert"] = {
        "total_s": round(write_s, 3),
        "chunks_per_s": round(n / write_s, 1),
        "first_batch_s": round(batch_s[0], 3),
        "last_batch_s": round(batch_s[-1], 3),
    }
    # As ingest does after writing: milvus-lite brute-forces unsealed rows until a flush.
    t = time.perf_counter()
    store.flush()
    res["insert"]["flush_s"] = round(time.perf_counter() - t, 3)
    res["count"] = store.count()
    print(f"[{backend} {n}] insert {res['insert']['chunks_per_s']} chunks/s", flush=True)

    # warm-up, then latency + recall on the same 200 perturbed queries
    store.search([float(v) for v in queries[0]], K)
    exact = exact_top(vectors, queries)
    mask = (np.arange(n) % 100) == 7
    exact_f = exact_top(vectors, queries, mask)
    times, results = run_queries(store, queries, None)
    ftimes, fresults = run_queries(store, queries, FILTER)
    res["query"] = {
        "k": K,
        "n_queries": N_QUERIES,
        "p50_ms": pct(times, 50),
        "p95_ms": pct(times, 95),
    }
    res["query_filtered"] = {
        "filter": FILTER,
        "matching_rows": int(mask.sum()),
        "p50_ms": pct(ftimes, 50),
        "p95_ms": pct(ftimes, 95),
        "recall_at_5_vs_exact_filtered": recall(fresults, sources, exact_f)["recall_at_5_vs_exact"],
    }
    res["recall"] = {"noise_sigma": NOISE, **recall(results, sources, exact)}
    print(f"[{backend} {n}] query {res['query']} filtered {res['query_filtered']}", flush=True)
    print(f"[{backend} {n}] recall {res['recall']}", flush=True)

    if backend == "chroma":
        res["ef_search_sweep"], store = chroma_ef_sweep(store, settings, queries, sources, exact)
        print(f"[{backend} {n}] ef sweep {res['ef_search_sweep']}", flush=True)

    store.close()
    if backend == "chroma":
        # the in-process chromadb client holds the folder; clear its cache before the child opens
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    else:
        from rag_pipeline.stores.milvus import release_lite

        release_lite(data_dir / "m.db")
    res["reopen"] = reopen(backend, data_dir, queries[0])
    print(f"[{backend} {n}] reopen {res['reopen']}", flush=True)
    res["disk_mb"] = round(
        sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) / 1e6, 1
    )
    shutil.rmtree(data_dir, ignore_errors=True)
    return res


def version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "chromadb": version("chromadb"),
        "pymilvus": version("pymilvus"),
        "milvus-lite": version("milvus-lite"),
        "faiss-cpu": version("faiss-cpu"),
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


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--reopen-child":
        query = json.loads(sys.stdin.read())
        print(json.dumps(reopen_child(sys.argv[2], sys.argv[3], query)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="chroma,milvus")
    parser.add_argument("--out", default="bench-results/stores.json")
    parser.add_argument("--workdir", default=None, help="where the stores are built (temp dir)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backends = args.backends.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-stores-"))
    result: dict[str, Any] = {
        "machine": machine(),
        "data": {
            "vectors": f"random normal, normalised to unit length, dim {DIM}, seed {SEED}",
            "metadata": '{"source": f"s{i%100}.md", "chunk_index": i}',
            "text": '"chunk {i}"',
            "queries": f"{N_QUERIES} stored vectors + N(0, {NOISE}) noise, renormalised",
            "insert_batch": BATCH,
        },
        "results": [],
    }
    rates: dict[str, float] = {}
    first_rows: dict[str, dict[str, Any]] = {}
    for n in sizes:
        for backend in backends:
            if backend == "milvus" and "milvus" in rates and n > min(sizes):
                # insert at the measured rate + 2 x 200 queries, latency assumed linear in n
                # (milvus-lite searched brute-force-like here: p50 grew ~linearly with n)
                first = first_rows["milvus"]
                per_query = (first["query"]["p50_ms"] + first["query_filtered"]["p50_ms"]) / 2
                estimate = n / rates["milvus"] + 2 * N_QUERIES * per_query / 1000 * n / first["n"]
                if estimate > MILVUS_BUDGET_S:
                    rate = rates["milvus"]
                    why = f"extrapolated insert+queries {estimate:.0f}s > {MILVUS_BUDGET_S}s budget"
                    why += f" at {rate:.0f} chunks/s measured at n={min(sizes)}"
                    result["results"].append(
                        {
                            "backend": backend,
                            "n": n,
                            "skipped": why,
                            "extrapolated_insert_s": round(n / rate, 1),
                            "extrapolated_insert_plus_queries_s": round(estimate, 1),
                        }
                    )
                    print(f"[milvus {n}] skipped: {result['results'][-1]['skipped']}", flush=True)
                    continue
            row = bench(backend, n, workdir)
            rates.setdefault(backend, row["insert"]["chunks_per_s"])
            first_rows.setdefault(backend, row)
            result["results"].append(row)
            out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    summary(result["results"])
    print(f"written {out}")


if __name__ == "__main__":
    main()
