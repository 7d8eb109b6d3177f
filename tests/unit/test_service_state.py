"""ServiceState over an ingested in-memory collection: the snapshot, per-request retrievers
(k, filter, a configured reranker kept), and the app's OpenAPI schema."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever

from rag_pipeline.indexing import ingest
from rag_pipeline.llms import EXTRACT_NOTE_EN, EXTRACT_NOTE_ZH
from rag_pipeline.retrieval import HybridRetriever
from rag_pipeline.service import create_app
from rag_pipeline.service.answers import assistant_for, request_retriever
from rag_pipeline.service.state import ServiceState
from tests.helpers import memory_settings, write_corpus


def loaded(tmp_path: Path, **overrides: Any) -> ServiceState:
    retriever = {"score_threshold": 0.3, **overrides.pop("retriever", {})}
    settings = memory_settings(tmp_path / "data", retriever=retriever, **overrides)
    ingest([write_corpus(tmp_path / "corpus")], settings)
    state = ServiceState(settings)
    state.load()
    return state


def test_the_snapshot_answers_without_the_cli_note(tmp_path: Path) -> None:
    state = loaded(tmp_path)
    snapshot = state.snapshot
    assert state.ready.is_set() and state.load_error is None
    assert snapshot.assistant is state.assistant and snapshot.keyword is not None
    answer = state.assistant.ask("不满99元运费多少钱")
    assert "运费8元" in answer.answer and not answer.refused
    assert EXTRACT_NOTE_ZH not in answer.answer and EXTRACT_NOTE_EN not in answer.answer
    state.refresh()
    assert state.snapshot is not snapshot  # a request holding the old one keeps it


def test_a_request_retriever_shares_the_keyword_index(tmp_path: Path) -> None:
    state = loaded(tmp_path, retriever={"filter": {"file_type": {"$ne": "pdf"}}})
    snapshot = state.snapshot
    assert assistant_for(snapshot, None, None) is snapshot.assistant
    retriever = request_retriever(snapshot, 1, {"source": {"$eq": "returns.md"}})
    assert isinstance(retriever, HybridRetriever) and retriever.k == 1
    assert retriever.keyword.searcher is snapshot.keyword  # not loaded again
    assert retriever.dense.filter == {
        "$and": [{"file_type": {"$ne": "pdf"}}, {"source": {"$eq": "returns.md"}}]
    }  # the configured filter still holds: a request narrows, never widens
    docs = retriever.invoke("退货运费")
    assert [d.metadata["source"] for d in docs] == ["returns.md"]
    assert snapshot.assistant.retriever.k == 6  # the shared one is untouched


def test_a_request_retriever_keeps_the_configured_reranker(tmp_path: Path) -> None:
    state = loaded(
        tmp_path,
        rerank={"provider": "http", "base_url": "http://127.0.0.1:9/rerank", "candidates": 12},
    )
    snapshot = state.snapshot
    shared = snapshot.assistant.retriever
    assert isinstance(shared, ContextualCompressionRetriever)
    retriever = request_retriever(snapshot, 2, None)
    assert isinstance(retriever, ContextualCompressionRetriever)
    assert retriever.base_compressor.top_n == 2  # type: ignore[attr-defined]
    assert type(retriever.base_compressor) is type(shared.base_compressor)
    assert retriever.base_retriever.k == 12  # type: ignore[attr-defined]


def test_the_openapi_schema_documents_the_routes(tmp_path: Path) -> None:
    schema = create_app(memory_settings(tmp_path / "data")).openapi()
    paths = set(schema["paths"])
    assert {"/healthz", "/readyz", "/v1/ask", "/v1/search", "/v1/models"} <= paths
    assert "/v1/chat/completions" in paths
    assert "ChatCompletionRequest" in schema["components"]["schemas"]


def test_a_write_by_another_process_gives_a_new_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_pipeline.service import state as state_module

    state = loaded(tmp_path)
    first = state.snapshot
    monkeypatch.setattr(state_module, "CHANGE_CHECK_S", 0.0)
    assert state.snapshot is first  # nothing changed: kept
    # Another writer (here: ingest with its own bookkeeping, as a cron job would run it).
    extra = write_corpus(
        tmp_path / "more", {"invoice.md": "# 发票\n\n电子发票在订单完成后24小时内开具。"}
    )
    ingest([extra], state.settings)
    deadline = time.monotonic() + 30  # rebuilt in the background: requests never wait for it
    while (second := state.snapshot) is first:
        assert time.monotonic() < deadline, "the write was not followed"
        time.sleep(0.02)
    assert second.changes > first.changes
    answer = second.assistant.ask("电子发票什么时候开具")
    assert "24小时" in answer.answer and not answer.refused
    assert "24小时" not in first.assistant.ask("电子发票什么时候开具").answer  # the old one
    with state.write_lock:  # an upload of this process under way: no rebuild under it
        ingest(
            [write_corpus(tmp_path / "third", {"x.md": "# 积分\n\n积分一年有效。"})], state.settings
        )
        for _ in range(20):
            assert state.snapshot is second
            time.sleep(0.01)
