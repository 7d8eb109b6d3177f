"""``open_store`` / ``connect``: the checked way into a collection (embedding fingerprint,
ingest-first message) and the choice of backend, on in-memory Chroma."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.embeddings import EmbeddingModel, HashingEmbeddings, build_embedding_model
from rag_pipeline.errors import EmbeddingMismatchError, EmptyIndexError
from rag_pipeline.stores import connect, ingest_first_message, open_store
from rag_pipeline.stores.chroma import ChromaBackend
from rag_pipeline.stores.milvus import MilvusBackend
from tests.helpers import memory_settings


def test_a_missing_collection_says_ingest_first(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path)
    with pytest.raises(EmptyIndexError) as e:
        open_store(settings, build_embedding_model(settings), create=False)
    where = f"collection {settings.store.collection!r} at memory"
    assert str(e.value) == ingest_first_message(where)
    assert "scripts/ingest.py" in str(e.value) and "rag ingest PATH" in str(e.value)


def test_create_records_the_model_and_attaches(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, embeddings={"dimensions": 32})
    model = build_embedding_model(settings)
    store = open_store(settings, model, create=True)
    assert isinstance(store, ChromaBackend) and store.vector_store is not None
    assert store.stored_fingerprint() == "fake:hashed-char-ngrams:32" == model.fingerprint
    assert store.count() == 0
    reopened = open_store(settings, build_embedding_model(settings), create=False)
    assert reopened.stored_fingerprint() == model.fingerprint


def test_another_model_is_refused_and_rebuild_is_the_way_out(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, embeddings={"dimensions": 32})
    open_store(settings, build_embedding_model(settings), create=True)
    other = settings.model_copy(
        update={"embeddings": settings.embeddings.model_copy(update={"dimensions": 64})}
    )
    with pytest.raises(EmbeddingMismatchError, match="fake:hashed-char-ngrams:32"):
        open_store(other, build_embedding_model(other), create=True)
    rebuilt = open_store(other, build_embedding_model(other), create=True, rebuild=True)
    assert rebuilt.stored_fingerprint() == "fake:hashed-char-ngrams:64"


def test_a_model_of_unknown_dimension_takes_the_stored_one(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, embeddings={"dimensions": 48})
    open_store(settings, build_embedding_model(settings), create=True)
    unknown = EmbeddingModel(HashingEmbeddings(48), "fake", "hashed-char-ngrams", None)
    open_store(settings, unknown, create=False)
    assert unknown.dimension == 48
    wrong = EmbeddingModel(HashingEmbeddings(48), "fake", "another-model", None)
    with pytest.raises(EmbeddingMismatchError):
        open_store(settings, wrong, create=False)


def test_connect_picks_the_configured_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(connect(memory_settings(tmp_path)), ChromaBackend)
    monkeypatch.setattr(MilvusBackend, "_connect", lambda self: object())  # no client
    milvus = connect(memory_settings(tmp_path, store={"backend": "milvus", "mode": "persistent"}))
    assert isinstance(milvus, MilvusBackend)
    assert milvus.location == str(tmp_path / "milvus.db")
