"""``rag serve`` as a real process: it starts, answers /healthz and /v1/ask, logs one access
line per request without keys, and exits 0 on Ctrl-C (SIGINT); it refuses, with exit 2 and a
one-line error, to listen beyond loopback without keys and to run several workers over an
embedded store; two workers over a ``chroma run`` server answer. ``rag serve --help`` loads no
web framework or store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag_pipeline.indexing import ingest
from rag_pipeline.testing.chroma import free_port
from tests.helpers import fake_settings, hermetic, write_corpus
from tests.integration.live_service import wait_until_ready
from tests.integration.processes import clean_env, run_python

KEY = "serve-key-3c5e7a9b"
SETTINGS = {
    "RAG_EMBEDDINGS__PROVIDER": "fake",
    "RAG_EMBEDDINGS__CACHE": "false",
    "RAG_RETRIEVER__SCORE_THRESHOLD": "0.3",
    "RAG_LLM__PROVIDER": "extractive",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("service-cli")
    with hermetic(root):
        settings = fake_settings(root / "data", embeddings={"cache": False})
        assert not ingest([write_corpus(root / "corpus")], settings).files_failed
    return settings.data_dir


def serve_command(data_dir: Path, *args: str) -> list[str]:
    return ["-m", "rag_pipeline.cli", "serve", "--data-dir", str(data_dir), *args]


@pytest.fixture
def running(data_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *serve_command(data_dir, "--port", str(port))],
        cwd=tmp_path,
        env=clean_env(**SETTINGS, RAG_SERVE__API_KEYS=KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def test_serve_answers_and_stops_on_ctrl_c(running: tuple[subprocess.Popen[str], str]) -> None:
    process, url = running
    wait_until_ready(url, process=process)
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    headers = {"Authorization": f"Bearer {KEY}"}
    asked = httpx.post(
        url + "/v1/ask", json={"question": "不满99元运费多少钱"}, headers=headers, timeout=60
    )
    assert asked.status_code == 200 and "运费8元" in asked.json()["answer"]
    # A client that puts its key in the URL: the query string is never logged.
    httpx.get(url + f"/v1/models?api_key={KEY}", headers=headers)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines()[0].startswith(f"rag serve: {url} ")
    assert "collection rag" in out and "auth on" in out
    assert KEY not in out + err and "Traceback" not in err
    access = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    ask_line = next(a for a in access if a["path"] == "/v1/ask")
    assert ask_line["status"] == 200 and ask_line["answer_id"] == asked.json()["answer_id"]
    assert {"method", "path", "status", "latency_ms", "client"} <= set(ask_line)


def test_serve_refuses_an_open_bind_without_keys(data_dir: Path) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - the bind this test expects to be refused
    done = run_python(serve_command(data_dir, "--host", everywhere), env=clean_env(**SETTINGS))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: refusing to serve")
    assert "RAG_SERVE__API_KEYS" in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_workers_over_an_embedded_store(data_dir: Path) -> None:
    done = run_python(serve_command(data_dir, "--workers", "2"), env=clean_env(**SETTINGS))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --workers 2")
    assert "RAG_STORE__MODE=http" in done.stderr and "Traceback" not in done.stderr


def test_serve_help_is_light() -> None:
    code = (
        "import sys\n"
        "from rag_pipeline.cli import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "heavy = ('fastapi', 'uvicorn', 'chromadb', 'langchain_core', 'rag_pipeline.service')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = run_python(["-c", code])
    assert done.returncode == 0, done.stderr
    assert "--workers" in done.stdout and done.stdout.splitlines()[-1] == "[]"


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_two_workers_over_a_chroma_server_answer(tmp_path: Path) -> None:
    from rag_pipeline.testing.chroma import chroma_server

    with chroma_server(tmp_path / "chroma") as server:
        store = {"mode": "http", "host": server.host, "port": server.port}
        with hermetic(tmp_path):
            settings = fake_settings(tmp_path / "data", embeddings={"cache": False}, store=store)
            assert not ingest([write_corpus(tmp_path / "corpus")], settings).files_failed
        port = free_port()
        env = clean_env(
            **SETTINGS,
            RAG_SERVE__API_KEYS=KEY,
            RAG_STORE__MODE="http",
            RAG_STORE__HOST=server.host,
            RAG_STORE__PORT=str(server.port),
        )
        command = serve_command(settings.data_dir, "--port", str(port), "--workers", "2")
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, process=process)
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                # Ready on this client's own (kept-alive) connection: /readyz above may have
                # been answered by the other worker while this one still loads.
                deadline = time.monotonic() + 120
                while client.get("/readyz").status_code != 200:
                    assert time.monotonic() < deadline, "a worker did not get ready"
                    time.sleep(0.1)
                answers = [
                    client.post("/v1/ask", json={"question": "不满99元运费多少钱"})
                    for _ in range(12)
                ]
            assert [a.status_code for a in answers] == [200] * 12
            assert all("运费8元" in a.json()["answer"] for a in answers)
            assert len(_children(process.pid)) >= 2  # uvicorn's worker processes
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            assert "workers 2" in out.splitlines()[0] and "Traceback" not in err
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
