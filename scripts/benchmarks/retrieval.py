"""``bench.py retrieval``: the default hybrid retriever against a dense-only one at a large
index.

- the same synthetic corpus as ``ingest`` (``--chunks``, 10,000 by default), written under the
  data folder (``--data-dir``; default ``rag-bench-retrieval-<chunks>`` in the system temp
  folder, kept after the run) and ingested there with the default settings, progress printed;
  ingest is incremental, so a rerun with the same folder reuses the corpus and embeds nothing
  (the results say how long ingest took and how many chunks were embedded, taken from the
  embedding cache or skipped as unchanged);
- real questions from the shared evaluation sets (``queries.jsonl``), each set shuffled with a
  fixed seed and the four taken in turn, so the same ``--questions`` come back on every run;
- in one process: the hybrid retriever of the default settings and a dense-only one
  (``retriever.search_type = "similarity"``), both with ``score_threshold`` None so each
  always returns k chunks; a few other questions warm both up; then for every question
  ``retriever.invoke`` of each, and the reference (``embed_query`` + a direct Chroma query for
  k and for the hybrid's dense candidates), in an order reversed on every other question so
  neither retriever always goes first -> p50/p95 of each, and hybrid p50 / dense p50
  (target <= 1.5 at 10k chunks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    DATASETS,
    DEFAULT_EVAL_DIR,
    RESULTS,
    default_settings,
    latency_stats,
    load_average,
    machine_info,
    measured,
    met,
    percentile,
    portable_path,
    reference_query,
    target,
    timed,
    timing_embeddings,
    write_results,
)
from .ingest import build_corpus

if TYPE_CHECKING:
    from rag_pipeline.config import Settings, SplitSettings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.stores import VectorBackend

# Ingest settings of --build-embeddings fake: the local model's size, so it can ask.
FAKE_BUILD = {"provider": "fake", "dimensions": 384}
# Question sample, warm-up, and the file that marks a folder as this benchmark's own.
QUESTION_SEED = 20250601
WARM_UP_QUESTIONS = 5
CORPUS_MARKER = "bench-corpus.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=10000, help="approximate corpus size")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="corpus and index, kept for the next run (default: rag-bench-retrieval-<chunks> "
        "in the system temp folder)",
    )
    parser.add_argument("--questions", type=int, default=300, help="timed questions")
    parser.add_argument("--per-file", type=int, default=4, help="passages per Markdown file")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR, help="eval data")
    parser.add_argument(
        "--build-embeddings",
        choices=("local", "fake"),
        default="local",
        help="fake: ingest with deterministic hashed vectors (384 dims, fast, so 100k chunks "
        "build in minutes); questions are still embedded by the local model",
    )
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=0,
        help="also time this many cold `rag ask` processes (wall, peak RSS) and as many cold "
        "keyword-only searches (fake query vectors: only our own code is timed)",
    )
    parser.add_argument(
        "--serve-workers",
        type=int,
        default=0,
        help="also start `rag serve` with 1 and with this many workers over a `chroma run` "
        "server of the ingested folder: time to ready and memory per worker",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: bench-results/retrieval-<chunks, e.g. 10k>.json)",
    )


def default_retrieval_dir(chunks: int, suffix: str = "") -> Path:
    """Where ``retrieval`` keeps its corpus and index between runs unless told otherwise."""
    return Path(tempfile.gettempdir()) / f"rag-bench-retrieval-{chunks}{suffix}"


def chunk_label(chunks: int) -> str:
    """10000 -> "10k", 300 -> "300" (for the default results file name)."""
    return f"{chunks // 1000}k" if chunks >= 1000 and chunks % 1000 == 0 else str(chunks)


def sample_questions(eval_dir: Path, count: int) -> list[tuple[str, str]]:
    """``count`` (dataset, question) pairs: each set's questions shuffled with QUESTION_SEED,
    then one from each set in turn (a set that runs out drops out), so the four sets are
    equally represented and a smaller count is a prefix of a larger one."""
    rng = random.Random(QUESTION_SEED)
    pools: list[tuple[str, list[str]]] = []
    for dataset in DATASETS:
        with (eval_dir / dataset / "queries.jsonl").open(encoding="utf-8") as lines:
            questions = [json.loads(line)["question"] for line in lines if line.strip()]
        rng.shuffle(questions)
        pools.append((dataset, questions))
    longest = max(len(questions) for _, questions in pools)
    picked = [
        (dataset, questions[i])
        for i in range(longest)
        for dataset, questions in pools
        if i < len(questions)
    ]
    if count > len(picked):
        raise SystemExit(f"{count} questions wanted, the evaluation sets have {len(picked)}")
    return picked[:count]


def prepare_corpus(
    root: Path, eval_dir: Path, chunks: int, per_file: int, split: SplitSettings
) -> tuple[Path, dict[str, Any], bool]:
    """The synthetic corpus in ``root/corpus``: reused when ``root/CORPUS_MARKER`` records a
    finished build with the same parameters, (re)built otherwise; (folder, plan, reused).

    A non-empty ``root`` without the marker is refused: the benchmark ingests into it and must
    not add its chunks to a real knowledge base."""
    corpus, marker = root / "corpus", root / CORPUS_MARKER
    params = {
        "eval_dir": str(eval_dir.resolve()),
        "chunks_requested": chunks,
        "passages_per_file": per_file,
        "split": split.model_dump(),
    }
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("params") == params and saved.get("plan") and corpus.is_dir():
            return corpus, saved["plan"], True
    elif root.exists() and any(root.iterdir()):
        raise SystemExit(
            f"{root} is not empty and has no {CORPUS_MARKER}, so it is not a folder of this "
            "benchmark: pass another --data-dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"params": params, "plan": None}) + "\n", encoding="utf-8")
    shutil.rmtree(corpus, ignore_errors=True)  # a different size, or an interrupted build
    plan = build_corpus(eval_dir, corpus, chunks, per_file, split)
    saved = {"params": params, "plan": plan}
    marker.write_text(json.dumps(saved, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return corpus, plan, False


class IngestProgress:
    """``ingest``'s progress callback: a line every 5% of the files, at least once a minute."""

    def __init__(self, timer: Any) -> None:
        self.timer = timer  # the timing_embeddings the model is wrapped in
        self.started = self.last_line = time.perf_counter()
        self.last_step = -1

    def __call__(self, source: str, done: int, total: int) -> None:
        now = time.perf_counter()
        step = done * 20 // max(total, 1)
        if step == self.last_step and now - self.last_line < 60 and done < total:
            return
        self.last_step, self.last_line = step, now
        elapsed = now - self.started
        left = elapsed / done * (total - done) if done else 0.0
        print(
            f"  ingest: {done}/{total} files, {sum(self.timer.batches)} chunks embedded, "
            f"{elapsed:.0f} s, ~{left:.0f} s left",
            flush=True,
        )


