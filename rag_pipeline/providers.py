"""Calling remote model APIs: retries with backoff, and DashScope SDK answers checked.

One place decides what is worth another try (HTTP 429/5xx, refused or reset connections,
timeouts) and how a failure reads (``ProviderError``, naming the service and what to check).

>>> dashscope_call(dashscope.TextEmbedding, "DashScope embeddings", 4, None,
...     model="text-embedding-v4", input=["你好"], api_key=key)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rag_pipeline.errors import ProviderError

T = TypeVar("T")


class Retryable(Exception):
    """A failure worth another try: HTTP 429/5xx, a refused or reset connection, a timeout."""


def with_retries(call: Callable[[], T], max_retries: int, what: str) -> T:
    """``call()`` with exponential backoff on ``Retryable``; ProviderError when they run out."""
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    retrying = retry(
        retry=retry_if_exception_type(Retryable),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_exponential(multiplier=0.5, max=20),
        reraise=True,
    )(call)
    try:
        return retrying()
    except Retryable as e:
        raise ProviderError(f"{what} failed after {max_retries} retries: {e}") from e


def openai_error(error: BaseException, what: str, key_variable: str) -> ProviderError | None:
    """The one mapping of an ``openai`` SDK failure (used by the OpenAI-compatible embeddings
    and chat models alike) to a ProviderError that names what to check; None for any other
    exception. The key itself never appears: the SDK's messages do not carry it.

    >>> openai_error(ValueError("x"), "the chat model", "OPENAI_API_KEY") is None
    True
    """
    import openai

    if isinstance(error, openai.AuthenticationError):
        return ProviderError(f"{what} rejected the API key (HTTP 401): check {key_variable}")
    if isinstance(error, openai.APIStatusError):
        return ProviderError(f"{what} failed: HTTP {error.status_code}: {error.message}")
    if isinstance(error, openai.APIConnectionError):
        return ProviderError(f"{what} is unreachable after retries: {error}")
    return None


def dashscope_call(
    api: Any, what: str, max_retries: int, base_url: str | None, **kwargs: Any
) -> Any:
    """``api.call(**kwargs)`` (a dashscope SDK class such as ``TextEmbedding``) against
    ``base_url`` if given, retried; a non-200 answer becomes a ProviderError."""
    if base_url:
        # Consumed by the SDK for this one request; no module state changes.
        kwargs["base_address"] = base_url

    def once() -> Any:
        try:
            response = api.call(**kwargs)
        except (OSError, TimeoutError) as e:  # connection refused / reset / timeout
            raise Retryable(str(e)) from e
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(f"HTTP {response.status_code} {response.code}")
        return response

    response = with_retries(once, max_retries, what)
    if response.status_code != 200:
        hint = " (check DASHSCOPE_API_KEY)" if response.status_code in (401, 403) else ""
        raise ProviderError(
            f"{what} error HTTP {response.status_code} {response.code}: {response.message}{hint}"
        )
    return response
