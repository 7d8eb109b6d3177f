"""The subprocess helpers are hermetic: a child never runs in the repository (whose .env or
rag.toml would be read) and never sees RAG_* settings or provider keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import OCR_CACHE_VARIABLE, PROVIDER_VARIABLES, REPO
from tests.integration.processes import outside_repo, run_python, run_script

SHOW = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "env": sorted(os.environ), "executable": sys.executable,
                  "telemetry": os.environ.get("ANONYMIZED_TELEMETRY")}))
"""


@pytest.fixture
def leaky_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a developer's shell might export."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-read")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-should-not-be-read")
    monkeypatch.setenv("RAG_LLM__PROVIDER", "openai")
    monkeypatch.setenv("RAG_DATA_DIR", str(REPO / ".rag"))


@pytest.mark.usefixtures("leaky_environment")
def test_run_script_runs_outside_the_repo_without_provider_variables(tmp_path: Path) -> None:
    import sys

    script = tmp_path / "show.py"
    script.write_text(SHOW, encoding="utf-8")
    first = run_script(script)
    second = run_script(script)
    assert first.returncode == 0, first.stderr
    seen, again = json.loads(first.stdout), json.loads(second.stdout)
    cwd = Path(seen["cwd"]).resolve()
    assert cwd != REPO and REPO not in cwd.parents
    assert cwd != Path.cwd().resolve()  # not even this test's folder: a fresh one per call
    assert seen["cwd"] != again["cwd"] and not cwd.exists()  # removed afterwards
    leaked = [k for k in seen["env"] if k.startswith("RAG_") or k in PROVIDER_VARIABLES]
    assert leaked == [OCR_CACHE_VARIABLE]  # the session's OCR cache, set on purpose
    assert seen["telemetry"] == "False"
    assert seen["executable"] == sys.executable  # the venv's python: this worktree's code


@pytest.mark.usefixtures("leaky_environment")
def test_the_cli_in_a_subprocess_sees_no_key_and_no_repo_settings() -> None:
    done = run_python(["-m", "rag_pipeline.cli", "config"], timeout=120)
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)
    assert settings["openai_api_key"] is None and settings["dashscope_api_key"] is None
    assert settings["llm"]["provider"] is None  # RAG_LLM__PROVIDER did not get through
    assert settings["llm"]["provider_in_effect"] == "extractive"  # and no key picks another
    assert settings["data_dir"] == ".rag"  # relative to the scratch folder, not REPO/.rag


def test_a_folder_inside_the_repo_is_refused(tmp_path: Path) -> None:
    assert outside_repo(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="inside the repository"):
        run_python(["-c", "pass"], cwd=REPO)
    with pytest.raises(ValueError, match="inside the repository"):
        outside_repo(REPO / "tests")