def ingest_corpus(corpus: Path, settings: Settings, model: EmbeddingModel) -> dict[str, Any]:
    """One incremental ``ingest()`` of the corpus, with progress; the model is wrapped in a
    timer, so the chunks it really embedded (embedding-cache misses) are counted."""
    from rag_pipeline.indexing import ingest

    timer = timing_embeddings(model.embeddings)
    wrapped = dataclasses.replace(model, embeddings=timer)
    progress = IngestProgress(timer)
    report, timing = measured(lambda: ingest([corpus], settings, model=wrapped, progress=progress))
    embedded = sum(timer.batches)
    return {
        **timing,
        "chunks_embedded": embedded,
        "chunks_from_embedding_cache": report.chunks_added + report.chunks_updated - embedded,
        "chunks_skipped_unchanged": report.chunks_unchanged,
        "chunks_deleted": report.chunks_deleted,
        "embedding_s": round(timer.seconds, 3),
        "report": report.to_dict(),
    }


def retrieval_sample_names() -> list[str]:
    """Keys of the per-question timings of the retrieval benchmark."""
    retrievers = [name + suffix for name in ("hybrid", "dense") for suffix in ("", "_cpu")]
    references = [
        f"{name}_{part}"
        for name in ("reference_k", "reference_candidates")
        for part in ("embed", "chroma")
    ]
    return retrievers + references


