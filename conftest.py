"""Doctests of rag_pipeline/ run hermetically too: no provider keys or RAG_* settings of the
developer's, and a fresh working directory (no stray .env, rag.toml or .rag/ folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent / "rag_pipeline"


@pytest.fixture(autouse=True)
def hermetic_doctests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not request.node.path.is_relative_to(PACKAGE):
        return  # tests/ has its own hermetic fixture; only doctests are collected here
    from tests.conftest import PROVIDER_VARIABLES

    for name in list(os.environ):
        if name.startswith("RAG_") or name in PROVIDER_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")
    monkeypatch.chdir(tmp_path)
