"""Shared fixtures: a hermetic environment and small helpers used by both test tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
# The sample corpus's files with no text layer: read by OCR (the [ocr] extra) only.
CORPUS_OCR_FILES = frozenset(
    {"announcements/2025-return-address-change.png", "aftersales/trade-in-subsidy-scan.pdf"}
)

# Provider variables a developer may have exported; no test may see them.
PROVIDER_VARIABLES = (
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_HTTP_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
)


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider keys, no RAG_* settings, and a fresh working directory (so no stray .env,
    rag.toml or .rag/ folder of the developer's is read)."""
    for name in list(os.environ):
        if name.startswith("RAG_") or name in PROVIDER_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