def retrieval_round(
    question: str,
    reverse: bool,
    retrievers: dict[str, Any],
    references: dict[str, Callable[[str], tuple[float, float]]],
    samples: dict[str, list[float]],
) -> dict[str, list[str | None]]:
    """Time each retriever (wall and process CPU) and each reference on one question, in
    the given order or reversed; the ids each retriever returned."""
    names = [*retrievers, *references]
    returned: dict[str, list[str | None]] = {}
    for name in reversed(names) if reverse else names:
        if name in retrievers:
            cpu = time.process_time()
            docs, seconds = timed(partial(retrievers[name].invoke, question))
            samples[f"{name}_cpu"].append(time.process_time() - cpu)
            samples[name].append(seconds)
            returned[name] = [doc.id for doc in docs]
        else:
            embed_s, chroma_s = references[name](question)
            samples[f"{name}_embed"].append(embed_s)
            samples[f"{name}_chroma"].append(chroma_s)
    return returned


def bench_retrievers(
    settings: Settings,
    model: EmbeddingModel,
    questions: list[tuple[str, str]],
    warm: list[str],
    query_model: EmbeddingModel | None = None,
) -> dict[str, Any]:
    """Hybrid (default settings) vs dense-only, both without the refusal threshold, in one
    process on the ingested store; raw samples and the store they ran on. ``query_model``
    embeds the questions when the store was built by another model of the same size."""
    from rag_pipeline.retrieval import (
        DenseRetriever,
        HybridRetriever,
        build_retriever,
        load_keyword_index,
    )
    from rag_pipeline.stores import open_store

    store: VectorBackend
    store, open_s = timed(lambda: open_store(settings, model, create=False))
    hybrid_settings = default_settings(settings.data_dir, retriever={"score_threshold": None})
    dense_settings = default_settings(
        settings.data_dir, retriever={"search_type": "similarity", "score_threshold": None}
    )
    keyword, keyword_load = measured(lambda: load_keyword_index(hybrid_settings, store))
    asker = (query_model or model).embeddings
    hybrid = build_retriever(hybrid_settings, store, asker, keyword)
    dense = build_retriever(dense_settings, store, asker)
    if not isinstance(hybrid, HybridRetriever) or not isinstance(dense, DenseRetriever):
        raise SystemExit(
            f"retrievers are {type(hybrid).__name__} and {type(dense).__name__}, not "
            "HybridRetriever and DenseRetriever (RAG_* settings in the environment?)"
        )
    retrievers = {"hybrid": hybrid, "dense": dense}
    references = {
        "reference_k": reference_query(store, asker, dense.k),
        "reference_candidates": reference_query(store, asker, hybrid.dense.k),
    }

    scratch: dict[str, list[float]] = {key: [] for key in retrieval_sample_names()}
    warm_up_s = [
        timed(partial(retrieval_round, q, i % 2 == 1, retrievers, references, scratch))[1]
        for i, q in enumerate(warm)
    ]
    samples: dict[str, list[float]] = {key: [] for key in retrieval_sample_names()}
    print(f"timing {len(questions)} questions ...", flush=True)
    returned, loop = measured(
        lambda: [
            retrieval_round(q, i % 2 == 1, retrievers, references, samples)
            for i, (_, q) in enumerate(questions)
        ]
    )
    return {
        "store_open_s": round(open_s, 3),
        "chunks_in_store": store.count(),
        "keyword_index_chunks": keyword.size,
        "keyword_index_load": keyword_load,
        "k": {"hybrid": hybrid.k, "dense": dense.k, "hybrid_candidates_per_side": hybrid.dense.k},
        "warm_up_s": [round(s, 3) for s in warm_up_s],
        "loop": loop,
        "samples": samples,
        "returned": returned,
    }


def returned_stats(returned: list[dict[str, list[str | None]]]) -> dict[str, Any]:
    """Chunks per answer of each retriever, and how many of dense's top k hybrid also has."""
    stats: dict[str, Any] = {}
    for name in ("hybrid", "dense"):
        counts = [len(r[name]) for r in returned]
        stats[f"{name}_chunks"] = {
            "min": min(counts),
            "max": max(counts),
            "mean": round(statistics.fmean(counts), 2),
        }
    overlap = [len(set(r["hybrid"]) & set(r["dense"])) for r in returned]
    stats["shared_top_k_chunks_mean"] = round(statistics.fmean(overlap), 2)
    return stats


