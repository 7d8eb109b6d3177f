"""The service layer's checks and the OpenAI messages -> question + history split."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.service.answers import (
    check_filter,
    check_question,
    check_session_id,
    new_answer_id,
    split_conversation,
)
from rag_pipeline.service.http_errors import ApiError
from rag_pipeline.service.state import NotReadyError, ServiceState
from tests.helpers import fake_settings


@pytest.fixture
def state(tmp_path: Path) -> ServiceState:
    return ServiceState(fake_settings(tmp_path / "data", serve={"max_question_chars": 10}))


def test_the_last_user_message_is_the_question_and_the_rest_the_history() -> None:
    question, history = split_conversation(
        [
            ("system", "rules"),
            ("assistant", "您好，请问有什么可以帮您？"),  # a greeting before any question
            ("user", "运费怎么算"),
            ("assistant", "满99元包邮 [1]"),
            ("user", "退货呢"),
            ("user", "七天内吗"),  # two questions in a row: the first has no answer
            ("assistant", "是的 [1]"),
            ("tool", "ignored"),
            ("user", "那偏远地区呢"),
        ]
    )
    assert question == "那偏远地区呢"
    assert history == [("运费怎么算", "满99元包邮 [1]"), ("退货呢", ""), ("七天内吗", "是的 [1]")]


def test_a_conversation_must_end_with_the_user() -> None:
    for turns in ([("user", "q"), ("assistant", "a")], [("system", "s")], []):
        with pytest.raises(ApiError) as caught:
            split_conversation(turns)
        assert caught.value.status == 422 and caught.value.param == "messages"


def test_questions_are_stripped_and_limited(state: ServiceState) -> None:
    assert check_question(state, "  运费怎么算 ") == "运费怎么算"
    with pytest.raises(ApiError, match=r"question: 11 characters, at most 10") as caught:
        check_question(state, "运" * 11)
    assert caught.value.status == 422 and caught.value.param == "question"
    with pytest.raises(ApiError, match="query: must not be empty"):
        check_question(state, " \n", "query")


def test_filters_are_checked_in_the_one_grammar() -> None:
    assert check_filter(None) is None and check_filter({}) is None
    assert check_filter({"source": "faq.csv"}) == {"source": {"$eq": "faq.csv"}}
    with pytest.raises(ApiError, match=r"^filter .*unknown operator '\$like'") as caught:
        check_filter({"page": {"$like": 2}})
    assert caught.value.status == 422 and caught.value.param == "filter"


def test_session_ids() -> None:
    assert check_session_id("widget-42") == "widget-42"
    assert len(check_session_id(None)) == 32
    with pytest.raises(ApiError) as caught:
        check_session_id("a b")
    assert caught.value.param == "session_id"
    assert len({new_answer_id() for _ in range(50)}) == 50


def test_a_state_not_loaded_says_so(state: ServiceState) -> None:
    with pytest.raises(NotReadyError, match="still loading"):
        _ = state.assistant
    assert state.model_id == "rag"


def test_the_model_id_is_the_collection_name(tmp_path: Path) -> None:
    shop = ServiceState(fake_settings(tmp_path / "data", store={"collection": "shop_faq"}))
    assert shop.model_id == "shop_faq"
