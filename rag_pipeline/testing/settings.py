"""Settings for tests: built from arguments only, and changed one setting at a time.

``Settings()`` reads ``RAG_*`` variables, provider keys, ``.env`` and ``rag.toml``, so a test
built on it passes or fails depending on the developer's shell. :func:`isolated_settings` reads
none of them, and :func:`override` changes the settings of one section without resetting the
others.

>>> settings = isolated_settings("/tmp/rag-data", retriever={"k": 3})
>>> settings.retriever.k, settings.embeddings.provider, settings.llm_provider()
(3, 'fake', 'extractive')
>>> override(settings, retriever={"score_threshold": 0.5}).retriever.k
3
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rag_pipeline.config import Settings

# Hashed-character embeddings score lower than the real model: at the production threshold
# (0.80) most questions would be refused. 0.3 answers a question sharing words with a passage
# and refuses one that shares none (the level our own tests use with these embeddings).
FAKE_SCORE_THRESHOLD = 0.3


class IsolatedSettings(Settings):
    """:class:`Settings` that take their values from the constructor's arguments alone: no
    environment variables, no ``.env``, no ``rag.toml`` (so no key of the developer's)."""

    # No file sources are configured below: naming files here would only earn a warning.
    model_config = SettingsConfigDict(env_file=None, toml_file=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def override(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes``: a dict for a section (``store={"mode":
    "memory"}``) changes only the keys it names; any other value replaces the setting. Every
    change is validated, so a typo is an error, not an ignored keyword."""
    copy = settings.model_copy(deep=True)
    for name, value in changes.items():
        if name not in type(settings).model_fields:
            raise TypeError(f"unknown setting {name!r}")
        current = getattr(copy, name)
        if isinstance(value, dict) and hasattr(current, "model_dump"):
            # Settings validate on assignment: a merged dict becomes the section again.
            value = {**current.model_dump(), **value}
        setattr(copy, name, value)
    return copy


def isolated_settings(
    data_dir: str | Path, *, real_model: bool = False, **overrides: Any
) -> Settings:
    """Settings on ``data_dir``: fake embeddings (``real_model``: the packaged local model and
    the production score threshold), persistent Chroma, extractive answers, nothing read from
    the environment; ``overrides`` as in :func:`override`."""
    base: Settings = IsolatedSettings(data_dir=Path(data_dir))
    defaults: dict[str, Any] = {
        "embeddings": {"provider": "local" if real_model else "fake"},
        "llm": {"provider": "extractive"},
    }
    if not real_model:
        defaults["retriever"] = {"score_threshold": FAKE_SCORE_THRESHOLD}
    return override(override(base, **defaults), **overrides)


def fresh_collection() -> str:
    """A collection name no other test uses (for stores shared by tests: a server, memory)."""
    return f"t_{uuid.uuid4().hex[:16]}"