def by_dataset(questions: list[tuple[str, str]], samples: dict[str, list[float]]) -> dict[str, Any]:
    """p50 of each retriever per evaluation set (English questions tokenize differently)."""
    rows: dict[str, Any] = {}
    for dataset in DATASETS:
        at = [i for i, (d, _) in enumerate(questions) if d == dataset]
        if not at:
            continue
        p50 = {
            name: round(percentile([samples[name][i] * 1000 for i in at], 50), 3)
            for name in ("hybrid", "dense")
        }
        rows[dataset] = {
            "questions": len(at),
            "hybrid_p50_ms": p50["hybrid"],
            "dense_p50_ms": p50["dense"],
            "hybrid_over_dense": round(p50["hybrid"] / p50["dense"], 3),
        }
    return rows


def retrieval_results(
    args: argparse.Namespace,
    data_dir: Path,
    plan: dict[str, Any],
    reused: bool,
    ingested: dict[str, Any],
    questions: list[tuple[str, str]],
    bench: dict[str, Any],
    start_load: list[float],
) -> dict[str, Any]:
    samples = bench["samples"]
    stats = {name: latency_stats(values) for name, values in samples.items()}
    hybrid, dense = stats["hybrid"], stats["dense"]
    chunks = bench["chunks_in_store"]
    reference = {
        name: round(stats[f"{name}_embed"]["p50_ms"] + stats[f"{name}_chroma"]["p50_ms"], 3)
        for name in ("reference_k", "reference_candidates")
    }
    target_note = {"chunks_in_store": chunks, "target_defined_at_chunks": 10000}
    return {
        "benchmark": "retrieval",
        "machine": machine_info(load_at_start=start_load),
        "data": {
            "eval_dir": portable_path(args.eval_dir),
            "data_dir": portable_path(data_dir),
            "corpus_reused": reused,
            "chunks_requested": args.chunks,
            "passages_per_file": args.per_file,
            **plan,
            "chunks_in_store": chunks,
            "keyword_index_chunks": bench["keyword_index_chunks"],
        },
        "settings": "package defaults (local multilingual-e5-small, Chroma persistent, "
        "embedding cache on) for ingest and both retrievers, except score_threshold None for "
        "both, so neither refuses and each always returns k chunks; dense-only = "
        "retriever.search_type similarity",
        "k": bench["k"],
        "ingest": ingested,
        "questions": {
            "count": len(questions),
            "distinct": len({q for _, q in questions}),
            "seed": QUESTION_SEED,
            "per_dataset": {d: sum(1 for x, _ in questions if x == d) for d in DATASETS},
            "warm_up_questions": len(bench["warm_up_s"]),
        },
        "order": "per question: hybrid, dense, reference k, reference candidates; reversed on "
        "every other question",
        "store_open_s": bench["store_open_s"],
        "keyword_index_load": bench["keyword_index_load"],
        "warm_up_rounds_s": bench["warm_up_s"],
        "timed_loop": bench["loop"],
        "latency": {
            "hybrid": hybrid,
            "dense": dense,
            "hybrid_cpu": stats["hybrid_cpu"],
            "dense_cpu": stats["dense_cpu"],
            "reference_k_embed_query": stats["reference_k_embed"],
            "reference_k_chroma_query": stats["reference_k_chroma"],
            "reference_candidates_embed_query": stats["reference_candidates_embed"],
            "reference_candidates_chroma_query": stats["reference_candidates_chroma"],
            "reference_k_p50_ms": reference["reference_k"],
            "reference_candidates_p50_ms": reference["reference_candidates"],
        },
        "by_dataset": by_dataset(questions, samples),
        "returned": returned_stats(bench["returned"]),
        "targets": {
            "hybrid_over_dense_p50": {
                **target(hybrid["p50_ms"] / dense["p50_ms"], "<=", 1.5),
                **target_note,
            },
            "hybrid_over_dense_p95 (info)": target(hybrid["p95_ms"] / dense["p95_ms"], "<=", 1.5),
            "hybrid_over_dense_cpu_p50 (info)": target(
                stats["hybrid_cpu"]["p50_ms"] / stats["dense_cpu"]["p50_ms"], "<=", 1.5
            ),
            "dense_over_reference_k (info, ask target)": target(
                dense["p50_ms"] / reference["reference_k"], "<=", 1.2
            ),
        },
    }


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.embeddings import build_embedding_model

    start_load = load_average()
    if args.questions < 1 or args.chunks < 1:
        raise SystemExit("--questions and --chunks must be at least 1")
    fake = args.build_embeddings == "fake"
    suffix = "-fake" if fake else ""
    data_dir = (args.data_dir or default_retrieval_dir(args.chunks, suffix)).resolve()
    out = args.out or RESULTS / f"retrieval-{chunk_label(args.chunks)}{suffix}.json"
    settings = (
        default_settings(data_dir, embeddings=FAKE_BUILD) if fake else default_settings(data_dir)
    )
    corpus, plan, reused = prepare_corpus(
        data_dir, args.eval_dir, args.chunks, args.per_file, settings.split
    )
    how = "reused" if reused else "built"
    print(
        f"corpus ({how}): {plan['files']} files, {plan['chunks_planned']} chunks in "
        f"{portable_path(corpus)}"
    )
    sampled = sample_questions(args.eval_dir, args.questions + WARM_UP_QUESTIONS)
    questions, warm = sampled[: args.questions], [q for _, q in sampled[args.questions :]]

    model = build_embedding_model(settings)
    print(f"ingesting into {portable_path(data_dir)} ...", flush=True)
    ingested = ingest_corpus(corpus, settings, model)
    print(
        f"ingest: {ingested['seconds']:.1f} s, {ingested['chunks_embedded']} chunks embedded, "
        f"{ingested['chunks_skipped_unchanged']} unchanged"
    )
    query_model = build_embedding_model(default_settings(data_dir)) if fake else None
    bench = bench_retrievers(settings, model, questions, warm, query_model)
    results = retrieval_results(
        args, data_dir, plan, reused, ingested, questions, bench, start_load
    )
    if fake:
        results["settings"] = (
            "ingest with fake embeddings (hashed character n-grams, 384 dims); questions "
            "embedded by the local model for both retrievers; otherwise " + results["settings"]
        )
    if args.cold_runs:
        results["cold"] = cold_runs(data_dir, settings, [q for _, q in questions], args.cold_runs)
    if args.serve_workers:
        results["serve_workers"] = serve_workers(data_dir, settings, args.serve_workers)
    write_results(out, results)
    print_retrieval_summary(results)
    return 0


