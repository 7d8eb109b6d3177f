"""The assertion helpers of rag_pipeline.testing: what passes, and what a failure says."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from rag_pipeline.chain import Answer, Source
from rag_pipeline.testing import assert_answers, assert_no_model_call, assert_refused
from rag_pipeline.testing.model_api import ModelServer, RecordedRequest

REFUND = Source(number=1, source="docs/refund-policy.md", score=0.91, content="7天内可退款")
SHIPPING = Source(number=2, source="docs/shipping.md", score=0.42, content="满99元包邮")


def answer(text: str, *, cited: list[Source], context: list[Source]) -> Answer:
    return Answer("怎么退款", "怎么退款", text, False, cited, context)


def refusal() -> Answer:
    return Answer("天气", "天气", "抱歉，已为您转人工客服。", True, [], [SHIPPING])


def failure(check: Callable[[], None]) -> str:
    with pytest.raises(AssertionError) as e:
        check()
    return str(e.value)


def test_assert_answers_passes_on_text_and_cited_file() -> None:
    given = answer("签收后7天内可退款[1]。", cited=[REFUND], context=[REFUND, SHIPPING])
    assert_answers(given, contains="7天", cites="refund-policy.md")
    assert_answers(given, contains=["7天", "退款"], cites=["docs/refund-policy.md"])
    assert_answers(given)  # answered at all


def test_a_refusal_is_not_an_answer() -> None:
    message = failure(lambda: assert_answers(refusal(), contains="7天"))
    assert message.startswith("expected an answer, the bot refused (handed over):")
    assert "'抱歉，已为您转人工客服。'" in message
    assert "cites:     (none)" in message and "[2] docs/shipping.md (score 0.420)" in message


def test_missing_text_names_what_is_missing_and_shows_the_answer() -> None:
    given = answer("退款请联系客服[1]。", cited=[REFUND], context=[REFUND])
    message = failure(lambda: assert_answers(given, contains=["7天", "退款"]))
    assert message.splitlines()[0] == "expected the answer to contain '7天':"
    assert "answer:    '退款请联系客服[1]。'" in message


def test_an_uncited_file_that_was_retrieved_gets_a_hint() -> None:
    given = answer("满99元包邮[2]。", cited=[SHIPPING], context=[REFUND, SHIPPING])
    message = failure(lambda: assert_answers(given, cites="refund-policy.md"))
    assert message.splitlines()[0] == "expected the answer to cite 'refund-policy.md':"
    assert "cites:     [2] docs/shipping.md" in message
    assert "it was retrieved but not cited" in message


def test_a_file_never_retrieved_gets_no_hint_and_a_name_must_match_whole() -> None:
    given = answer("满99元包邮[1]。", cited=[SHIPPING], context=[SHIPPING])
    message = failure(lambda: assert_answers(given, cites="policy.md"))  # not refund-policy.md
    assert "retrieved but not cited" not in message
    assert "retrieved: [2] docs/shipping.md (score 0.420)" in message


def test_assert_refused() -> None:
    assert_refused(refusal())
    given = answer("签收后7天内可退款[1]。", cited=[REFUND], context=[REFUND])
    message = failure(lambda: assert_refused(given))
    assert message.splitlines()[0] == "expected a refusal (hand-over), got an answer:"
    assert "[1] docs/refund-policy.md" in message


def test_assert_no_model_call_lists_the_calls_made() -> None:
    server = ModelServer()  # never started: requests are recorded by hand below
    assert_no_model_call(server)
    chat = RecordedRequest(
        "POST",
        "/v1/chat/completions",
        {},
        {"model": "qwen-plus", "messages": [{"role": "user", "content": "明天天气怎么样"}]},
    )
    embedding = RecordedRequest("POST", "/v1/embeddings", {}, {"model": "e", "input": "x"})
    server._record(embedding)
    assert_no_model_call(server)  # an embedding request is not a chat call
    for _ in range(4):
        server._record(chat)
    message = failure(lambda: assert_no_model_call(server))
    assert message.splitlines()[0] == "expected no chat request to the model server, got 4:"
    assert re.search(r"POST /v1/chat/completions model='qwen-plus' '明天天气怎么样'", message)
    assert message.endswith("... and 1 more")
    message = failure(lambda: assert_no_model_call(server, "embeddings"))
    assert message.splitlines()[0] == "expected no embeddings request to the model server, got 1:"
