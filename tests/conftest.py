"""Shared fixtures: a hermetic environment and small helpers used by both test tiers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_pipeline.testing.environment import PROVIDER_VARIABLES, is_leaky

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
# The sample corpus's files with no text layer: read by OCR (the [ocr] extra) only.
CORPUS_OCR_FILES = frozenset(
    {"announcements/2025-return-address-change.png", "aftersales/trade-in-subsidy-scan.pdf"}
)

# The fixtures of rag_pipeline.testing (rag_settings, model_server, chroma_server, ...) come
# from its pytest11 entry point, active in the editable install as in a user's; pytester runs
# the example's tests inside a test.
pytest_plugins = ["pytester"]
__all__ = ["CORPUS", "OCR_CACHE_VARIABLE", "PROVIDER_VARIABLES", "REPO"]
OCR_CACHE_VARIABLE = "RAG_INGEST__OCR_CACHE_DIR"


@pytest.fixture(scope="session", autouse=True)
def shared_ocr_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One OCR cache for the session: the sample corpus's two scans are read by the engine
    once, not in every test that ingests the corpus (about 7 s each on 2 cores). The OCR
    tests themselves use readers without it.

    It is in the environment for the whole session, not only inside each test: module and
    session fixtures (the sample index, the keyword oracle's chunks) are set up before a
    test's own fixtures and would otherwise OCR the scans again."""
    folder = tmp_path_factory.mktemp("ocr-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(OCR_CACHE_VARIABLE, str(folder))
        yield folder


@pytest.fixture(autouse=True)
def hermetic_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_ocr_cache: Path
) -> None:
    """No provider keys, no RAG_* settings but the session's OCR cache, and a fresh working
    directory (so no stray .env, rag.toml or .rag/ folder of the developer's is read)."""
    for name in list(os.environ):
        if is_leaky(name):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(OCR_CACHE_VARIABLE, str(shared_ocr_cache))
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


# Third-party pytest plugins installed beside LangChain and our dev tools that an inner pytest
# run of ours never uses: langsmith's plugin and hypothesis's import their libraries at start
# (about 2 s of each inner run's 4 s on 2 cores). Blocking an absent plugin is allowed.
UNUSED_PLUGINS = ("langsmith_plugin", "hypothesispytest")


@pytest.fixture(autouse=True)
def lean_inner_pytest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs (pytester's) start without the plugins none of them uses."""
    if "pytester" not in request.fixturenames:
        return
    request.getfixturevalue("pytester")  # first: it clears PYTEST_ADDOPTS when it starts
    blocked = " ".join(f"-p no:{name}" for name in UNUSED_PLUGINS)
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} {blocked}")
