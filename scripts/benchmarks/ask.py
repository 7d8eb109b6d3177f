"""``bench.py ask``: cold start of ``scripts/ask.py`` and per-question latency.

Ingests the repository's ``corpus/`` once into a temp data folder, then measures:

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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    REPO,
    RESULTS,
    default_settings,
    latency_stats,
    load_average,
    machine_info,
    met,
    percentile,
    reference_query,
    target,
    timed,
    write_results,
)

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

COLD_QUESTION = "满多少钱包邮"
# Per-question timings.
SAMPLES = ("ask", "hybrid", "dense", "hybrid_embed", "hybrid_chroma", "dense_embed", "dense_chroma")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S.*)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=int, default=200, help="questions asked in process")
    parser.add_argument("--repeats", type=int, default=5, help="cold subprocess runs")
    parser.add_argument("--question", default=COLD_QUESTION, help="question of the cold runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "ask.json")


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
    load_before = load_average()
    for _ in range(repeats):
        seconds, stdout, _ = run_cold(data_dir, question, env)
        runs.append(seconds)
        answer = json.loads(stdout)
    return {
        "runs_s": [round(s, 3) for s in runs],
        "min_s": round(min(runs), 3),
        "median_s": round(percentile(runs, 50), 3),
        "load_avg_1_5_15min_before": load_before,
        "load_avg_1_5_15min_after": load_average(),
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


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.indexing import ingest

    start_load = load_average()
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
        "machine": machine_info(load_at_start=start_load),
        "data": {
            "corpus": "corpus/ (repository sample)",
            "chunks": report.chunks_added,
            "files": report.files_ingested,
            "ingest_s": round(ingest_s, 3),
            "questions": len(questions),
            "distinct_questions": len(set(questions)),
        },
        "settings": f"package defaults (hybrid retriever, k={settings.retriever.k}, local e5), "
        "llm provider "
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
        print(f"{name}: {t['value']:.3f} (target {t['target']}): {met(t)}")
