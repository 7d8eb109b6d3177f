"""One real ingest of the sample corpus with the default local model, shared by the tests that
need real embeddings (the model embeds a few chunks a second; doing this once keeps CI short)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPUS
from tests.integration.processes import run_script


@dataclass
class SampleIndex:
    data_dir: Path
    first: dict[str, Any]
    second: dict[str, Any]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> SampleIndex:
    """``scripts/ingest.py`` run twice on corpus/ into a fresh data folder, as a user would
    (from a scratch working directory, so the corpus is passed by path)."""
    data_dir = tmp_path_factory.mktemp("sample") / "data"
    reports = []
    for _ in range(2):
        done = run_script("ingest.py", str(CORPUS), "--data-dir", str(data_dir), "--json")
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    return SampleIndex(data_dir, reports[0], reports[1])
