"""``bench.py ingest``: ingest throughput against the raw embedder.

On a synthetic corpus of Markdown files built in a temp folder from the shared evaluation
passages (cmrc2018, drcd, xquad_en, xquad_zh; read in place, never copied into the
repository):

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

The corpus builder is also the ``retrieval`` benchmark's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    DATASETS,
    DEFAULT_EVAL_DIR,
    RESULTS,
    default_settings,
    load_average,
    machine_info,
    measured,
    met,
    portable_path,
    target,
    timed,
    timing_embeddings,
    write_results,
)

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from rag_pipeline.config import Settings, SplitSettings
    from rag_pipeline.embeddings import EmbeddingModel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chunks", type=int, default=2000, help="approximate corpus size in chunks"
    )
    parser.add_argument("--per-file", type=int, default=4, help="passages per Markdown file")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR, help="eval data")
    parser.add_argument("--no-raw-after", action="store_true", help="skip the second raw run")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.json")


# ---------------------------------------------------------------------------------- corpus


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

    cfg = settings.embeddings
    embeddings = LocalE5Embeddings(
        threads=cfg.threads,
        batch_size=batch_size,
        engine=cfg.engine,
        precision=cfg.precision,
        cache_dir=cfg.cache_dir,
    )
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
    timer = timing_embeddings(model.embeddings)
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


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.config import Settings

    start_load = load_average()
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

    results = ingest_results(
        args, plan, texts, load_split_runs, raw_before, raw_after, pipeline, start_load
    )
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
    start_load: list[float],
) -> dict[str, Any]:
    first, second = pipeline["first"], pipeline["second"]
    raw_runs = [r for r in (raw_before, raw_after) if r]
    raw_mean = statistics.fmean(r["chunks_per_s"] for r in raw_runs)
    return {
        "benchmark": "ingest",
        "machine": machine_info(load_at_start=start_load),
        "data": {
            "eval_dir": portable_path(args.eval_dir),
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
        print(f"{name:30} {t['value']:.3f} (target {t['target']}): {met(t)}")