def cold_runs(
    data_dir: Path, settings: Settings, questions: list[str], runs: int
) -> dict[str, Any]:
    """Cold processes on the ingested folder: ``rag ask`` (fake query vectors, extractive
    answer) and a keyword-only search (open the index, one search); wall time seen from here,
    and the child's own time and peak RSS (``VmHWM`` of /proc/self/status, Linux) reported by
    the child at exit."""
    import sys

    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data_dir),
        "RAG_EMBEDDINGS__PROVIDER": "fake",
        "RAG_EMBEDDINGS__DIMENSIONS": str(FAKE_BUILD["dimensions"]),
    }
    probe = (
        "import json, sys, time\n"
        "started = time.perf_counter()\n"
        "code = 0\n"
        "if sys.argv[1] == 'ask':\n"
        "    from rag_pipeline.cli import main\n"
        "    code = main(['ask', '--json', sys.argv[2]])\n"
        "else:\n"
        "    from pathlib import Path\n"
        "    from rag_pipeline import keyword_store as ks, state_db\n"
        "    from rag_pipeline.bm25 import KeywordSearcher\n"
        "    engine = state_db.open_state(Path(sys.argv[3]))\n"
        "    with state_db.reading(engine) as conn:\n"
        "        row = conn.execute(ks.namespaces.select()).first()\n"
        "    searcher = KeywordSearcher(engine, row.id, pin=row.next_docno - 1, "
        "question_weight=0.6)\n"
        "    searcher.search(sys.argv[2], 20)\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
        "print(json.dumps({'code': code, 'seconds': time.perf_counter() - started, "
        "'max_rss_mb': int(peak[0].split()[1]) / 1024}), file=sys.stderr)\n"
    )
    results: dict[str, Any] = {}
    for kind in ("ask", "keyword"):
        walls, inner, rss = [], [], []
        for i in range(runs):
            question = questions[i % len(questions)]
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", probe, kind, question, str(settings.state_db)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            walls.append(time.perf_counter() - started)
            line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "{}"
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                raise SystemExit(f"cold {kind} failed: {done.stderr[-2000:]}") from None
            if report.get("code"):
                raise SystemExit(f"cold {kind} exited {report['code']}: {done.stderr[-2000:]}")
            inner.append(report["seconds"])
            rss.append(report["max_rss_mb"])
        results[kind] = {
            "runs": runs,
            "wall_s_p50": round(statistics.median(walls), 3),
            "wall_s_min": round(min(walls), 3),
            "in_process_s_p50": round(statistics.median(inner), 3),
            "peak_rss_mb_p50": round(statistics.median(rss), 1),
            "peak_rss_mb_max": round(max(rss), 1),
        }
    results["how"] = (
        "each run a fresh Python process (files in the page cache); ask = the CLI's `rag ask "
        "--json` with fake query vectors and the extractive model; keyword = open the keyword "
        "index's tables and one search with the default question weight (no vector store, no "
        "LangChain chain: the keyword side's own cost)"
    )
    return results


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc; Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ready(url: str, times: int) -> bool:
    """``times`` /readyz requests in a row, each on a new connection (so the kernel hands
    them to every worker), all 200."""
    import httpx

    try:
        return all(
            httpx.get(url, timeout=2.0, headers={"Connection": "close"}).status_code == 200
            for _ in range(times)
        )
    except httpx.HTTPError:
        return False


