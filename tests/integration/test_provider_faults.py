"""Embedding provider faults through `rag ingest` / `rag search`: each is one clear line and
exit code 1, nothing bad is cached or stored, and the next good run succeeds as is.

Settings come from environment variables, as a user sets them; the provider is the stub of
the OpenAI-compatible or the DashScope native embeddings API on 127.0.0.1.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from rag_pipeline.cli import main
from rag_pipeline.testing.model_api import ModelServer
from tests.helpers import write_corpus

PROVIDERS = ["openai", "dashscope"]


@pytest.fixture
def stub(model_server: ModelServer) -> ModelServer:
    model_server.hang_seconds = 10  # a hung request is held at most this long
    return model_server  # the plugin's: a fresh server for each test


def _use(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stub: ModelServer,
    provider: str,
    *,
    dimensions: bool = True,
) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", provider)
    monkeypatch.setenv("RAG_EMBEDDINGS__MAX_RETRIES", "1")
    if dimensions:
        monkeypatch.setenv("RAG_EMBEDDINGS__DIMENSIONS", "8")
    if provider == "openai":
        monkeypatch.setenv("RAG_EMBEDDINGS__MODEL", "bge-m3")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", stub.api_key)
    else:
        monkeypatch.setenv("RAG_EMBEDDINGS__MODEL", "text-embedding-v4")
        monkeypatch.setenv("RAG_EMBEDDINGS__BASE_URL", stub.dashscope_base_url)
        monkeypatch.setenv("DASHSCOPE_API_KEY", stub.api_key)


def _endpoint(stub: ModelServer, provider: str) -> str:
    return stub.base_url if provider == "openai" else stub.dashscope_base_url


def _error_line(capsys: pytest.CaptureFixture[str], stub: ModelServer) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and stub.api_key not in err
    return lines[0]


def _good_run_succeeds(capsys: pytest.CaptureFixture[str], stub: ModelServer, corpus: Path) -> None:
    """With the faults gone, the same data folder ingests and answers searches, untouched."""
    stub.reset()
    assert main(["ingest", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert " 0 chunks added" not in out and "chunks added" in out
    assert stub.embedding_requests()  # the failed batch was not cached: it is embedded now
    assert main(["search", "退货运费"]) == 0
    assert capsys.readouterr().out.strip()


FAULTS = [
    ("http-500", "failed after 1 retries: HTTP 500"),
    ("http-429", "failed after 1 retries: HTTP 429"),
    ("reset", "failed after 1 retries"),
    ("malformed_json", "answered with malformed JSON"),
    ("missing_fields", "answered without the expected fields"),
    ("short", r"returned \d+ vectors for \d+ texts; nothing was cached or stored"),
    ("nan", "vector 0 has a NaN value; nothing was cached or stored"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("fault", "message"), FAULTS, ids=[f for f, _ in FAULTS])
def test_fault_is_one_clear_line_and_the_next_run_succeeds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
    provider: str,
    fault: str,
    message: str,
) -> None:
    _use(monkeypatch, tmp_path, stub, provider)
    corpus = write_corpus(tmp_path / "corpus")
    if fault.startswith("http-"):
        stub.fail_next(int(fault[5:]), times=20, retry_after=0.01)
    else:
        stub.fault_next(fault, times=20)
    assert main(["ingest", str(corpus)]) == 1
    line = _error_line(capsys, stub)
    assert re.search(message, line), line
    if fault in ("http-500", "http-429", "reset", "malformed_json", "missing_fields"):
        assert _endpoint(stub, provider) in line  # names the endpoint
    else:
        assert ("bge-m3" if provider == "openai" else "text-embedding-v4") in line
    _good_run_succeeds(capsys, stub, corpus)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_server_that_never_answers_fails_within_the_retry_budget(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
    provider: str,
) -> None:
    _use(monkeypatch, tmp_path, stub, provider)
    monkeypatch.setenv("RAG_EMBEDDINGS__MAX_RETRIES", "4")
    monkeypatch.setenv("RAG_EMBEDDINGS__TIMEOUT", "0.5")
    monkeypatch.setenv("RAG_EMBEDDINGS__CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("RAG_EMBEDDINGS__RETRY_BUDGET", "2")
    corpus = write_corpus(tmp_path / "corpus")
    stub.fault_next("hang", times=20)
    assert main(["ingest", str(corpus)]) == 1
    line = _error_line(capsys, stub)
    assert "retry budget of 2 s (embeddings.retry_budget)" in line, line
    assert "no answer within" in line and _endpoint(stub, provider) in line
    # Fewer attempts than retries allow: the budget stopped them, not max_retries.
    assert 2 <= len(stub.embedding_requests()) < 5
    _good_run_succeeds(capsys, stub, corpus)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_vectors_of_another_size_than_the_collection_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
    provider: str,
) -> None:
    # No dimension configured: the first ingest probes it, later runs take it from the
    # collection's fingerprint.
    _use(monkeypatch, tmp_path, stub, provider, dimensions=False)
    model = "bge-m3" if provider == "openai" else "text-embedding-v4"
    corpus = write_corpus(tmp_path / "corpus")
    if provider == "dashscope":  # a known model: the dimension is its documented one
        monkeypatch.setenv("RAG_EMBEDDINGS__DIMENSIONS", "8")
    assert main(["ingest", str(corpus)]) == 0
    capsys.readouterr()
    (corpus / "new.md").write_text("# 新说明\n\n发票在订单完成后可申请。", encoding="utf-8")
    stub.fault_next("wrong_dimension", times=20)
    assert main(["ingest", str(corpus)]) == 1
    line = _error_line(capsys, stub)
    fingerprint = f"{provider}:{model}:8"
    assert f"vector 0 has 9 values, the collection holds 8 (fingerprint {fingerprint})" in line
    assert "--rebuild" in line
    # A question embedded at the wrong size is refused too, before the store sees it.
    assert main(["search", "退货运费"]) == 1
    assert "vector 0 has 9 values" in _error_line(capsys, stub)
    stub.reset()
    assert main(["ingest", str(corpus)]) == 0
    assert "1 chunks added" in capsys.readouterr().out  # new.md, embedded at last
    assert main(["search", "发票"]) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_nan_query_vector_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
    provider: str,
) -> None:
    _use(monkeypatch, tmp_path, stub, provider)
    assert main(["ingest", str(write_corpus(tmp_path / "corpus"))]) == 0
    capsys.readouterr()
    stub.fault_next("nan")
    assert main(["search", "退货运费"]) == 1
    assert "vector 0 has a NaN value" in _error_line(capsys, stub)


def test_the_dashscope_sdk_logs_no_traceback_unless_debugging(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stub: ModelServer,
) -> None:
    _use(monkeypatch, tmp_path, stub, "dashscope")
    corpus = write_corpus(tmp_path / "corpus")
    caplog.set_level(logging.WARNING)
    stub.fault_next("malformed_json", times=20)
    assert main(["ingest", str(corpus)]) == 1
    assert not [r for r in caplog.records if r.name.startswith("dashscope") and r.exc_info]
    caplog.set_level(logging.DEBUG, logger="dashscope")
    assert main(["ingest", str(corpus)]) == 1
    assert [r for r in caplog.records if r.name.startswith("dashscope") and r.exc_info]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("malformed_json", "the chat model API answered with malformed JSON"),
        ("missing_fields", "the chat model API answered without the expected fields"),
    ],
)
def test_a_malformed_chat_reply_is_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub: ModelServer,
    fault: str,
    message: str,
) -> None:
    _use(monkeypatch, tmp_path, stub, "openai")
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")  # only the chat model is remote
    monkeypatch.setenv("RAG_LLM__PROVIDER", "openai")
    monkeypatch.setenv("RAG_LLM__FALLBACK", "error")  # the error itself (fallbacks: test_fallback)
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.3")
    assert main(["ingest", str(write_corpus(tmp_path / "corpus"))]) == 0
    capsys.readouterr()
    stub.fault_next(fault)
    assert main(["ask", "不满99元运费多少钱"]) == 1
    assert message in _error_line(capsys, stub)
    assert main(["ask", "不满99元运费多少钱"]) == 0
