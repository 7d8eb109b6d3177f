"""Thin wrapper: `python scripts/ask.py ...` is `rag ask ...` (see rag_pipeline/cli.py)."""

import sys
from pathlib import Path

# Run from a checkout even before `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["ask", *sys.argv[1:]]))
