"""One real ingest of the sample corpus with the default local model, shared by the tests that
need real embeddings (the model embeds a few chunks a second; doing this once keeps CI short)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROVIDER_VARIABLES, REPO


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAG_") and k not in PROVIDER_VARIABLES
    }
    env.update(extra)
    return env


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        cwd=REPO,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@dataclass
class SampleIndex:
    data_dir: Path
    first: dict[str, Any]
    second: dict[str, Any]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> SampleIndex:
    """``scripts/ingest.py`` run twice on corpus/ into a fresh data folder, as a user would."""
    data_dir = tmp_path_factory.mktemp("sample") / "data"
    reports = []
    for _ in range(2):
        done = run_script("ingest.py", "--data-dir", str(data_dir), "--json")
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    return SampleIndex(data_dir, reports[0], reports[1])
