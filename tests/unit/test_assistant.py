"""The assistant: ask / stream over a retriever and a chat model, errors of the chat API
made readable, and ``from_settings`` on an in-memory collection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever

from rag_pipeline.assistant import Assistant
from rag_pipeline.chain import Answer, answer_prompt, read_prompt
from rag_pipeline.errors import EmptyIndexError, ProviderError
from rag_pipeline.indexing import ingest
from rag_pipeline.llms import ExtractiveChatModel
from tests.helpers import memory_settings, write_corpus

SHIPPING = Document(
    id="s1",
    page_content="订单满99元包邮，不满99元收取运费8元。偏远地区运费另计。",
    metadata={"source": "shipping.txt", "score": 0.9},
)
RETURNS = Document(
    id="r1",
    page_content="签收后7天内可申请无理由退货，退货运费由买家承担。",
    metadata={"source": "returns.md", "score": 0.8},
)
FAQ = Document(
    id="f1",
    page_content="问：支持哪些支付方式（可以用什么付款）\n答：支持微信支付、支付宝和银行卡。",
    metadata={
        "source": "faq.csv",
        "doc_type": "faq",
        "faq_question": "支持哪些支付方式",
        "faq_alternatives": "可以用什么付款",
        "faq_answer": "支持微信支付、支付宝和银行卡。",
    },
)


class FakeRetriever(BaseRetriever):
    """Documents by keyword: each document is returned when the query shares a word with it."""

    docs: list[Document] = []
    queries: list[str] = []

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.queries.append(query)
        words = ("运费", "包邮", "退货", "支付", "付款")
        return [
            Document(id=d.id, page_content=d.page_content, metadata=dict(d.metadata))
            for d in self.docs
            if any(w in query and w in d.page_content for w in words)
        ]


class FailingChatModel(BaseChatModel):
    """A chat model whose API call raises ``error`` (and which counts the calls)."""

    error: Any = None
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        raise self.error

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        raise self.error


def _assistant(model: BaseChatModel | None = None, **kwargs: Any) -> Assistant:
    retriever = FakeRetriever(docs=[SHIPPING, RETURNS, FAQ], queries=[])
    prompt = answer_prompt(read_prompt(None, "system.md"), read_prompt(None, "question.md"))
    return Assistant(
        retriever, model or ExtractiveChatModel(), prompt, refusal="抱歉，没有找到。", **kwargs
    )


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://chat.invalid/v1/chat/completions")


def test_ask_answers_from_the_retrieved_chunks_with_citations() -> None:
    answer = _assistant().ask("不满99元运费多少")
    assert not answer.refused
    assert "不满99元收取运费8元" in answer.answer
    assert "shipping.txt" in {s.source for s in answer.sources}
    assert all(f"[{s.number}]" in answer.answer for s in answer.sources)


def test_ask_refuses_without_calling_the_model() -> None:
    model = FailingChatModel(error=RuntimeError("must not be called"))
    answer = _assistant(model).ask("今天天气怎么样")
    assert answer.refused and answer.answer == "抱歉，没有找到。" and answer.sources == []
    assert model.calls == 0


def test_follow_up_is_retrieved_with_the_previous_question() -> None:
    assistant = _assistant()
    answer = assistant.ask("那运费呢？", history=[("怎么退货", "签收后7天内可退 [1]")])
    assert answer.standalone_question == "怎么退货 那运费呢？"
    assert assistant.retriever.queries == ["怎么退货 那运费呢？"]  # type: ignore[attr-defined]


def test_stream_yields_pieces_then_the_answer() -> None:
    assistant = _assistant()
    parts = list(assistant.stream("不满99元运费多少"))
    *pieces, final = parts
    assert pieces and all(isinstance(p, str) for p in pieces)  # the short extract: one line
    assert isinstance(final, Answer)
    assert final.answer == "".join(pieces) == assistant.ask("不满99元运费多少").answer
    assert [s.source for s in final.sources] == [
        s.source for s in assistant.ask("不满99元运费多少").sources
    ]


def test_stream_of_a_refusal_is_the_refusal() -> None:
    parts = list(_assistant().stream("今天天气怎么样"))
    assert parts[0] == "抱歉，没有找到。"
    assert isinstance(parts[-1], Answer) and parts[-1].refused


def test_faq_question_is_answered_from_the_faq_without_the_model() -> None:
    model = FailingChatModel(error=RuntimeError("must not be called"))
    assistant = _assistant(model, faq_direct=0.8)
    assert assistant.ask("可以用什么付款").answer == "支持微信支付、支付宝和银行卡。 [1]"
    parts = list(assistant.stream("可以用什么付款"))
    assert parts[0] == "支持微信支付、支付宝和银行卡。 [1]" and len(parts) == 2
    assert model.calls == 0


def test_rejected_key_names_the_variable() -> None:
    error = openai.AuthenticationError(
        "Incorrect API key", response=httpx.Response(401, request=_request()), body=None
    )
    assistant = _assistant(FailingChatModel(error=error), key_variable="DASHSCOPE_API_KEY")
    with pytest.raises(ProviderError, match="HTTP 401.*check DASHSCOPE_API_KEY"):
        assistant.ask("运费多少")
    with pytest.raises(ProviderError, match="check DASHSCOPE_API_KEY"):
        list(assistant.stream("运费多少"))


def test_other_api_failures_are_provider_errors() -> None:
    status = openai.InternalServerError(
        "boom", response=httpx.Response(503, request=_request()), body=None
    )
    with pytest.raises(ProviderError, match="HTTP 503"):
        _assistant(FailingChatModel(error=status)).ask("运费多少")
    unreachable = openai.APIConnectionError(request=_request())
    with pytest.raises(ProviderError, match="unreachable"):
        _assistant(FailingChatModel(error=unreachable)).ask("运费多少")


def test_a_bug_is_not_disguised_as_a_provider_error() -> None:
    with pytest.raises(ZeroDivisionError):
        _assistant(FailingChatModel(error=ZeroDivisionError())).ask("运费多少")


def test_from_settings_answers_over_an_ingested_collection(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path / "data", retriever={"search_type": "similarity", "score_threshold": 0.1}
    )
    ingest([write_corpus(tmp_path / "corpus")], settings)
    assistant = Assistant.from_settings(settings)
    assert isinstance(assistant.model, ExtractiveChatModel)
    assert assistant.condense is None  # the documented rule, no model call
    assert assistant.refusal == settings.prompts.refusal
    answer = assistant.ask("退货运费由谁承担")
    assert not answer.refused and "returns.md" in {s.source for s in answer.sources}


def test_from_settings_before_ingest_says_ingest_first(tmp_path: Path) -> None:
    with pytest.raises(EmptyIndexError, match="ingest"):
        Assistant.from_settings(memory_settings(tmp_path / "data"))


def test_history_keeps_the_answer_without_the_fallback_or_cut_short_notice() -> None:
    from rag_pipeline.assistant import (
        FALLBACK_NOTICE_ZH,
        INTERRUPTED_NOTICE_EN,
        history_text,
    )
    from rag_pipeline.chain import Answer

    def answer(text: str) -> Answer:
        return Answer(question="q", standalone_question="q", answer=text, refused=False)

    assert history_text(answer(f"{FALLBACK_NOTICE_ZH}\n满99元包邮。 [1]")) == "满99元包邮。 [1]"
    assert history_text(answer(f"Free over 99 [1]\n{INTERRUPTED_NOTICE_EN}")) == "Free over 99 [1]"
    assert history_text(answer("满99元包邮。 [1]")) == "满99元包邮。 [1]"
