"""Settings for tests (rag_pipeline.testing.settings): nothing read from the environment, and
overrides that change one setting at a time, validated."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from rag_pipeline.config import Settings
from rag_pipeline.testing.settings import (
    FAKE_SCORE_THRESHOLD,
    fresh_collection,
    isolated_settings,
    override,
)


def test_nothing_comes_from_the_environment_or_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAG_RETRIEVER__K", "9")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-the-shell")
    (Path.cwd() / ".env").write_text("OPENAI_API_KEY=sk-dotenv\nRAG_STORE__MODE=memory\n")
    (Path.cwd() / "rag.toml").write_text("[split]\nchunk_size = 99\n")
    settings = isolated_settings(tmp_path)
    assert isinstance(settings, Settings)
    assert settings.retriever.k == 6 and settings.split.chunk_size == 250
    assert settings.store.mode == "persistent"
    assert settings.dashscope_api_key is None and settings.openai_api_key is None
    assert settings.llm_provider() == "extractive" and settings.embeddings.provider == "fake"
    assert settings.retriever.score_threshold == FAKE_SCORE_THRESHOLD
    # ... and neither does a copy with overrides.
    assert override(settings, retriever={"k": 2}).dashscope_api_key is None


def test_the_real_model_keeps_the_production_threshold(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, real_model=True)
    assert settings.embeddings.provider == "local"
    assert settings.retriever.score_threshold == Settings().retriever.score_threshold


def test_an_override_changes_only_what_it_names(tmp_path: Path) -> None:
    base = isolated_settings(tmp_path, retriever={"k": 3}, store={"collection": "shop"})
    changed = override(base, retriever={"search_type": "mmr"}, data_dir=str(tmp_path / "b"))
    assert changed.retriever.k == 3 and changed.retriever.search_type == "mmr"
    assert changed.retriever.score_threshold == FAKE_SCORE_THRESHOLD
    assert changed.store.collection == "shop" and changed.data_dir == tmp_path / "b"
    assert base.retriever.search_type == "hybrid"  # the original is untouched


def test_a_typo_or_a_bad_value_is_an_error(tmp_path: Path) -> None:
    base = isolated_settings(tmp_path)
    with pytest.raises(TypeError, match="unknown setting 'retreiver'"):
        override(base, retreiver={"k": 3})
    with pytest.raises(pydantic.ValidationError):
        override(base, retriever={"kk": 3})
    with pytest.raises(pydantic.ValidationError):
        override(base, store={"mode": "cloud"})


def test_fresh_collections_are_valid_and_distinct(tmp_path: Path) -> None:
    names = {fresh_collection() for _ in range(50)}
    assert len(names) == 50
    for name in list(names)[:3]:
        assert override(isolated_settings(tmp_path), store={"collection": name})
