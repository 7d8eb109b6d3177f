"""Remote API calls: retries with backoff on ``Retryable``, DashScope answers checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from rag_pipeline.errors import ProviderError
from rag_pipeline.providers import Retryable, dashscope_call, with_retries


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits ``with_retries`` asks for, without waiting."""
    import time

    seen: list[float] = []
    monkeypatch.setattr(time, "sleep", seen.append)
    return seen


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``result``."""

    def __init__(self, failures: int, error: Exception, result: Any = "ok") -> None:
        self.failures = failures
        self.error = error
        self.result = result
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result


def test_success_is_not_retried(waits: list[float]) -> None:
    call = Flaky(0, Retryable("x"))
    assert with_retries(call, 3, "the thing") == "ok"
    assert call.calls == 1 and waits == []


def test_retryable_failures_are_retried_with_growing_waits(waits: list[float]) -> None:
    call = Flaky(3, Retryable("HTTP 429"))
    assert with_retries(call, 3, "the thing") == "ok"
    assert call.calls == 4
    assert len(waits) == 3 and waits == sorted(waits) and waits[0] < waits[-1]


def test_exhausted_retries_become_a_provider_error(waits: list[float]) -> None:
    call = Flaky(10, Retryable("HTTP 503"))
    with pytest.raises(
        ProviderError, match="DashScope embeddings failed after 2 retries: HTTP 503"
    ):
        with_retries(call, 2, "DashScope embeddings")
    assert call.calls == 3  # the first try and two retries


def test_zero_retries_means_one_try(waits: list[float]) -> None:
    call = Flaky(1, Retryable("reset"))
    with pytest.raises(ProviderError, match="after 0 retries"):
        with_retries(call, 0, "x")
    assert call.calls == 1


def test_other_errors_are_not_retried(waits: list[float]) -> None:
    call = Flaky(1, KeyError("bug"))
    with pytest.raises(KeyError):
        with_retries(call, 5, "x")
    assert call.calls == 1 and waits == []


@dataclass
class Response:
    status_code: int
    code: str = ""
    message: str = ""


class FakeAPI:
    """Stands in for a dashscope SDK class: ``call(**kwargs)`` answers from a script."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def call(self, **kwargs: Any) -> Response:
        self.calls.append(kwargs)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_dashscope_call_passes_arguments_and_returns_the_answer(waits: list[float]) -> None:
    api = FakeAPI(Response(200, "ok"))
    response = dashscope_call(api, "emb", 3, None, model="m", input=["你好"], api_key="k")
    assert response.status_code == 200
    assert api.calls == [{"model": "m", "input": ["你好"], "api_key": "k"}]


def test_dashscope_call_sends_the_base_url_for_this_request(waits: list[float]) -> None:
    api = FakeAPI(Response(200))
    dashscope_call(api, "emb", 0, "http://stub.invalid/api/v1", model="m")
    assert api.calls[0]["base_address"] == "http://stub.invalid/api/v1"


@pytest.mark.parametrize(
    "transient", [Response(429, "Throttling"), Response(500, "Internal"), ConnectionResetError()]
)
def test_dashscope_call_retries_transient_failures(
    waits: list[float], transient: Response | Exception
) -> None:
    api = FakeAPI(transient, Response(200))
    assert dashscope_call(api, "emb", 2, None).status_code == 200
    assert len(api.calls) == 2


def test_dashscope_rejected_key_is_not_retried_and_names_the_variable(waits: list[float]) -> None:
    api = FakeAPI(Response(401, "InvalidApiKey", "Invalid API-key provided."))
    with pytest.raises(ProviderError) as e:
        dashscope_call(api, "DashScope embeddings", 4, None)
    message = str(e.value)
    assert "HTTP 401 InvalidApiKey" in message and "check DASHSCOPE_API_KEY" in message
    assert len(api.calls) == 1


def test_dashscope_bad_request_has_no_key_hint(waits: list[float]) -> None:
    api = FakeAPI(Response(400, "InvalidParameter", "input too long"))
    with pytest.raises(ProviderError, match="input too long") as e:
        dashscope_call(api, "emb", 4, None)
    assert "DASHSCOPE_API_KEY" not in str(e.value)


def test_dashscope_gives_up_after_the_retries(waits: list[float]) -> None:
    api = FakeAPI(*[Response(503, "Unavailable")] * 3)
    with pytest.raises(ProviderError, match="after 2 retries: HTTP 503 Unavailable"):
        dashscope_call(api, "emb", 2, None)
    assert len(api.calls) == 3
