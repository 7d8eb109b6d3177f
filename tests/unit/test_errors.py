"""The exceptions: one base class, and messages that say what to do next."""

from __future__ import annotations

import inspect

import pytest

from rag_pipeline import errors
from rag_pipeline.errors import (
    ConfigurationError,
    EmbeddingMismatchError,
    MissingAPIKeyError,
    MissingExtraError,
    RagError,
)

ERROR_CLASSES = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
]


def test_the_module_defines_the_documented_errors() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert names >= {
        "RagError",
        "ConfigurationError",
        "MissingAPIKeyError",
        "MissingExtraError",
        "EmbeddingMismatchError",
        "EmptyIndexError",
        "ProviderError",
        "StoreUnavailableError",
        "LoadError",
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_is_a_rag_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, RagError)
    assert issubclass(cls, Exception)


def test_configuration_family() -> None:
    assert issubclass(MissingAPIKeyError, ConfigurationError)
    assert issubclass(MissingExtraError, ConfigurationError)
    assert not issubclass(EmbeddingMismatchError, ConfigurationError)


def test_missing_api_key_names_the_variable_and_the_provider() -> None:
    error = MissingAPIKeyError("DASHSCOPE_API_KEY", "DashScope embeddings")
    assert error.variable == "DASHSCOPE_API_KEY"
    message = str(error)
    assert "DASHSCOPE_API_KEY" in message and "DashScope embeddings" in message
    assert ".env" in message  # where else it may be put
    with pytest.raises(RagError, match="DASHSCOPE_API_KEY"):
        raise error


def test_missing_extra_says_what_to_install() -> None:
    message = str(MissingExtraError("the Milvus backend", "milvus", "No module named 'pymilvus'"))
    assert 'pip install "rag-pipeline[milvus]"' in message
    assert "the Milvus backend" in message and "No module named 'pymilvus'" in message
    assert "()" not in str(MissingExtraError("x", "hf"))  # no empty cause in brackets


def test_embedding_mismatch_names_both_models_and_the_fix() -> None:
    error = EmbeddingMismatchError("kb", "local:e5:384", "fake:hashed:256")
    assert (error.stored, error.configured) == ("local:e5:384", "fake:hashed:256")
    message = str(error)
    assert "'kb'" in message and "local:e5:384" in message and "fake:hashed:256" in message
    assert "rag ingest --rebuild" in message
