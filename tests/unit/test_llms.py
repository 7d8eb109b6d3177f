import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_tests.unit_tests import ChatModelUnitTests

from rag_pipeline.config import Settings
from rag_pipeline.errors import MissingAPIKeyError
from rag_pipeline.llms import ExtractiveChatModel, build_chat_model, parse_context

CONTEXT = (
    "<context>\n"
    "[1] 来源：shipping.md｜运费\n订单满99元包邮。不满99元收取运费8元。新疆、西藏另计。\n\n"
    "[2] 来源：faq.csv\n问：怎么开发票\n答：在订单详情页点击“申请发票”即可。\n"
    "</context>\n\n用户问题：{question}"
)


class TestExtractiveStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ExtractiveChatModel]:
        return ExtractiveChatModel

    @property
    def chat_model_params(self) -> dict:
        return {}


def test_parse_context_finds_numbered_passages_and_question() -> None:
    passages, question = parse_context(CONTEXT.format(question="运费多少钱"))
    assert [n for n, _ in passages] == [1, 2]
    assert passages[0][1].startswith("订单满99元包邮")
    assert question == "运费多少钱"


def test_extractive_answer_quotes_relevant_sentences_with_markers() -> None:
    model = ExtractiveChatModel()
    messages = [SystemMessage("规则"), HumanMessage(CONTEXT.format(question="不满99元运费多少"))]
    answer = model.invoke(messages).content
    assert "不满99元收取运费8元。 [1]" in answer
    # The note that this is an extract is the caller's to show, not part of the answer.
    assert "抽取式回答" not in answer and "DASHSCOPE_API_KEY" not in answer


def test_faq_passage_is_answered_with_its_whole_answer() -> None:
    answer = ExtractiveChatModel().invoke([HumanMessage(CONTEXT.format(question="发票怎么开"))])
    assert "在订单详情页点击“申请发票”即可。 [2]" in answer.content


def test_english_question_gets_an_english_extract_without_the_note() -> None:
    text = (
        "<context>\n[1] 来源：en.md\nWe ship to 30 countries. Returns take 14 days.\n</context>\n"
    )
    answer = ExtractiveChatModel().invoke(
        [HumanMessage(text + "Question: how long do returns take")]
    )
    assert "Returns take 14 days." in answer.content
    assert "Extractive answer" not in answer.content


def test_streaming_yields_the_same_text() -> None:
    model = ExtractiveChatModel()
    messages = [HumanMessage(CONTEXT.format(question="运费"))]
    pieces = [chunk.content for chunk in model.stream(messages)]
    assert len(pieces) > 1 and "".join(pieces) == model.invoke(messages).content


def test_chat_factory_picks_provider_and_checks_keys() -> None:
    assert isinstance(build_chat_model(Settings()), ExtractiveChatModel)
    with pytest.raises(MissingAPIKeyError, match="DASHSCOPE_API_KEY"):
        build_chat_model(Settings(llm={"provider": "dashscope"}))
    model = build_chat_model(Settings(dashscope_api_key="sk-x"))
    assert model.model_name == "qwen-plus"  # type: ignore[attr-defined]
    assert "dashscope" in str(model.openai_api_base)  # type: ignore[attr-defined]
