"""Each module of the package imports on its own: no module works only when another of ours
was imported first.

One fresh interpreter imports the whole package once (so the third-party libraries are
loaded), forgets every ``rag_pipeline`` module, then forks one child per module that imports
that module alone: our own modules run again from scratch in each child, in the order that
module's imports give, which is what an import-order bug depends on. Forking instead of a new
interpreter per module keeps the check at a few seconds (74 interpreters took about a minute).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.processes import run_python
from tests.unit.test_layout import PACKAGE, module_name

MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))

# Run by a fresh interpreter: prints {module: "" when it imported alone, else the traceback}.
_CHECKER = r"""
import importlib, json, os, sys, traceback

modules = json.loads(sys.argv[1])
for name in modules:  # the parent's own import errors are reported by the children
    try:
        importlib.import_module(name)
    except BaseException:
        pass
for name in [m for m in sys.modules if m == "rag_pipeline" or m.startswith("rag_pipeline.")]:
    del sys.modules[name]

results = {}
for name in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc() or "failed"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    results[name] = text if status == 0 else text + f"\nchild exited with status {status}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, str]:
    done = run_python(["-c", _CHECKER, json.dumps(MODULES)], timeout=300)
    assert done.returncode == 0, done.stderr
    results: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.skipif(sys.platform == "win32", reason="the checker forks")
@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str, imported_alone: dict[str, str]) -> None:
    assert imported_alone[module] == "", imported_alone[module]


def test_the_checker_sees_a_module_that_needs_another_imported_first(tmp_path: Path) -> None:
    # A cycle in which a module works only when the other was imported first: importing
    # ``a`` alone runs b while a is half-done (b reads a.VALUE: AttributeError); importing
    # ``b`` alone works. The checker must fail a and pass b, as separate interpreters would.
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\nVALUE = 1\n")
    (package / "b.py").write_text("import cyclic.a\nTWICE = cyclic.a.VALUE * 2\n")
    checker = _CHECKER.replace('"rag_pipeline"', '"cyclic"').replace('"rag_pipeline.', '"cyclic.')
    done = run_python(["-c", checker, json.dumps(["cyclic.a", "cyclic.b"])], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert "AttributeError" in results["cyclic.a"]
    assert results["cyclic.b"] == ""