def serve_workers(data_dir: Path, settings: Settings, workers: int) -> dict[str, Any]:
    """`rag serve` with 1 and with ``workers`` workers over a `chroma run` server of the
    ingested folder (several workers need a shared store): seconds from start until 40
    consecutive /readyz answers (new connection each) are 200, and the resident memory of
    each serving process once ready. The keyword index is handed to the server's namespace
    for the run (a store's namespace names its location) and handed back after."""
    import signal
    import sys

    from rag_pipeline.keyword_index import KeywordIndex
    from rag_pipeline.stores import connect
    from rag_pipeline.testing.chroma import ChromaServer, free_port

    local = connect(settings)
    server = ChromaServer(settings.chroma_dir)
    server.start()
    remote_settings = server.settings(settings, collection=settings.store.collection)
    remote = connect(remote_settings)
    KeywordIndex(settings.state_location, local.namespace).move_to(remote.namespace)
    results: dict[str, Any] = {}
    try:
        for count in (1, workers):
            port = free_port()
            env = {
                **os.environ,
                "RAG_DATA_DIR": str(data_dir),
                "RAG_EMBEDDINGS__PROVIDER": "fake",
                "RAG_EMBEDDINGS__DIMENSIONS": str(FAKE_BUILD["dimensions"]),
                "RAG_STORE__MODE": "http",
                "RAG_STORE__HOST": server.host,
                "RAG_STORE__PORT": str(server.port),
            }
            command = [sys.executable, "-m", "rag_pipeline.cli", "serve", "--port", str(port)]
            command += ["--workers", str(count)]
            started = time.perf_counter()
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                url = f"http://127.0.0.1:{port}/readyz"
                while not _ready(url, 40):
                    if process.poll() is not None or time.perf_counter() - started > 600:
                        raise SystemExit(f"rag serve --workers {count} did not get ready")
                    time.sleep(0.1)
                ready_s = time.perf_counter() - started
                serving = _children(process.pid) if count > 1 else [process.pid]
                rss = [round(_rss_mb(pid), 1) for pid in serving]
                results[f"workers_{count}"] = {
                    "ready_s": round(ready_s, 2),
                    "serving_processes": len(serving),
                    "rss_mb_per_process": rss,
                    "rss_mb_total": round(sum(rss), 1),
                }
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    finally:
        KeywordIndex(settings.state_location, remote.namespace).move_to(local.namespace)
        remote.close()
        local.close()
        server.stop()
    one, many = results["workers_1"], results[f"workers_{workers}"]
    results["ready_ratio"] = round(many["ready_s"] / one["ready_s"], 3)
    results["rss_per_worker_over_one"] = round(
        max(many["rss_mb_per_process"]) / one["rss_mb_total"], 3
    )
    results["how"] = (
        "fake query vectors, so no model in memory; the keyword index answers from "
        "state.sqlite (keyword tables) in every worker; a Chroma server of the ingested folder"
    )
    return results


