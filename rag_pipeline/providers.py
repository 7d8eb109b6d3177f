"""Calling remote model APIs: retries with backoff within a time budget, and answers checked.

One place decides what is worth another try (HTTP 429/5xx, refused or reset connections,
timeouts), how long trying may go on (``budget``), and how a failure reads (``ProviderError``,
naming the service and what to check).

>>> dashscope_call(dashscope.TextEmbedding, "DashScope embeddings", 4, None,
...     model="text-embedding-v4", input=["你好"], api_key=key)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rag_pipeline.errors import ProviderError

T = TypeVar("T")

MAX_BACKOFF = 20.0  # seconds between two attempts at most, whatever Retry-After asks


class Retryable(Exception):
    """A failure worth another try: HTTP 429/5xx, a refused or reset connection, a timeout.

    ``retry_after``: seconds the server asked us to wait (its Retry-After header), if any.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def with_retries(
    call: Callable[[], T],
    max_retries: int,
    what: str,
    *,
    budget: float | None = None,
    budget_setting: str = "retry_budget",
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()`` again after each ``Retryable``, with exponential backoff (0.5 s, 1 s, 2 s ...
    or the server's Retry-After), at most ``max_retries`` times.

    ``budget`` (seconds) bounds the whole: no new attempt starts once it would begin after the
    budget is spent, and the ProviderError then names ``budget_setting``. An attempt already
    under way is bounded by its own timeouts, not cut short. ``sleep`` / ``clock`` are
    injectable so tests need not wait.
    """
    nap = sleep or time.sleep  # looked up per call, so a test can patch time.sleep
    started = clock()
    attempt = 0
    while True:
        try:
            return call()
        except Retryable as e:
            attempt += 1
            if attempt > max_retries:
                raise ProviderError(f"{what} failed after {max_retries} retries: {e}") from e
            backoff = 0.5 * 2 ** (attempt - 1)
            delay = min(e.retry_after if e.retry_after is not None else backoff, MAX_BACKOFF)
            if budget is not None and clock() - started + delay >= budget:
                raise ProviderError(
                    f"{what} failed: gave up after {attempt} attempt(s), the retry budget of "
                    f"{budget:g} s ({budget_setting}) leaves no time for another; last error: {e}"
                ) from e
            nap(delay)


def _retry_after(error: Any) -> float | None:
    """The Retry-After header (seconds) of an openai SDK status error, if it has one."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def openai_retryable(error: BaseException) -> Retryable | None:
    """A ``Retryable`` for an ``openai`` SDK failure worth another try (HTTP 408/409/429/5xx,
    connection errors and timeouts), else None."""
    import openai

    if isinstance(error, openai.APIStatusError) and (
        error.status_code in (408, 409, 429) or error.status_code >= 500
    ):
        return Retryable(f"HTTP {error.status_code}: {error.message}", _retry_after(error))
    if isinstance(error, openai.APITimeoutError):
        return Retryable("no answer within the read timeout")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__
        return Retryable(f"{error.message} ({type(cause).__name__})" if cause else error.message)
    return None


def _from_sdk(error: BaseException) -> bool:
    """Whether ``error`` was raised inside the openai SDK or LangChain's OpenAI integration
    (then a TypeError / KeyError / ValueError means the reply lacked what they expected)."""
    tb = error.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(("openai.", "langchain_openai.")):
            return True
        tb = tb.tb_next
    return False


def openai_error(error: BaseException, what: str, key_variable: str) -> ProviderError | None:
    """The one mapping of an ``openai`` SDK failure (used by the OpenAI-compatible embeddings
    and chat models alike) to a ProviderError that names what to check; None for any other
    exception. The key itself never appears: the SDK's messages do not carry it.

    A reply that is not JSON, or lacks the fields the SDK reads, is a ProviderError too.

    >>> openai_error(ValueError("x"), "the chat model", "OPENAI_API_KEY") is None
    True
    """
    import openai
    import pydantic

    if isinstance(error, openai.AuthenticationError):
        return ProviderError(f"{what} rejected the API key (HTTP 401): check {key_variable}")
    if isinstance(error, openai.APIStatusError):
        return ProviderError(f"{what} failed: HTTP {error.status_code}: {error.message}")
    if isinstance(error, openai.APITimeoutError):
        return ProviderError(f"{what} did not answer within the timeout, after retries")
    if isinstance(error, openai.APIConnectionError):
        return ProviderError(f"{what} is unreachable after retries: {error}")
    if isinstance(error, openai.APIResponseValidationError):
        return ProviderError(f"{what} answered in an unexpected format: {error.message}")
    if isinstance(error, json.JSONDecodeError):
        return ProviderError(f"{what} answered with malformed JSON ({error.msg})")
    if isinstance(error, pydantic.ValidationError) or (
        isinstance(error, TypeError | KeyError | ValueError) and _from_sdk(error)
    ):
        return ProviderError(f"{what} answered without the expected fields ({_short(error)})")
    return None


def _short(error: BaseException) -> str:
    """An exception's first line, at most 200 characters: an error stays one line."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text[:200]


class _TracebackOnlyWhenDebugging(logging.Filter):
    """The dashscope SDK logs every failed request with its traceback at ERROR before raising
    it; we retry it or report it as one ProviderError line, so the traceback is shown only when
    debug logging is on (``rag --debug``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info or logging.getLogger("dashscope").isEnabledFor(logging.DEBUG)


def _quiet_dashscope_tracebacks() -> None:
    sdk_logger = logging.getLogger("dashscope")
    if not any(isinstance(f, _TracebackOnlyWhenDebugging) for f in sdk_logger.filters):
        sdk_logger.addFilter(_TracebackOnlyWhenDebugging())


def dashscope_call(
    api: Any,
    what: str,
    max_retries: int,
    base_url: str | None,
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    budget: float | None = None,
    budget_setting: str = "retry_budget",
    **kwargs: Any,
) -> Any:
    """``api.call(**kwargs)`` (a dashscope SDK class such as ``TextEmbedding``) against
    ``base_url`` if given, retried within ``budget``; a non-200 or malformed answer becomes a
    ProviderError. The timeouts go to ``requests`` as its (connect, read) pair."""
    import requests

    _quiet_dashscope_tracebacks()
    if base_url:
        # Consumed by the SDK for this one request; no module state changes.
        kwargs["base_address"] = base_url
    if read_timeout is not None:
        # The SDK hands request_timeout to requests unchanged, which takes (connect, read).
        kwargs["request_timeout"] = (connect_timeout or read_timeout, read_timeout)

    def once() -> Any:
        try:
            response = api.call(**kwargs)
        except requests.exceptions.JSONDecodeError as e:  # an OSError too: not worth a retry
            raise ProviderError(f"{what} answered with malformed JSON ({e.msg})") from e
        except requests.exceptions.Timeout as e:
            raise Retryable("no answer within the timeout") from e
        except (OSError, TimeoutError) as e:  # connection refused / reset
            raise Retryable(_short(e)) from e
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(f"HTTP {response.status_code} {response.code}")
        return response

    response = with_retries(once, max_retries, what, budget=budget, budget_setting=budget_setting)
    if response.status_code != 200:
        hint = " (check DASHSCOPE_API_KEY)" if response.status_code in (401, 403) else ""
        raise ProviderError(
            f"{what} error HTTP {response.status_code} {response.code}: {response.message}{hint}"
        )
    return response
