"""When the chat model fails after its retries, ``RAG_LLM__FALLBACK`` decides: quotes from the
same retrieved context (``extractive``, the default), the hand-over message (``refuse``) or the
error (``error``, exit 1). Against the stub chat API on 127.0.0.1 failing with a timeout (its
hang mode and a small ``RAG_LLM__TIMEOUT``), HTTP 500 and HTTP 401, through ``rag ask --json``
in process and through ``Assistant``."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.assistant import FALLBACK_NOTICE_ZH, Assistant
from rag_pipeline.chain import Answer
from rag_pipeline.cli import main
from rag_pipeline.config import DEFAULT_REFUSAL, load_settings
from rag_pipeline.llms import EXTRACT_NOTE_ZH
from rag_pipeline.testing.model_api import ModelServer
from tests.helpers import run_cli, write_corpus

QUESTION = "不满99元运费多少钱"
QUOTED = "不满99元收取运费8元"  # the sentence of shipping.txt the extractive model picks


@pytest.fixture
def stub(model_server: ModelServer) -> ModelServer:
    model_server.hang_seconds = 10  # a hung request is held at most this long
    return model_server  # the plugin's: a fresh server for each test


@pytest.fixture
def ingested(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
) -> ModelServer:
    """The small corpus ingested with fake embeddings; the chat model is the stub's."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_EMBEDDINGS__CACHE", "false")
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.3")
    monkeypatch.setenv("RAG_LLM__PROVIDER", "openai")
    monkeypatch.setenv("RAG_LLM__MAX_RETRIES", "1")
    monkeypatch.setenv("RAG_LLM__TIMEOUT", "0.5")  # the hang mode fails fast
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", stub.api_key)
    assert main(["ingest", str(write_corpus(tmp_path / "corpus"))]) == 0
    capsys.readouterr()
    return stub


def _timeout(stub: ModelServer) -> None:
    stub.fault_next("hang", times=10)


def _http_500(stub: ModelServer) -> None:
    stub.fail_next(500, times=10)


def _http_401(stub: ModelServer) -> None:
    stub.fail_next(401, times=10)


FAILURES: dict[str, tuple[Callable[[ModelServer], None], str]] = {
    "timeout": (_timeout, "did not answer within the timeout"),
    "http-500": (_http_500, "HTTP 500"),
    "http-401": (_http_401, "rejected the API key (HTTP 401): check OPENAI_API_KEY"),
}


def _ask_json(capsys: pytest.CaptureFixture[str], stub: ModelServer) -> tuple[dict[str, Any], str]:
    code, out, err = run_cli(capsys, "ask", QUESTION, "--json")
    assert code == 0, err
    assert stub.api_key not in out + err and "Traceback" not in err
    return json.loads(out), err


def test_a_working_model_writes_the_answer(
    capsys: pytest.CaptureFixture[str], ingested: ModelServer
) -> None:
    data, err = _ask_json(capsys, ingested)
    assert data["answer"].startswith("根据资料[1]")  # the stub's reply
    assert data["generated"] is True and data["degraded"] is False
    assert data["degraded_reason"] is None and err == ""


@pytest.mark.parametrize("failure", list(FAILURES))
def test_extractive_fallback_quotes_the_retrieved_context(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ingested: ModelServer,
    failure: str,
) -> None:
    inject, reason = FAILURES[failure]
    inject(ingested)
    data, err = _ask_json(capsys, ingested)  # exit 0: the default is the extractive fallback
    assert data["degraded"] is True and data["generated"] is False and not data["refused"]
    assert reason in data["degraded_reason"] and "\n" not in data["degraded_reason"]
    assert data["answer"].splitlines()[0] == FALLBACK_NOTICE_ZH
    assert QUOTED in data["answer"] and "shipping.txt" in {s["source"] for s in data["sources"]}
    assert EXTRACT_NOTE_ZH not in data["answer"]  # the notice says it; no key hint here
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and reason in warnings[0]
    assert "RAG_LLM__FALLBACK=extractive" in warnings[0]


@pytest.mark.parametrize("failure", list(FAILURES))
def test_refuse_fallback_hands_over(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ingested: ModelServer,
    failure: str,
) -> None:
    monkeypatch.setenv("RAG_LLM__FALLBACK", "refuse")
    inject, reason = FAILURES[failure]
    inject(ingested)
    data, err = _ask_json(capsys, ingested)
    assert data["answer"] == DEFAULT_REFUSAL and data["refused"] is True
    assert data["degraded"] is True and data["generated"] is False and data["sources"] == []
    assert reason in data["degraded_reason"] and reason in err


@pytest.mark.parametrize("failure", list(FAILURES))
def test_error_fallback_fails_as_before(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ingested: ModelServer,
    failure: str,
) -> None:
    monkeypatch.setenv("RAG_LLM__FALLBACK", "error")
    inject, reason = FAILURES[failure]
    inject(ingested)
    code, out, err = run_cli(capsys, "ask", QUESTION, "--json")
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and reason in lines[0] and ingested.api_key not in err


def test_an_unreachable_model_falls_back(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ingested: ModelServer
) -> None:
    with socket.socket() as free:  # a port on 127.0.0.1 nobody listens on once closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    data, err = _ask_json(capsys, ingested)
    assert data["degraded"] is True and "unreachable" in data["degraded_reason"]
    assert QUOTED in data["answer"]


def test_human_output_shows_the_notice_and_the_reason_on_stderr(
    capsys: pytest.CaptureFixture[str], ingested: ModelServer
) -> None:
    ingested.fail_next(500, times=10)
    code, out, err = run_cli(capsys, "ask", QUESTION)
    assert code == 0
    assert out.startswith(FALLBACK_NOTICE_ZH) and QUOTED in out and "来源 / Sources:" in out
    assert "抽取式回答" not in out  # the key hint is for a configured extractive model only
    assert "warning: " in err and "HTTP 500" in err


def _assistant() -> Assistant:
    return Assistant.from_settings(load_settings())


@pytest.mark.parametrize("failure", list(FAILURES))
def test_assistant_ask_and_stream_fall_back(ingested: ModelServer, failure: str) -> None:
    inject, reason = FAILURES[failure]
    assistant = _assistant()
    assert assistant.fallback == "extractive"
    inject(ingested)
    asked = assistant.ask(QUESTION)
    assert asked.degraded and not asked.generated and reason in (asked.degraded_reason or "")
    ingested.reset()
    inject(ingested)
    *pieces, streamed = list(assistant.stream(QUESTION))
    assert isinstance(streamed, Answer) and all(isinstance(p, str) for p in pieces)
    assert streamed.degraded and not streamed.generated
    assert "".join(str(p) for p in pieces) == streamed.answer == asked.answer


def test_assistant_streams_the_model_when_it_works(ingested: ModelServer) -> None:
    *pieces, answer = list(_assistant().stream(QUESTION))
    assert len(pieces) > 1  # the stub streams 4 characters at a time
    assert isinstance(answer, Answer) and answer.generated and not answer.degraded
    assert "".join(str(p) for p in pieces) == answer.answer


def test_a_failing_condense_model_uses_the_rule_and_falls_back(ingested: ModelServer) -> None:
    assistant = _assistant()
    ingested.fail_next(500, times=10)
    answer = assistant.ask("那运费呢？", history=[("不满99元怎么收费", "收取运费8元 [1]")])
    assert answer.standalone_question == "不满99元怎么收费 那运费呢？"  # the documented rule
    assert answer.degraded and QUOTED in answer.answer
    # One failed call (with its retry) for condensing, none for an answer that would fail too.
    assert len(ingested.chat_requests()) == 2
