"""The reranker stage over real HTTP: DashScope's rerank API and the common /rerank format,
against the model-API stub (which scores by shared character bigrams, ``stub_rerank_score``)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.assistant import Assistant
from rag_pipeline.cli import main
from rag_pipeline.config import Settings
from rag_pipeline.errors import ProviderError
from rag_pipeline.indexing import ingest
from rag_pipeline.reranking import HTTPReranker
from rag_pipeline.testing.model_api import ModelServer, stub_rerank_score
from tests.helpers import fake_settings, write_corpus
from tests.integration.test_eval_cli import _dataset

QUESTION = "退货运费谁承担"


@pytest.fixture
def stub(model_server: ModelServer) -> ModelServer:
    return model_server  # the plugin's: a fresh server for each test


def _settings(tmp_path: Path, stub: ModelServer, provider: str, **rerank: Any) -> Settings:
    urls = {"dashscope": stub.dashscope_base_url, "http": stub.base_url + "/rerank"}
    return fake_settings(
        tmp_path / "data",
        retriever={"score_threshold": 0.3, "k": 2},
        llm={"provider": "extractive"},  # the key below is for the reranker only
        rerank={
            "provider": provider,
            "base_url": urls[provider],
            "max_retries": 2,
            "model": "bge-reranker-v2-m3" if provider == "http" else None,
            "api_key": stub.api_key if provider == "http" else None,
            **rerank,
        },
        dashscope_api_key=stub.api_key,
    )


def _assistant(tmp_path: Path, settings: Settings) -> Assistant:
    ingest([write_corpus(tmp_path / "corpus")], settings)
    return Assistant.from_settings(settings)


@pytest.mark.parametrize("provider", ["dashscope", "http"])
def test_reranker_orders_the_context_and_keeps_k(
    tmp_path: Path, stub: ModelServer, provider: str
) -> None:
    assistant = _assistant(tmp_path, _settings(tmp_path, stub, provider, candidates=6))
    answer = assistant.ask(QUESTION)
    (request,) = stub.rerank_requests()
    body = request.body
    sent = body["documents"] if provider == "http" else body["input"]["documents"]
    query = body["query"] if provider == "http" else body["input"]["query"]
    assert query == QUESTION and 2 < len(sent) <= 6  # candidates go in, k come out
    assert request.headers["authorization"] == f"Bearer {stub.api_key}"
    expected = sorted(sent, key=lambda text: -stub_rerank_score(QUESTION, text))[:2]
    assert [s.content for s in answer.context] == expected
    for source in answer.context:
        assert source.rerank_score == pytest.approx(
            stub_rerank_score(QUESTION, source.content), abs=1e-4
        )
        assert 0 < source.score <= 1  # the retriever's relevance is kept beside it
    assert not answer.refused


def test_refused_question_never_reaches_the_reranker(tmp_path: Path, stub: ModelServer) -> None:
    settings = _settings(tmp_path, stub, "dashscope")
    settings.retriever.score_threshold = 0.99
    answer = _assistant(tmp_path, settings).ask("量子计算机的原理是什么")
    assert answer.refused and stub.rerank_requests() == []


def test_min_score_drops_what_the_reranker_rejects(tmp_path: Path, stub: ModelServer) -> None:
    settings = _settings(tmp_path, stub, "dashscope", min_score=0.99)
    answer = _assistant(tmp_path, settings).ask(QUESTION)
    assert answer.refused and len(stub.rerank_requests()) == 1


def test_dashscope_rerank_retries_5xx_then_answers(tmp_path: Path, stub: ModelServer) -> None:
    assistant = _assistant(tmp_path, _settings(tmp_path, stub, "dashscope"))
    stub.fail_next(503, times=2)
    assert not assistant.ask(QUESTION).refused
    assert len(stub.rerank_requests()) == 3


def test_dashscope_rerank_gives_up_with_a_clear_error(tmp_path: Path, stub: ModelServer) -> None:
    assistant = _assistant(tmp_path, _settings(tmp_path, stub, "dashscope", max_retries=1))
    stub.fail_next(503, times=5)
    with pytest.raises(ProviderError, match="DashScope rerank failed after 1 retries"):
        assistant.ask(QUESTION)


@pytest.mark.parametrize("provider", ["dashscope", "http"])
def test_rejected_key_names_the_variable(tmp_path: Path, stub: ModelServer, provider: str) -> None:
    settings = _settings(tmp_path, stub, provider)
    settings.dashscope_api_key = "sk-wrong"  # type: ignore[assignment]
    settings.rerank.api_key = "sk-wrong"  # type: ignore[assignment]
    assistant = _assistant(tmp_path, settings)
    variable = "DASHSCOPE_API_KEY" if provider == "dashscope" else "RAG_RERANK__API_KEY"
    with pytest.raises(ProviderError, match=f"401.*{variable}") as error:
        assistant.ask(QUESTION)
    assert "sk-wrong" not in str(error.value)


def test_http_reranker_unreachable_is_a_provider_error() -> None:
    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reranker = HTTPReranker(url=f"http://127.0.0.1:{port}/rerank", max_retries=1)
    with pytest.raises(ProviderError, match=f"127.0.0.1:{port}/rerank failed after 1 retries"):
        reranker.score(QUESTION, ["运费"])


def test_eval_compares_a_reranker(
    tmp_path: Path,
    stub: ModelServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("DASHSCOPE_API_KEY", stub.api_key)
    monkeypatch.setenv("RAG_RERANK__BASE_URL", stub.dashscope_base_url)
    monkeypatch.setenv("RAG_LLM__PROVIDER", "extractive")
    data = _dataset(tmp_path / "tiny")
    args = ["eval", str(data), "--data-dir", str(tmp_path / "scratch"), "--json"]
    assert main([*args, "--compare", "hybrid,rerank:dashscope"]) == 0
    result = json.loads(capsys.readouterr().out)
    reranked = result["compare"]["rerank:dashscope"]
    assert reranked["n_queries"] == result["n_queries"] == 4
    assert len(stub.rerank_requests()) == 4  # the default hybrid run used no reranker
    # The stub reranker scores by shared bigrams; on these questions that finds every passage.
    assert reranked["hit@1"] == 1.0
