"""The assistant's name and company are settings filled into the packaged system prompt;
nothing else in a system prompt becomes a template variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.chain import answer_prompt, read_prompt
from rag_pipeline.config import DEFAULT_ASSISTANT_NAME, load_settings


def _system(**branding: str | None) -> str:
    prompt = answer_prompt(
        read_prompt(None, "system.md"), read_prompt(None, "question.md"), **branding
    )
    system, _ = prompt.format_messages(context="[1] 来源：a.md\n文本", question="你是谁")
    assert isinstance(system.content, str)
    return system.content


def test_the_default_prompt_is_neutral() -> None:
    text = _system()
    assert text.startswith(f"你是在线{DEFAULT_ASSISTANT_NAME}，")
    assert "小禾优选" not in text and "「" not in text.splitlines()[0]
    assert "{" not in text and "}" not in text  # every variable was filled in


def test_name_and_company_appear_in_the_rendered_prompt() -> None:
    text = _system(assistant_name="客服小禾", company="小禾优选")
    assert text.startswith("你是「小禾优选」的在线客服小禾，")
    assert "说明你是「小禾优选」的客服小禾" in text


def test_branding_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_PROMPTS__ASSISTANT_NAME", "小助手")
    monkeypatch.setenv("RAG_PROMPTS__COMPANY", "示例商城")
    prompts = load_settings().prompts
    assert (prompts.assistant_name, prompts.company) == ("小助手", "示例商城")
    assert "「示例商城」的在线小助手" in _system(
        assistant_name=prompts.assistant_name, company=prompts.company
    )


def test_an_empty_company_names_none() -> None:
    assert _system(company="") == _system()


def test_own_system_prompt_may_use_the_variables_and_keep_other_braces(tmp_path: Path) -> None:
    own = tmp_path / "system.md"
    own.write_text("我是{assistant_name}（{company}）。输出 {json} 与 {{x}}。", encoding="utf-8")
    prompt = answer_prompt(
        read_prompt(own, "system.md"), "{question}", assistant_name="阿福", company="某店"
    )
    assert set(prompt.input_variables) == {"question"}
    system, _ = prompt.format_messages(question="问")
    assert system.content == "我是阿福（某店）。输出 {json} 与 {{x}}。"


def test_a_value_with_braces_stays_literal() -> None:
    prompt = answer_prompt("你是{assistant_name}", "{question}", assistant_name="{question}")
    assert set(prompt.input_variables) == {"question"}
    assert prompt.format_messages(question="问")[0].content == "你是{question}"
