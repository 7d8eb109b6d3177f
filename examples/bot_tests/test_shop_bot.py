"""The shop bot's behaviour, tested with rag_pipeline's pytest plugin (pip install
"rag-pipeline[testing]"): a real Chroma (a local folder, then a `chroma run` server), the chat
model played by a scripted server on 127.0.0.1, nothing from the internet."""

from pathlib import Path

import pytest
from shop_bot import ShopBot

from rag_pipeline import Assistant, Settings
from rag_pipeline.testing import ModelServer, assert_answers, assert_no_model_call, assert_refused


@pytest.fixture
def rag_corpus() -> Path:
    return Path(__file__).parent / "docs"  # what the `assistant` fixture ingests


@pytest.fixture
def rag_settings(rag_settings: Settings, model_server: ModelServer) -> Settings:
    return model_server.settings(rag_settings)  # the chat model is the scripted server


@pytest.mark.parametrize("rag_store", ["persistent", "chroma_server"])
def test_refund_from_the_policy_and_handover_for_the_weather(
    assistant: Assistant, model_server: ModelServer
) -> None:
    bot = ShopBot(assistant)
    model_server.answer("签收后7天内可以在“我的订单”中申请退款[1]。")
    assert_answers(bot.reply("怎么申请退款？"), contains="7天", cites="refund-policy.md")
    model_server.reset()  # forget the refund question's request
    assert_refused(bot.reply("明天天气怎么样？"))
    assert bot.handed_over
    assert_no_model_call(model_server)
