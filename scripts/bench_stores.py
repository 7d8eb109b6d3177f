"""Kept for old command lines: ``python scripts/bench_stores.py [flags]`` is
``python scripts/bench.py stores [flags]`` (see ``scripts/benchmarks/stores.py``)."""

from __future__ import annotations

import sys

from bench import main

if __name__ == "__main__":
    sys.exit(main(["stores", *sys.argv[1:]]))
