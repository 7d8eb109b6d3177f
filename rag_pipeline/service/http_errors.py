"""One error shape for every route, OpenAI's: ``{"error": {"message", "type", "code",
"param"}}``, so the official openai client raises its own exception classes
(AuthenticationError, NotFoundError, ...) and a widget reads errors of the native routes the
same way.

Library errors (``RagError``) become a status and their one-line message; anything else is a
500 with a fixed message (the traceback goes to the server log, never to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_pipeline.errors import (
    CollectionLockedError,
    EmptyIndexError,
    ProviderError,
    RagError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
_CODES = {
    400: "bad_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "invalid_request",
    502: "upstream_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by a route to answer with ``status`` and this message in the error shape."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {
        "error": {
            "message": message,
            "type": kind,
            "code": code or _CODES.get(status, "error"),
            "param": param,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code=code, param=param), status, headers)


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def rag_error_status(error: RagError) -> int:
    """The HTTP status of a library error met while answering."""
    from rag_pipeline.service.state import NotReadyError

    if isinstance(error, ProviderError):
        return 502  # the chat model API failed (with RAG_LLM__FALLBACK=error)
    if isinstance(
        error,
        NotReadyError | StoreUnavailableError | EmptyIndexError | CollectionLockedError,
    ):
        return 503
    # EmbeddingMismatchError, ConfigurationError, ...: the server's settings or data, not the
    # request; the operator has to act.
    return 500


def validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a rejected body, naming its field: ``"k: Input should be ..."``."""
    problems = error.errors()
    if not problems:
        return "invalid request", None
    first = problems[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return (f"{field}: {message}{more}" if field else message + more), field


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(ApiError, exc)  # registered for ApiError only; likewise below
    return error_response(error.status, error.message, code=error.code, param=error.param)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(StarletteHTTPException, exc)
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    return error_response(error.status_code, message, headers=error.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(RequestValidationError, exc)
    message, field = validation_message(error)
    return error_response(422, message, param=field)


async def _rag_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(RagError, exc)
    status = rag_error_status(error)
    log.warning("%s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return error_response(status, one_line(str(error)), code=type(error).__name__)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error (see the server log)", code="internal")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(Exception, _unexpected)
