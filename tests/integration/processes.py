"""Child processes for integration tests, hermetic: a scratch working directory outside the
repository (so no ``.env``, ``rag.toml`` or ``.rag/`` of the developer's is read) and an
environment without RAG_* settings (but the session's OCR cache) or provider keys, with
Chroma's telemetry off."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rag_pipeline.testing import environment
from tests.conftest import OCR_CACHE_VARIABLE, REPO

SCRIPTS = REPO / "scripts"
__all__ = ["SCRIPTS", "clean_env", "outside_repo", "run_python", "run_script"]


def clean_env(**extra: str) -> dict[str, str]:
    """The testing kit's clean environment (plus ``extra``), with the session's OCR cache when
    one is set: the only RAG_* variable a child process gets unasked."""
    env = environment.clean_env(**extra)
    if OCR_CACHE_VARIABLE in os.environ and OCR_CACHE_VARIABLE not in extra:
        env[OCR_CACHE_VARIABLE] = os.environ[OCR_CACHE_VARIABLE]
    return env


def outside_repo(folder: Path) -> Path:
    """``folder``, refusing one inside the repository (its .env and rag.toml would be read)."""
    resolved = folder.resolve()
    if resolved == REPO or REPO in resolved.parents:
        raise ValueError(f"a test subprocess must not run inside the repository: {folder}")
    return folder


def run_python(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` with this interpreter (the venv's, so the worktree's code), in ``cwd``
    or a fresh scratch folder, with ``clean_env()`` unless ``env`` is given."""
    with tempfile.TemporaryDirectory(prefix="rag-test-cwd-") as scratch:
        where = outside_repo(cwd if cwd is not None else Path(scratch))
        return subprocess.run(
            [sys.executable, *argv],
            cwd=where,
            env=env if env is not None else clean_env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run_script(
    script: str | Path,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``python scripts/SCRIPT ARGS...`` (a relative name is under scripts/, an absolute path
    is used as is), hermetic like ``run_python``."""
    path = Path(script) if Path(script).is_absolute() else SCRIPTS / script
    return run_python([str(path), *args], cwd=cwd, env=env, input=input, timeout=timeout)