def print_retrieval_summary(results: dict[str, Any]) -> None:
    data, ingested, latency = results["data"], results["ingest"], results["latency"]
    k = results["k"]
    print(
        f"\n== retrieval: {data['chunks_in_store']} chunks in the store, "
        f"{results['questions']['count']} questions =="
    )
    if data["chunks_in_store"] != data["chunks_planned"]:
        print(f"  note: the corpus makes {data['chunks_planned']} chunks; the store holds others")
    print(
        f"ingest                 {ingested['seconds']:.1f} s: {ingested['chunks_embedded']} "
        f"embedded, {ingested['chunks_from_embedding_cache']} from the cache, "
        f"{ingested['chunks_skipped_unchanged']} unchanged"
    )
    keyword = results["keyword_index_load"]
    print(
        f"keyword index load     {keyword['seconds']:.2f} s ({data['keyword_index_chunks']} chunks)"
    )
    for name in ("hybrid", "dense"):
        wall, cpu = latency[name], latency[f"{name}_cpu"]
        print(
            f"{name:6} retriever        p50 {wall['p50_ms']:.1f} ms, p95 {wall['p95_ms']:.1f} ms "
            f"(CPU p50 {cpu['p50_ms']:.1f} ms), {wall['n_over_500ms']}/{wall['n']} over 500 ms"
        )
    embed = latency["reference_k_embed_query"]
    print(
        f"embed_query + Chroma   p50 {latency['reference_k_p50_ms']:.1f} ms (k={k['dense']}), "
        f"{latency['reference_candidates_p50_ms']:.1f} ms "
        f"(n={k['hybrid_candidates_per_side']}); embed_query alone "
        f"{embed['n_over_500ms']}/{embed['n']} over 500 ms"
    )
    stalls = sum(latency[name]["n_over_500ms"] for name in ("hybrid", "dense"))
    if stalls and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print(
            f"  note: {stalls} retriever calls over 500 ms with OMP_WAIT_POLICY not passive: "
            "the local model's OpenMP stall on a loaded machine (README); =passive avoids it"
        )
    loop = results["timed_loop"]
    print(
        f"timed loop             {loop['seconds']:.1f} s, CPU {loop['cpu_s']:.1f} s, load "
        f"{loop['load_avg_1min_before']:.2f} -> {loop['load_avg_1min_after']:.2f}"
    )
    for kind, cold in results.get("cold", {}).items():
        if isinstance(cold, dict):
            print(
                f"cold {kind:7}           wall p50 {cold['wall_s_p50']:.2f} s, peak RSS p50 "
                f"{cold['peak_rss_mb_p50']:.0f} MB ({cold['runs']} runs)"
            )
    if "serve_workers" in results:
        served = results["serve_workers"]
        for key, run in served.items():
            if key.startswith("workers_"):
                print(
                    f"rag serve {key:10}   ready in {run['ready_s']:.1f} s, RSS per process "
                    f"{run['rss_mb_per_process']} MB"
                )
    for name, t in results["targets"].items():
        where = (
            f" at 10k chunks; measured at {t['chunks_in_store']}" if "chunks_in_store" in t else ""
        )
        print(f"{name}: {t['value']:.3f} (target {t['target']}{where}): {met(t)}")
