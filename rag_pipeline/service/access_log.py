"""One structured line per request on the logger ``rag_pipeline.service.access``.

JSON with the time (UTC), method, path (without the query string), status, latency_ms, client
and, when the request produced an answer, its answer_id (read from the ``X-Answer-Id`` response
header the answering routes set). Nothing else: no headers (the Authorization key), no query
string, no body, no document text, so the log can be shipped anywhere.

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware, so a streamed answer
passes through untouched; its latency is the time until the stream ended.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "rag_pipeline.service.access"
ANSWER_ID_HEADER = "x-answer-id"

log = logging.getLogger(ACCESS_LOGGER)


def access_record(
    scope: Scope, status: int, latency_ms: float, answer_id: str | None
) -> dict[str, Any]:
    client = scope.get("client")
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "latency_ms": round(latency_ms, 1),
        "client": f"{client[0]}:{client[1]}" if client else None,
    }
    if answer_id:
        record["answer_id"] = answer_id
    return record


class AccessLog:
    """ASGI middleware writing ``access_record`` as one JSON line at INFO."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering
        answer_id: str | None = None

        async def sending(message: Message) -> None:
            nonlocal status, answer_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == ANSWER_ID_HEADER.encode():
                        answer_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if log.isEnabledFor(logging.INFO):
                record = access_record(
                    scope, status, (time.perf_counter() - started) * 1000, answer_id
                )
                log.info(json.dumps(record, ensure_ascii=False))
