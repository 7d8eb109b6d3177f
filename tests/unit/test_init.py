"""The package's public names, imported lazily (what importing costs is measured in a
fresh interpreter: tests/integration/test_import.py)."""

from __future__ import annotations

import pytest

import rag_pipeline

EXPECTED = [
    "Answer",
    "Assistant",
    "ExtractiveChatModel",
    "HashingEmbeddings",
    "IngestReport",
    "LocalE5Embeddings",
    "RagError",
    "Settings",
    "Source",
    "build_chat_model",
    "build_embedding_model",
    "build_rag_chain",
    "build_retriever",
    "ingest",
    "load_settings",
    "open_store",
]


def test_public_names_are_pinned() -> None:
    assert sorted(rag_pipeline.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(rag_pipeline, name) is not None


def test_names_resolve_to_the_defining_modules_objects() -> None:
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.config import load_settings
    from rag_pipeline.stores import open_store

    assert rag_pipeline.Assistant is Assistant
    assert rag_pipeline.load_settings is load_settings
    assert rag_pipeline.open_store is open_store


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rag_pipeline.Nope  # noqa: B018
    assert not hasattr(rag_pipeline, "_private")
