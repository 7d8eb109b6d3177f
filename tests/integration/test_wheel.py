"""A normal (non-editable) install answers questions: build the wheel, install it into a fresh
environment, and from a folder outside the repository ingest a small corpus and ask.

The wheel is built offline (``--no-build-isolation``, setuptools and wheel come with the
``[dev]`` extra) from a copy of the package sources, so nothing is written into the checkout.
The fresh environment sees the already installed dependencies (``--system-site-packages``)
but gets its own copy of ``rag_pipeline`` from the wheel; the test checks that this copy, not
the checkout, is the one that runs. It uses the default settings: the bundled local model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.processes import clean_env

pytestmark = pytest.mark.slow

FAQ = "question,answer\n退货运费谁出？,质量问题退货运费由商家承担，其他情况由买家承担。\n"
POLICY = "# 发票\n\n电子发票在订单完成后24小时内开具，可在订单详情页下载。\n"


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the built wheel installed; returns its bin folder."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("rag_pipeline", "prompts"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    env = clean_env()
    dist = base / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    run([*pip_wheel, "-w", str(dist), str(source)], base, env)
    (wheel,) = dist.glob("rag_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for prompt in (REPO / "prompts").glob("*.md"):
        assert f"rag_pipeline/prompts/{prompt.name}" in names
    # The default synonym and typo list is package data, read with importlib.resources.
    assert "rag_pipeline/data/synonyms.txt" in names
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], base, env)
    pip_install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    run([*pip_install, "--no-index", str(wheel)], base, env)
    return venv / "bin"


def test_the_wheel_ingests_and_answers_from_outside_the_repo(
    installed: Path, tmp_path: Path
) -> None:
    work = tmp_path / "elsewhere"
    (work / "kb").mkdir(parents=True)
    (work / "kb" / "faq.csv").write_text(FAQ, encoding="utf-8")
    (work / "kb" / "invoice.md").write_text(POLICY, encoding="utf-8")
    env = clean_env()
    env.pop("PYTHONPATH", None)

    where = run(
        [str(installed / "python"), "-c", "import rag_pipeline; print(rag_pipeline.__file__)"],
        work,
        env,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(REPO)

    ingested = run([str(installed / "rag"), "ingest", "kb", "--json"], work, env)
    report = json.loads(ingested.stdout)
    assert report["files_ingested"] == 2 and not report["files_failed"]

    asked = run([str(installed / "rag"), "ask", "电子发票什么时候能开？", "--json"], work, env)
    answer = json.loads(asked.stdout)
    assert not answer["refused"]
    assert "24小时" in answer["answer"]
    assert [s["source"] for s in answer["sources"]][0] == "invoice.md"


def test_the_wheel_ships_and_applies_the_default_synonyms(installed: Path, tmp_path: Path) -> None:
    env = clean_env()
    env.pop("PYTHONPATH", None)
    script = (
        "from rag_pipeline.synonyms import default_synonyms\n"
        "groups = default_synonyms()\n"
        "print(len(groups), groups.normalise('优惠卷'))\n"
    )
    done = run([str(installed / "python"), "-c", script], tmp_path, env)
    count, normalised = done.stdout.split()
    assert int(count) >= 30
    assert normalised == "优惠券"


def test_the_wheel_serves_the_chat_page_and_its_assets(installed: Path, tmp_path: Path) -> None:
    import re

    import httpx

    from rag_pipeline.testing.chroma import free_port
    from tests.integration.live_service import wait_until_ready

    env = clean_env(RAG_EMBEDDINGS__PROVIDER="fake", RAG_DATA_DIR=str(tmp_path / "data"))
    env.pop("PYTHONPATH", None)
    port = free_port()
    server = subprocess.Popen(
        [str(installed / "rag"), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process=server)
        for page in ("/", "/admin"):
            html = httpx.get(url + page).text
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
            assert assets, page
            while assets:  # every file the page loads, and every module they import
                asset = assets.pop()
                got = httpx.get(url + asset)
                assert got.status_code == 200, asset
                if asset.endswith(".js"):
                    assets += [f"/static/{m}" for m in re.findall(r'from "\./([^"]+)"', got.text)]
    finally:
        server.terminate()
        server.wait(30)
