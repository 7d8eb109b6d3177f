"""Parameter sweeps for the defaults: runs ``rag eval`` once per setting and collects the figures.

Each point is a set of ``RAG_*`` overrides (chunk size and overlap). Every point gets its own
scratch data folder, but all of them share one embedding cache (``--cache``), so a chunk text
that two points have in common is embedded once. Results go to one JSON file, with the command
and the overrides of every point, so ``docs/tuning.md`` can cite it and anyone can re-run it.

Run from the repository root, on a quiet machine (the local model embeds 5-6 chunks a second
on two cores, so each new chunk size of the pooled DEV sets costs about 5 minutes)::

    python scripts/sweep.py chunks ../shared/eval/{cmrc2018,drcd,xquad_zh,xquad_en} \\
        --out bench-results/sweep-chunks-dev.json
    python scripts/sweep.py chunks corpus --out bench-results/sweep-chunks-corpus.json
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

from benchmarks.common import write_results

# Chunk size / overlap grid (400/60 was the first default).
CHUNK_POINTS: list[dict[str, str]] = [
    {"RAG_SPLIT__CHUNK_SIZE": size, "RAG_SPLIT__CHUNK_OVERLAP": overlap}
    for size, overlap in [
        ("200", "30"),
        ("250", "40"),
        ("300", "60"),
        ("400", "0"),
        ("400", "60"),
        ("500", "60"),
        ("800", "100"),
    ]
]
# k needs no sweep: every rag eval run reports answer_recall_at_k and context_chars_at_k.
GRIDS = {"chunks": CHUNK_POINTS}


def label(point: dict[str, str]) -> str:
    return ",".join(f"{k.removeprefix('RAG_').lower()}={v}" for k, v in point.items())


def run_point(
    datasets: list[str], point: dict[str, str], scratch: Path, cache: Path, compare: str
) -> dict[str, object]:
    data = scratch / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "embedding-cache").exists():
        cache.mkdir(parents=True, exist_ok=True)
        (data / "embedding-cache").symlink_to(cache.resolve(), target_is_directory=True)
    command = [sys.executable, "-m", "rag_pipeline.cli", "eval", *datasets]
    command += ["--data-dir", str(scratch), "--json"]
    if compare:
        command += ["--compare", compare]
    env = {**os.environ, **point}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"{label(point)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout)
    return {"point": point, "seconds": round(time.perf_counter() - started, 1), **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", choices=sorted(GRIDS))
    parser.add_argument("datasets", nargs="+", help="dataset folders, as for rag eval")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, help="scratch root (default: a temp folder)")
    parser.add_argument("--cache", type=Path, help="shared embedding cache folder")
    parser.add_argument("--compare", default="", help="passed to rag eval --compare")
    parser.add_argument(
        "--points", help="chunks grid only: SIZE/OVERLAP,... instead of the built-in grid"
    )
    parser.add_argument("--append", action="store_true", help="add to the results already in --out")
    args = parser.parse_args(argv)

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="rag-sweep-"))
    cache = args.cache or scratch / "embedding-cache"
    points = GRIDS[args.grid]
    if args.points:
        points = [
            {"RAG_SPLIT__CHUNK_SIZE": size, "RAG_SPLIT__CHUNK_OVERLAP": overlap}
            for size, _, overlap in (p.partition("/") for p in args.points.split(","))
        ]
    results = json.loads(args.out.read_text())["results"] if args.append else []
    for point in points:
        folder = scratch / label(point).replace(",", "_")  # one index per chunking
        result = run_point(args.datasets, point, folder, cache, args.compare)
        results.append(result)
        print(
            f"{label(point):<50} chunks {result['chunks']:>5}  hit@1 {result['hit@1']:.4f}  "
            f"hit@5 {result['hit@5']:.4f}  mrr@10 {result['mrr@10']:.4f}  "
            f"answer_recall {result['answer_recall']:.4f}  ({result['seconds']} s)",
            flush=True,
        )
        payload = {
            "grid": args.grid,
            "datasets": args.datasets,
            "command": "python scripts/sweep.py " + " ".join(argv or sys.argv[1:]),
            "load_average": os.getloadavg(),
            "results": results,
        }
        # Paths of this machine (the temp scratch folder, the eval sets) are made portable.
        write_results(args.out, payload, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
