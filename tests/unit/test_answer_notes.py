"""What the command line adds to an answer: the extractive note (after an extractive answer,
once per chat session, never in JSON), and how a stream that breaks off ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever

from rag_pipeline.assistant import (
    INTERRUPTED_NOTICE_EN,
    INTERRUPTED_NOTICE_ZH,
    Assistant,
    extractive_note,
    without_note,
)
from rag_pipeline.chain import Answer, answer_prompt, read_prompt
from rag_pipeline.errors import ProviderError
from rag_pipeline.indexing import ingest
from rag_pipeline.llms import EXTRACT_NOTE_EN, EXTRACT_NOTE_ZH
from tests.helpers import fake_settings, run_cli, use_env, write_corpus

QUESTION = "不满99元运费多少"


@pytest.fixture
def extractive_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The small corpus ingested; ``rag`` commands use it with the extractive model."""
    settings = fake_settings(
        tmp_path / "data", retriever={"search_type": "similarity", "score_threshold": 0.1}
    )
    ingest([write_corpus(tmp_path / "corpus")], settings)
    use_env(monkeypatch, settings)
    monkeypatch.setenv("RAG_RETRIEVER__SEARCH_TYPE", "similarity")
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.1")


def test_the_note_follows_an_extractive_answer_once(
    capsys: pytest.CaptureFixture[str], extractive_cli: None
) -> None:
    code, out, _ = run_cli(capsys, "ask", QUESTION)
    assert code == 0 and out.count(EXTRACT_NOTE_ZH) == 1
    answer, _, sources = out.partition("来源 / Sources:")
    assert answer.rstrip().endswith(EXTRACT_NOTE_ZH) and "[1]" in answer and sources


def test_json_answers_say_generated_false_instead_of_the_note(
    capsys: pytest.CaptureFixture[str], extractive_cli: None
) -> None:
    code, out, _ = run_cli(capsys, "ask", QUESTION, "--json")
    data = json.loads(out)
    assert code == 0 and data["generated"] is False and data["degraded"] is False
    assert "抽取式回答" not in data["answer"] and "[1]" in data["answer"]


def test_the_note_can_be_turned_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, extractive_cli: None
) -> None:
    monkeypatch.setenv("RAG_LLM__EXTRACTIVE_NOTE", "false")
    code, out, _ = run_cli(capsys, "ask", QUESTION)
    assert code == 0 and "抽取式回答" not in out and "来源 / Sources:" in out


def test_a_refusal_has_no_note(capsys: pytest.CaptureFixture[str], extractive_cli: None) -> None:
    code, out, _ = run_cli(capsys, "ask", "今天天气怎么样", "--threshold", "0.99")
    assert code == 0 and out.startswith("抱歉") and "抽取式回答" not in out


def test_chat_shows_the_note_once_per_session(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, extractive_cli: None
) -> None:
    lines = iter([QUESTION, "退货运费由谁承担", "/reset", "支持哪些支付方式", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    code, out, _ = run_cli(capsys, "chat")
    assert code == 0 and out.count("客服> ") == 3
    assert out.count(EXTRACT_NOTE_ZH) == 1
    first, _, rest = out.partition(EXTRACT_NOTE_ZH)
    assert first.count("客服> ") == 1 and "客服> " in rest  # after the first answer


def test_the_note_is_in_the_question_language() -> None:
    assert extractive_note("How long does shipping take?") == EXTRACT_NOTE_EN
    assert extractive_note("运费多少") == EXTRACT_NOTE_ZH
    assert without_note(f"答案 [1]\n\n{EXTRACT_NOTE_ZH}") == "答案 [1]"
    assert without_note("答案 [1]") == "答案 [1]"


SHIPPING = Document(
    id="s1",
    page_content="订单满99元包邮，不满99元收取运费8元。",
    metadata={"source": "shipping.txt", "score": 0.9},
)


class OneDocRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [SHIPPING]


class BreaksOffChatModel(BaseChatModel):
    """Streams two pieces, then the connection times out."""

    @property
    def _llm_type(self) -> str:
        return "breaks-off"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in ("不满99元", "收取运费"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        request = httpx.Request("POST", "http://chat.invalid/v1/chat/completions")
        raise openai.APITimeoutError(request=request)


def _assistant(fallback: Any) -> Assistant:
    prompt = answer_prompt(read_prompt(None, "system.md"), read_prompt(None, "question.md"))
    return Assistant(
        OneDocRetriever(), BreaksOffChatModel(), prompt, refusal="抱歉。", fallback=fallback
    )


@pytest.mark.parametrize("fallback", ["extractive", "refuse"])
def test_a_stream_that_breaks_off_ends_with_the_notice(fallback: str) -> None:
    *pieces, answer = list(_assistant(fallback).stream(QUESTION))
    assert pieces[:2] == ["不满99元", "收取运费"]
    assert pieces[2] == "\n" + INTERRUPTED_NOTICE_ZH and len(pieces) == 3
    assert isinstance(answer, Answer) and answer.degraded and answer.generated
    assert answer.answer == "".join(str(p) for p in pieces)
    assert "did not answer within the timeout" in (answer.degraded_reason or "")


def test_an_english_stream_that_breaks_off_ends_in_english() -> None:
    *pieces, _ = list(_assistant("extractive").stream("shipping fee under 99"))
    assert pieces[-1] == "\n" + INTERRUPTED_NOTICE_EN


def test_with_fallback_error_a_broken_stream_raises() -> None:
    stream = _assistant("error").stream(QUESTION)
    assert [next(stream), next(stream)] == ["不满99元", "收取运费"]
    with pytest.raises(ProviderError, match="did not answer within the timeout"):
        next(stream)


def test_from_settings_builds_the_branded_prompt(tmp_path: Path) -> None:
    settings = fake_settings(
        tmp_path / "data",
        prompts={"assistant_name": "客服小禾", "company": "小禾优选"},
        llm={"fallback": "refuse"},
    )
    ingest([write_corpus(tmp_path / "corpus")], settings)
    assistant = Assistant.from_settings(settings)
    system = assistant.prompt.format_messages(context="", question="你是谁")[0]
    assert "你是「小禾优选」的在线客服小禾" in str(system.content)
    assert assistant.fallback == "refuse"
