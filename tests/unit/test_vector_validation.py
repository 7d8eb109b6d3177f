"""Vectors are checked before they are cached or stored; retries stop at the time budget;
malformed replies and the new timeout settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.embeddings import Embeddings

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import (
    EmbeddingModel,
    HashingEmbeddings,
    ValidatedEmbeddings,
    build_embedding_model,
    cached,
)
from rag_pipeline.errors import ProviderError
from rag_pipeline.llms import build_chat_model
from rag_pipeline.providers import Retryable, openai_error, with_retries


class Scripted(Embeddings):
    """Answers each call with the next scripted list of vectors (a fault or a good batch)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(texts)
        answer = self.answers.pop(0)
        return answer(texts) if callable(answer) else answer

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


GOOD = HashingEmbeddings(4).embed_documents


def _model(inner: Embeddings, dimension: int | None = 4) -> EmbeddingModel:
    return EmbeddingModel(inner, "openai", "bge-m3", dimension)


def test_every_embedding_model_is_validated() -> None:
    model = build_embedding_model(Settings(embeddings={"provider": "fake"}))
    assert isinstance(model.embeddings, ValidatedEmbeddings)
    again = EmbeddingModel(model.embeddings, "fake", "x", 256)
    assert again.embeddings is model.embeddings  # not wrapped twice
    assert len(model.embeddings.embed_documents(["退货", "运费"])) == 2


def test_good_batches_pass_unchanged() -> None:
    model = _model(Scripted(GOOD))
    assert model.embeddings.embed_documents(["a", "b"]) == GOOD(["a", "b"])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            [[0.1, 0.2, 0.3, 0.4]],
            "OpenAI-compatible embeddings (bge-m3) returned 1 vectors for 2 texts",
        ),
        ([[0.1] * 4, [0.1] * 4, [0.1] * 4], "returned 3 vectors for 2 texts"),
        (
            [[0.1] * 4, [0.1] * 5],
            "vector 1 has 5 values, the collection holds 4 (fingerprint openai:bge-m3:4)",
        ),
        ([[0.1] * 4, [0.1, math.nan, 0.1, 0.1]], "vector 1 has a NaN value"),
        ([[math.inf, 0.1, 0.1, 0.1], [0.1] * 4], "vector 0 has an infinite value"),
        ([[0.1] * 4, ["x", 0.1, 0.1, 0.1]], "vector 1 is not a list of numbers"),
        ([[0.1] * 4, None], "vector 1 is not a list of numbers"),
    ],
)
def test_bad_batches_are_provider_errors(answer: Any, message: str) -> None:
    model = _model(Scripted(answer))
    with pytest.raises(ProviderError) as error:
        model.embeddings.embed_documents(["a", "b"])
    assert message in str(error.value)


def test_unknown_dimension_takes_the_first_vector() -> None:
    model = _model(Scripted([[0.1] * 3, [0.1] * 3], [[0.1] * 3, [0.1] * 2]), dimension=None)
    assert len(model.embeddings.embed_documents(["a", "b"])[1]) == 3
    with pytest.raises(ProviderError, match="vector 1 has 2 values, vector 0 has 3"):
        model.embeddings.embed_documents(["a", "b"])


def test_the_dimension_set_later_by_the_store_is_the_one_checked() -> None:
    model = _model(Scripted([[0.1] * 3]), dimension=None)
    model.dimension = 8  # what open_store does from the collection's fingerprint
    with pytest.raises(ProviderError, match="holds 8 .fingerprint openai:bge-m3:8"):
        model.embeddings.embed_documents(["a"])


def test_queries_are_validated_too() -> None:
    model = _model(Scripted([[math.nan] * 4], [[0.1] * 9]))
    with pytest.raises(ProviderError, match="vector 0 has a NaN value"):
        model.embeddings.embed_query("q")
    with pytest.raises(ProviderError, match="vector 0 has 9 values"):
        model.embeddings.embed_query("q")


