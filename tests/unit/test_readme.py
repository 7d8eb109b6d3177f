"""The README's settings table lists every setting of ``Settings`` and nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, BaseModel, create_model

from rag_pipeline.config import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Configuration"
DELIMITER = "__"
# An environment variable name as written in a table cell: RAG_..., or a provider key.
NAME = re.compile(r"\b(?:RAG_[A-Z0-9_]*[A-Z0-9]|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")


def _section(model: Any) -> type[BaseModel] | None:
    """The nested settings model a field holds, or None for a plain value."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


def _aliases(alias: object) -> list[str]:
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return []


def env_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> dict[str, list[str]]:
    """Every setting's environment variable (walking nested sections recursively), mapped to
    all the names the environment may use for it (the first one is the documented one)."""
    names: dict[str, list[str]] = {}
    for field_name, field in model.model_fields.items():
        nested = _section(field.annotation)
        if nested is not None:
            names.update(env_names(nested, f"{prefix}{field_name.upper()}{DELIMITER}"))
            continue
        aliases = _aliases(field.validation_alias) if prefix == ENV_PREFIX else []
        canonical = aliases[0] if aliases else f"{prefix}{field_name.upper()}"
        names[canonical] = [canonical, *aliases[1:]]
    return names


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in the README's configuration section."""
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    rows = []
    for line in section.splitlines():
        line = line.strip()
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def missing_and_stale(model: type[BaseModel], text: str) -> tuple[list[str], list[str]]:
    """Settings without a row, and names in the table that are no setting: any name in a
    row's first cell, and any ``RAG_...`` name anywhere in the table."""
    names = env_names(model)
    known = {alias for aliases in names.values() for alias in aliases}
    rows = table_rows(text)
    documented = {name for row in rows for name in NAME.findall(row[0])}
    mentioned = {
        name
        for row in rows
        for cell in row
        for name in NAME.findall(cell)
        if name.startswith(ENV_PREFIX)
    }
    missing = sorted(set(names) - documented)
    stale = sorted((documented | mentioned) - known)
    return missing, stale


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_walk_finds_every_section_and_the_provider_keys() -> None:
    names = env_names(Settings)
    assert "RAG_RETRIEVER__K" in names and "RAG_DATA_DIR" in names
    assert names["DASHSCOPE_API_KEY"] == ["DASHSCOPE_API_KEY", "RAG_DASHSCOPE_API_KEY"]
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL"} <= set(names)
    sections = {name.split(DELIMITER)[0] for name in names if DELIMITER in name}
    nested = {
        f"{ENV_PREFIX}{field_name.upper()}"
        for field_name, field in Settings.model_fields.items()
        if _section(field.annotation) is not None
    }
    assert sections == nested and {"RAG_RETRIEVER", "RAG_STORE", "RAG_LLM"} <= nested


def test_every_setting_has_a_row_and_every_row_is_a_setting(readme: str) -> None:
    missing, stale = missing_and_stale(Settings, readme)
    assert missing == [], f"settings without a row in the README's {SECTION} table: {missing}"
    assert stale == [], f"names in the README's {SECTION} table that are no setting: {stale}"


def test_each_setting_has_exactly_one_row(readme: str) -> None:
    names = env_names(Settings)
    first_cells = [NAME.findall(row[0]) for row in table_rows(readme)]
    counts = {name: sum(name in cell for cell in first_cells) for name in names}
    assert {name: n for name, n in counts.items() if n != 1} == {}
    assert all(len(cell) <= 1 for cell in first_cells), "one setting per row"


def test_a_new_field_or_a_stale_row_is_caught(readme: str) -> None:
    # A new nested field (and a new section) without README rows fails the check.
    extra_section = create_model("ExtraSection", depth=(int, 1))
    retriever = create_model(
        "Retriever", __base__=Settings.model_fields["retriever"].annotation, brand_new=(int, 1)
    )
    grown = create_model(
        "Grown", __base__=Settings, retriever=(retriever, ...), extra=(extra_section, ...)
    )
    missing, stale = missing_and_stale(grown, readme)
    assert missing == ["RAG_EXTRA__DEPTH", "RAG_RETRIEVER__BRAND_NEW"] and stale == []
    # A row for a setting that no longer exists fails it too.
    row = "| `RAG_RETRIEVER__GONE` | `1` | removed long ago |\n"
    edited = readme.replace("| `RAG_RETRIEVER__K` |", row + "| `RAG_RETRIEVER__K` |", 1)
    assert missing_and_stale(Settings, edited) == ([], ["RAG_RETRIEVER__GONE"])
