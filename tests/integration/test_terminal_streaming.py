"""``rag ask`` streams the answer on a terminal: run as a child process on a pseudo-terminal,
the first pieces are on the screen while the chat model is still holding back the rest. With
``--no-stream``, on a pipe and with ``--json`` the answer is asked for (and printed) at once.

The chat model is a small OpenAI-compatible server on 127.0.0.1 that streams its reply in
pieces and holds the second half back until the test has seen the first one; nothing here
depends on how fast anything is.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.cli import main
from tests.helpers import write_corpus
from tests.integration.processes import clean_env, run_script

FIRST, SECOND = "不满99元收取运费8元[1]，", "偏远地区另计[1]。"
API_KEY = "sk-test-terminal"
GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging; never asserted


class GatedChat(ThreadingHTTPServer):
    """POST /v1/chat/completions: a plain completion, or with ``stream`` an SSE stream whose
    pieces after ``FIRST`` wait for ``release``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.streamed: list[bool] = []  # per request: whether it asked for a stream

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GatedChat

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stream = bool(body.get("stream"))
        self.server.streamed.append(stream)
        if not stream:
            message = {"role": "assistant", "content": FIRST + SECOND}
            self._json({**_base(body), "object": "chat.completion", "choices": [_choice(message)]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event(body, {"role": "assistant", "content": ""})
        self._event(body, {"content": FIRST[:6]})
        self._event(body, {"content": FIRST[6:]})
        self.server.release.wait(GUARD)
        self._event(body, {"content": SECOND})
        self._event(body, {}, finish="stop")
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _event(
        self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None
    ) -> None:
        event = {
            **_base(body),
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        self._chunk(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _base(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "created": 0, "model": body.get("model", "m")}


def _choice(message: dict[str, Any]) -> dict[str, Any]:
    return {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}


@pytest.fixture
def chat() -> Iterator[GatedChat]:
    server = GatedChat()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(GUARD)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat: GatedChat) -> dict[str, str]:
    """The settings of a user with a generative chat model, as the child's environment; the
    small corpus ingested with them."""
    settings = {
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_EMBEDDINGS__PROVIDER": "fake",
        "RAG_EMBEDDINGS__CACHE": "false",
        "RAG_RETRIEVER__SCORE_THRESHOLD": "0.3",
        "RAG_LLM__PROVIDER": "openai",
        "RAG_LLM__MAX_RETRIES": "0",
        "OPENAI_BASE_URL": chat.base_url,
        "OPENAI_API_KEY": API_KEY,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert main(["ingest", str(write_corpus(tmp_path / "corpus")), "--json"]) == 0
    return clean_env(**settings)


def _read_until(fd: int, wanted: str | None, seen: bytearray) -> str:
    """Read the terminal into ``seen`` until ``wanted`` shows (None: until the child closes
    it); the text so far."""
    # poll(), not select(): in a long test session descriptors pass select()'s limit of 1024.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while wanted is None or wanted not in seen.decode("utf-8", "ignore"):
        ready = poller.poll(GUARD * 1000)
        if not ready:
            break  # the guard: the asserts below then say what was missing
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen.extend(data)
    return seen.decode("utf-8", "ignore")


def _on_a_terminal(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    cwd = tmp_path / "cwd-child"
    cwd.mkdir(exist_ok=True)
    parent, child = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag_pipeline.cli", "ask", "不满99元运费多少钱", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
    )
    os.close(child)
    return process, parent


def test_pieces_are_on_the_terminal_before_the_answer_is_complete(
    tmp_path: Path, env: dict[str, str], chat: GatedChat
) -> None:
    process, terminal = _on_a_terminal(tmp_path, env)
    seen = bytearray()
    try:
        before = _read_until(terminal, FIRST, seen)
        assert FIRST in before and SECOND not in before  # the model holds the rest back
        assert "来源 / Sources:" not in before
        chat.release.set()
        after = _read_until(terminal, None, seen)
    finally:
        chat.release.set()
        _, err = process.communicate(timeout=GUARD)
        os.close(terminal)
    assert process.returncode == 0, err.decode()
    assert FIRST + SECOND in after and "来源 / Sources:" in after
    assert after.index(SECOND) < after.index("来源 / Sources:")
    assert chat.streamed == [True]
    assert API_KEY not in after + err.decode()


@pytest.mark.parametrize("option", ["--no-stream", "--json"])
def test_no_stream_and_json_on_a_terminal_answer_at_once(
    tmp_path: Path, env: dict[str, str], chat: GatedChat, option: str
) -> None:
    process, terminal = _on_a_terminal(tmp_path, env, option)
    seen = bytearray()
    try:
        out = _read_until(terminal, None, seen)  # the gate is closed: a stream would stall
    finally:
        chat.release.set()
        _, err = process.communicate(timeout=GUARD)
        os.close(terminal)
    assert process.returncode == 0, err.decode()
    assert chat.streamed == [False]  # one plain request: the whole answer in one reply
    if option == "--json":
        assert json.loads(out)["answer"] == FIRST + SECOND
    else:
        assert FIRST + SECOND in out and "来源 / Sources:" in out


def test_on_a_pipe_the_answer_comes_at_once(
    tmp_path: Path, env: dict[str, str], chat: GatedChat
) -> None:
    cwd = tmp_path / "cwd-pipe"
    cwd.mkdir()
    done = run_script("ask.py", "不满99元运费多少钱", cwd=cwd, env=env, timeout=GUARD * 5)
    assert done.returncode == 0, done.stderr
    assert chat.streamed == [False]
    answer, _, sources = done.stdout.partition("来源 / Sources:")
    assert answer.strip() == FIRST + SECOND and "[1]" in sources


def test_stream_can_be_asked_for_on_a_pipe(
    tmp_path: Path, env: dict[str, str], chat: GatedChat
) -> None:
    chat.release.set()  # nobody watches a pipe piece by piece: let the stream run through
    cwd = tmp_path / "cwd-pipe"
    cwd.mkdir()
    done = run_script("ask.py", "不满99元运费多少钱", "--stream", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    assert chat.streamed == [True] and FIRST + SECOND in done.stdout