def test_a_rejected_batch_is_never_cached(tmp_path: Path) -> None:
    nan_batch = [[math.nan, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]
    inner = Scripted(nan_batch, GOOD)
    embeddings = cached(_model(inner), tmp_path / "cache")
    with pytest.raises(ProviderError, match="NaN"):
        embeddings.embed_documents(["a", "b"])
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert embeddings.embed_documents(["a", "b"]) == GOOD(["a", "b"])
    assert len(inner.calls) == 2  # the good provider was asked again, nothing was served stale
    assert embeddings.embed_documents(["a", "b"]) == GOOD(["a", "b"])
    assert len(inner.calls) == 2  # now it is cached


class Clock:
    """A fake clock that sleeping advances, and attempts that cost time."""

    def __init__(self, attempt_seconds: float) -> None:
        self.now = 0.0
        self.attempt_seconds = attempt_seconds
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def failing(self, retry_after: float | None = None) -> Any:
        def call() -> None:
            self.now += self.attempt_seconds
            raise Retryable("no answer within the read timeout", retry_after)

        return call


def test_no_attempt_starts_after_the_budget() -> None:
    clock = Clock(attempt_seconds=0.5)
    with pytest.raises(ProviderError) as error:
        with_retries(
            clock.failing(),
            10,
            "the API at http://x",
            budget=2,
            budget_setting="embeddings.retry_budget",
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    message = str(error.value)
    assert "gave up after 2 attempt(s)" in message
    assert "retry budget of 2 s (embeddings.retry_budget)" in message
    assert "no answer within the read timeout" in message and "http://x" in message
    assert clock.sleeps == [0.5]  # 0.5 + 0.5 + 0.5 = 1.5; the next wait (1 s) would pass 2 s


def test_without_a_budget_the_retries_run_out() -> None:
    clock = Clock(attempt_seconds=0.0)
    with pytest.raises(ProviderError, match="failed after 3 retries"):
        with_retries(clock.failing(), 3, "x", sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_retry_after_is_honoured_and_capped() -> None:
    clock = Clock(attempt_seconds=0.0)
    with pytest.raises(ProviderError):
        with_retries(
            clock.failing(retry_after=3), 1, "x", sleep=clock.sleep, clock=lambda: clock.now
        )
    with pytest.raises(ProviderError):
        with_retries(
            clock.failing(retry_after=999), 1, "x", sleep=clock.sleep, clock=lambda: clock.now
        )
    assert clock.sleeps == [3, 20]


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        with_retries(call, 5, "x", budget=90, sleep=lambda _: None)
    assert calls == [1]


def test_malformed_replies_map_to_provider_errors() -> None:
    bad_json = json.JSONDecodeError("Expecting value", "{", 1)
    assert "malformed JSON" in str(openai_error(bad_json, "the chat model API", "OPENAI_API_KEY"))
    # A ValueError of our own (not raised inside the SDK) is not the provider's fault.
    assert openai_error(ValueError("x"), "the chat model API", "OPENAI_API_KEY") is None


def test_timeout_settings_and_defaults() -> None:
    settings = Settings()
    assert (settings.embeddings.connect_timeout, settings.embeddings.timeout) == (10.0, 30.0)
    assert settings.embeddings.retry_budget == 90.0
    assert (settings.llm.connect_timeout, settings.llm.timeout) == (10.0, 60.0)
    with pytest.raises(ValueError):
        Settings(embeddings={"retry_budget": 0})


def test_openai_clients_get_separate_connect_and_read_timeouts() -> None:
    settings = Settings(
        embeddings={"provider": "openai", "timeout": 7, "connect_timeout": 3, "retry_budget": 11},
        llm={"provider": "openai", "timeout": 40, "connect_timeout": 2},
        openai_api_key="sk-test",
    )
    model = build_embedding_model(settings)
    guard = model.embeddings.inner  # type: ignore[attr-defined]
    assert guard.retry_budget == 11 and guard.max_retries == settings.embeddings.max_retries
    timeout = guard.inner.request_timeout
    assert isinstance(timeout, openai.Timeout) and (timeout.connect, timeout.read) == (3, 7)
    assert guard.inner.max_retries == 0  # our retries, counted against the budget
    chat = build_chat_model(settings)
    chat_timeout = chat.request_timeout  # type: ignore[attr-defined]
    assert (chat_timeout.connect, chat_timeout.read) == (2, 40)


def test_dashscope_embeddings_get_the_timeouts_and_budget() -> None:
    settings = Settings(
        embeddings={
            "provider": "dashscope",
            "timeout": 7,
            "connect_timeout": 3,
            "retry_budget": 11,
        },
        dashscope_api_key="sk-test",
    )
    inner = build_embedding_model(settings).embeddings.inner  # type: ignore[attr-defined]
    assert (inner.connect_timeout, inner.timeout, inner.retry_budget) == (3, 7, 11)
