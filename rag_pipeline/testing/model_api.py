"""A real HTTP stand-in for the remote model APIs, served on 127.0.0.1 for tests (the
``model_server`` fixture of the plugin, scripted per test).

Tests never reach the internet: :class:`ModelServer` starts a standard-library
``ThreadingHTTPServer`` (HTTP/1.1, keep-alive, chunked SSE) in a daemon thread and
speaks two wire formats, so the official clients can be used unmodified:

* **OpenAI-compatible** (root :attr:`ModelServer.base_url`, ``http://127.0.0.1:PORT/v1``)

  - ``POST /v1/chat/completions``: ``chat.completion`` objects, or with
    ``"stream": true`` a ``text/event-stream`` of ``chat.completion.chunk`` events
    (role chunk, content deltas of :data:`STREAM_CHUNK_CHARS` characters, a
    ``finish_reason="stop"`` chunk, a usage chunk when
    ``stream_options.include_usage`` is set, then ``data: [DONE]``).
  - ``POST /v1/embeddings``: ``input`` may be a string, a list of strings, a token-id
    list or a list of token-id lists (token lists are embedded via their ``repr``);
    honours ``dimensions`` and ``encoding_format`` (``"float"`` or ``"base64"``;
    the openai 3.x SDK sends ``"base64"`` whenever the caller does not choose, and
    decodes little-endian float32 itself).
  - ``POST /v1/rerank``: the generic rerank API served by Jina, Cohere
    v2-compatible servers, Xinference, vLLM and SiliconFlow. Body ``{"model",
    "query", "documents": [str or {"text": str}], "top_n"?, "return_documents"?}``,
    answer ``{"id", "model", "results": [{"index", "relevance_score",
    "document": {"text"}}], "usage": {"total_tokens"}}``.

* **DashScope native HTTP** (root :attr:`ModelServer.dashscope_base_url`,
  ``http://127.0.0.1:PORT/api/v1``)

  - ``POST /api/v1/services/embeddings/text-embedding/text-embedding`` with body
    ``{"model", "input": {"texts": [...]}, "parameters": {"dimension", ...}}``
    answering ``{"output": {"embeddings": [{"text_index", "embedding"}]},
    "usage": {"total_tokens"}, "request_id"}``; more than 10 texts for
    text-embedding-v3/v4 (25 for v1/v2) is a 400 ``InvalidParameter``, as upstream.
  - ``POST /api/v1/services/rerank/text-rerank/text-rerank`` (what
    ``dashscope.TextReRank.call`` posts to: task group ``rerank`` from the module
    ``dashscope.rerank.text_rerank``, then task and function ``text-rerank``) with
    body ``{"model", "input": {"query", "documents"}, "parameters": {"top_n",
    "return_documents", ...}}`` answering ``{"output": {"results": [{"index",
    "relevance_score", "document": {"text"}}]}, "usage": {"total_tokens"},
    "request_id"}``; a missing query or empty documents is a 400 ``InvalidParameter``.

Both rerank endpoints score every document with :func:`stub_rerank_score` (the
share of the query's distinct character bigrams, after lower-casing and removing
whitespace, that occur in the equally normalised document; for a one-character
query, whether that character occurs), sort by ``relevance_score`` descending
(ties keep the input order), cut to ``top_n`` when given (a ``top_n`` above the
number of documents returns them all) and include ``document`` only when
``return_documents`` is true (default false). Documents may be strings or
``{"text": str}`` objects; ``index`` refers to the position in the request.

Scripting a test: :meth:`ModelServer.answer` fixes what the chat model says (cite a passage
with ``[n]``, the number of the retrieved chunk); :meth:`ModelServer.delay` makes requests take
a remote model's time (``delay(0.1, kind="embeddings")``: 100 ms per embeddings request);
:meth:`ModelServer.fail_next` (429, 500, ...),
:meth:`ModelServer.timeout_next` and :meth:`ModelServer.nan_next` make the next requests fail;
:meth:`ModelServer.requests` lists what was received (``requests("chat") == []``: no model was
called); :meth:`ModelServer.settings` points a :class:`~rag_pipeline.config.Settings` at it.

Fault injection, for testing how clients fail: :meth:`ModelServer.fail_next` answers
the next requests with an HTTP error status (optionally with ``Retry-After``);
:meth:`ModelServer.fault_next` makes them misbehave in one of :data:`FAULTS`:
``reset`` (the connection is reset without an answer), ``hang`` (the request is read
and never answered, for at most :attr:`ModelServer.hang_seconds` or until the stub
stops), ``malformed_json`` (HTTP 200, ``application/json``, a body that is not JSON),
``missing_fields`` (HTTP 200 with a JSON object lacking ``data`` / ``output`` /
``choices``) and, for the two embedding endpoints only, ``short`` (the last vector
left out), ``nan`` (vector 0 starts with NaN) and ``wrong_dimension`` (every vector
one component longer than asked for).

Anything else is a 404 JSON error. Every request must carry
``Authorization: Bearer <api_key>`` (the dashscope SDK sends ``Bearer`` too, see
``dashscope/api_entities/http_request.py``); otherwise 401. Error bodies use the
endpoint's format: paths under ``/api/`` get DashScope's
``{"code", "message", "request_id"}``, everything else OpenAI's
``{"error": {"message", "type", "param", "code"}}``.

Pointing the clients at the stub::

    with ModelServer() as stub:
        OpenAI(base_url=stub.base_url, api_key=stub.api_key)
        ChatOpenAI(base_url=stub.base_url, api_key=stub.api_key, model="qwen-plus")
        OpenAIEmbeddings(base_url=stub.base_url, api_key=stub.api_key,
                         model="text-embedding-v4", check_embedding_ctx_length=False)
        dashscope.TextEmbedding.call(model="text-embedding-v4", input=texts,
                                     api_key=stub.api_key, dimension=1024,
                                     base_address=stub.dashscope_base_url)
        dashscope.TextReRank.call(model="gte-rerank-v2", query=query, documents=docs,
                                  top_n=3, return_documents=True, api_key=stub.api_key,
                                  base_address=stub.dashscope_base_url)
        httpx.post(f"{stub.base_url}/rerank", headers={"Authorization": ...},
                   json={"model": "bge-reranker-v2-m3", "query": query, "documents": docs})

DashScope base URL per call: ``base_address`` is an explicit keyword parameter of
``dashscope.api_entities.api_request_factory._build_api_request`` and
``TextEmbedding.call -> BaseApi.call`` forwards its ``**kwargs`` there, so it is
consumed by the SDK (never sent as a model parameter) and replaces
``dashscope.base_http_api_url`` for that one request only; the SDK then appends
``services/embeddings/text-embedding/text-embedding`` (``TextReRank.call`` does the
same and appends ``services/rerank/text-rerank/text-rerank``). No module state is
mutated. (The SDK does reuse a process-wide ``requests.Session`` connection pool
unless ``session=`` is also passed; that is harmless here because every stub gets
a fresh port.) The global alternatives are ``dashscope.base_http_api_url``
(module attribute, read on every call) and the ``DASHSCOPE_HTTP_BASE_URL``
environment variable (read once, when ``dashscope`` is first imported).
Note that ``langchain_community``'s ``DashScopeEmbeddings`` cannot forward
``base_address`` (and batches 25 texts for v3/v4, which the stub rejects like the
real service does).

Embeddings are deterministic functions of the text alone (see
:func:`stub_embedding`): signed feature hashing (sha256) of character unigrams and
bigrams, L2-normalised, so texts sharing characters get similar vectors and toy
retrieval tests behave sensibly. Token usage is approximated as one token per
character; for rerank requests, the query plus every document.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
OPENAI_CHAT_PATH = "/v1/chat/completions"
OPENAI_EMBEDDINGS_PATH = "/v1/embeddings"
DASHSCOPE_TEXT_EMBEDDING_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
EMBEDDING_PATHS = frozenset({OPENAI_EMBEDDINGS_PATH, DASHSCOPE_TEXT_EMBEDDING_PATH})
RERANK_PATH = "/v1/rerank"
"""Generic rerank API (Jina, Cohere v2-compatible, Xinference, vLLM, SiliconFlow)."""
DASHSCOPE_TEXT_RERANK_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"
RERANK_PATHS = frozenset({RERANK_PATH, DASHSCOPE_TEXT_RERANK_PATH})
STREAM_CHUNK_CHARS = 4
"""Characters per streamed content delta."""
DASHSCOPE_BATCH_LIMITS: dict[str, int] = {
    "text-embedding-v1": 25,
    "text-embedding-v2": 25,
    "text-embedding-v3": 10,
    "text-embedding-v4": 10,
}
DEFAULT_DASHSCOPE_BATCH_LIMIT = 10
"""Batch limit applied to DashScope embedding models not listed above."""

ChatReply = Callable[[list[dict[str, Any]]], str]
RequestKind = Literal["chat", "embeddings", "rerank"]

TRANSPORT_FAULTS = ("reset", "hang", "malformed_json", "missing_fields")
"""Faults taken by the next request to any endpoint."""
VECTOR_FAULTS = ("short", "nan", "wrong_dimension")
"""Faults taken by the next request to an embedding endpoint (others pass them by)."""
FAULTS = TRANSPORT_FAULTS + VECTOR_FAULTS
DEFAULT_HANG_SECONDS = 30.0
"""How long a ``hang`` fault holds a request at most, so the stub always stops."""

# status -> (message, type, code) in OpenAI's error format.
_OPENAI_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Invalid request.", "invalid_request_error", "invalid_request"),
    401: ("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    403: (
        "You are not allowed to access this resource.",
        "invalid_request_error",
        "permission_denied",
    ),
    404: ("The requested resource does not exist.", "invalid_request_error", "not_found"),
    408: ("Request timed out.", "server_error", "timeout"),
    409: ("Conflict.", "invalid_request_error", "conflict"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request.",
        "server_error",
        "internal_error",
    ),
    502: ("Bad gateway.", "server_error", "bad_gateway"),
    503: (
        "The engine is currently overloaded, please try again later.",
        "server_error",
        "service_unavailable",
    ),
    504: ("Gateway timeout.", "server_error", "gateway_timeout"),
}
# status -> (code, message) in DashScope's error format.
_DASHSCOPE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidParameter", "Invalid parameter."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("NotFound", "The requested resource does not exist."),
    408: ("RequestTimeOut", "Request timed out."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
    502: ("InternalError", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
    504: ("InternalError.Timeout", "Gateway timeout."),
}


@dataclass
class RecordedRequest:
    """One HTTP request as received by the stub.

    ``path`` is the raw request target (including any query string), ``headers``
    has lower-cased names, and ``body`` is the parsed JSON body (``None`` when the
    body is empty or not valid JSON).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Failure:
    """An injected failure waiting for the next request."""

    status: int
    retry_after: float | None
    kind: RequestKind | None = None  # None: whatever request comes next


class _StubError(Exception):
    """Raised inside a handler to answer with an error in the endpoint's format."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _route(path: str) -> str:
    """Return the path component of a request target (no query string)."""
    return urlsplit(path).path


def _kind_of(route: str) -> RequestKind | None:
    """Which kind of model request a path is (None: not one of the model endpoints)."""
    if route.endswith("/chat/completions"):
        return "chat"
    if route in EMBEDDING_PATHS:
        return "embeddings"
    if route in RERANK_PATHS:
        return "rerank"
    return None


def message_text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` (string or list of parts) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def default_chat_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic reply that cites ``[1]``.

    ``"根据资料[1]，"`` followed by the first 30 characters of the last user message
    (of the last message if there is no user message).
    """
    user_texts = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if user_texts:
        text = user_texts[-1]
    else:
        text = message_text(messages[-1].get("content")) if messages else ""
    return "根据资料[1]，" + text[:30]


def count_tokens(text: str) -> int:
    """Approximate token count used for ``usage``: one token per character."""
    return len(text)


def _seeded_vector(text: str, dim: int) -> list[float]:
    """Pseudo-random vector in ``[-1, 1)^dim`` seeded by sha256 of ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend(u / 2**31 - 1.0 for (u,) in struct.iter_unpack("<I", digest))
        counter += 1
    return values[:dim]


def stub_embedding(text: str, dim: int) -> list[float]:
    """Deterministic, L2-normalised embedding of ``text`` with ``dim`` components.

    Each character unigram and bigram of the lower-cased, whitespace-free text adds
    ±1 to a sha256-chosen component (signed feature hashing), so overlapping texts
    score a higher cosine similarity. If that yields a zero vector (empty text, or
    features cancelling out) a sha256-seeded pseudo-random vector is used instead.
    """
    if dim < 1:
        raise ValueError("dim must be >= 1")
    chars = "".join(text.lower().split())
    features = [f"1:{c}" for c in chars] + [
        f"2:{a}{b}" for a, b in zip(chars, chars[1:], strict=False)
    ]
    vec = [0.0] * dim
    for feature in features:
        digest = hashlib.sha256(feature.encode()).digest()
        index = int.from_bytes(digest[:8], "little") % dim
        vec[index] += 1.0 if digest[8] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec = _seeded_vector(text, dim)
        norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec]


def stub_rerank_score(query: str, document: str) -> float:
    """Deterministic relevance of ``document`` to ``query``, in ``[0, 1]``.

    Both texts are lower-cased and stripped of all whitespace. The score is the
    share of the query's distinct character bigrams that occur in the document; a
    one-character query scores 1.0 if its character occurs and 0.0 otherwise; an
    empty (or whitespace-only) query scores 0.0.
    """
    q = "".join(query.lower().split())
    d = "".join(document.lower().split())
    if len(q) < 2:
        units = set(q)
        doc_units = set(d)
    else:
        units = {q[i : i + 2] for i in range(len(q) - 1)}
        doc_units = {d[i : i + 2] for i in range(len(d) - 1)}
    if not units:
        return 0.0
    return len(units & doc_units) / len(units)


def _model_of(body: Any, *, dashscope: bool) -> str:
    """The request's ``model``; a 400 in the endpoint's own words when the body or it is bad."""
    if not isinstance(body, dict):
        raise _StubError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        if dashscope:
            raise _StubError(400, "Model not exist.", "InvalidParameter")
        raise _StubError(400, "'model' is a required property.")
    return model


def _positive_int(value: Any, name: str, default: int) -> int:
    """Validate an optional positive integer request field."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _StubError(400, f"'{name}' must be a positive integer, got {value!r}.")
    return value


def _openai_embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """Normalise an OpenAI ``input`` to ``(text, token_count)`` pairs."""

    def is_tokens(item: Any) -> bool:
        return (
            isinstance(item, list)
            and bool(item)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        )

    if isinstance(value, str):
        return [(value, count_tokens(value))]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return [(item, count_tokens(item)) for item in value]
        if is_tokens(value):
            return [(repr(value), len(value))]
        if all(is_tokens(item) for item in value):
            return [(repr(item), len(item)) for item in value]
    raise _StubError(
        400,
        "'input' must be a non-empty string, list of strings, token list or list of token lists.",
    )


def _rerank_documents(value: Any) -> list[str]:
    """Normalise rerank ``documents`` (strings or ``{"text": str}`` objects) to texts."""
    if isinstance(value, list) and value:
        texts: list[str] = []
        for item in value:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                texts.append(item["text"])
            else:
                break
        else:
            return texts
    raise _StubError(
        400, "'documents' must be a non-empty list of strings or {\"text\": string} objects."
    )


def _rerank(
    query: Any, documents: Any, top_n: Any, return_documents: Any
) -> tuple[list[dict[str, Any]], int]:
    """Validate a rerank request; return ``(results, total_tokens)``.

    Results are sorted by :func:`stub_rerank_score` descending (stable, so ties keep
    the input order) and cut to ``top_n``; each has ``index`` and
    ``relevance_score``, plus ``document: {"text"}`` when ``return_documents``.
    """
    if not isinstance(query, str) or not query:
        raise _StubError(400, "'query' must be a non-empty string.")
    texts = _rerank_documents(documents)
    limit = _positive_int(top_n, "top_n", len(texts))
    if return_documents is not None and not isinstance(return_documents, bool):
        raise _StubError(400, f"'return_documents' must be a boolean, got {return_documents!r}.")
    scored = [(index, stub_rerank_score(query, text)) for index, text in enumerate(texts)]
    scored.sort(key=lambda pair: -pair[1])
    results: list[dict[str, Any]] = []
    for index, score in scored[:limit]:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    tokens = count_tokens(query) + sum(count_tokens(t) for t in texts)
    return results, tokens


class _StubServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its stub and can drop open keep-alive connections."""

    daemon_threads = True

    def __init__(self, stub: ModelServer) -> None:
        self.stub = stub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def server_bind(self) -> None:
        """Bind without the reverse-DNS lookup ``HTTPServer.server_bind`` does."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Track the connection, then hand it to a handler thread."""
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Forget and close a finished connection."""
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Log handler errors; a client dropping its keep-alive connection is not one."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            logger.debug("client %s disconnected: %r", client_address, exc)
        else:
            logger.error("error while handling a request from %s", client_address, exc_info=exc)

    def close_connections(self) -> None:
        """Shut down every open client connection so idle handler threads exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Routes one connection's requests to the stub's endpoint implementations."""

    protocol_version = "HTTP/1.1"
    server_version = "ModelServer/1.0"
    timeout = 60  # idle keep-alive connections are dropped after this many seconds

    @property
    def stub(self) -> ModelServer:
        """The stub that owns this server."""
        return cast(_StubServer, self.server).stub

    def log_message(self, format: str, *args: Any) -> None:
        """Send access logs to ``logging`` instead of stderr."""
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch()

    def do_POST(self) -> None:
        """Handle POST."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._dispatch()

    def do_PATCH(self) -> None:
        """Handle PATCH."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._dispatch()

    # -- request plumbing -------------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked transfer encoding)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        """Record the request, apply failures and auth, then route it."""
        stub = self.stub
        route = _route(self.path)
        dashscope = route.startswith("/api/")
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            raw = None
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        stub._record(RecordedRequest(self.command, self.path, headers, body))
        delay = stub._delay_for(route)
        if delay > 0:
            # A remote model's own time; each request waits in its handler thread, so
            # concurrent requests overlap as on a real service. stop() releases them.
            stub._release.wait(delay)

        try:
            if raw is None:
                raise _StubError(400, "Malformed request body framing.")
            failure = stub._take_failure(route)
            if failure is not None:
                extra = {}
                if failure.retry_after is not None:
                    extra["Retry-After"] = f"{failure.retry_after:g}"
                self._send_error(failure.status, None, None, dashscope, extra)
                return
            fault = stub._take_fault(TRANSPORT_FAULTS)
            if fault is not None:
                self._misbehave(fault)
                return
            if headers.get("authorization") != f"Bearer {stub.api_key}":
                raise _StubError(401, _default_message(401, dashscope))
            if raw and body is None:
                raise _StubError(400, "The request body is not valid JSON.")
            if self.command == "POST" and route == OPENAI_CHAT_PATH:
                self._chat_completions(body)
            elif self.command == "POST" and route == OPENAI_EMBEDDINGS_PATH:
                self._openai_embeddings(body)
            elif self.command == "POST" and route == DASHSCOPE_TEXT_EMBEDDING_PATH:
                self._dashscope_text_embedding(body)
            elif self.command == "POST" and route == RERANK_PATH:
                self._generic_rerank(body)
            elif self.command == "POST" and route == DASHSCOPE_TEXT_RERANK_PATH:
                self._dashscope_text_rerank(body)
            else:
                raise _StubError(404, f"Unknown endpoint: {self.command} {route}")
        except _StubError as exc:
            self._send_error(exc.status, exc.message, exc.code, dashscope)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bad chat_reply callback, or a bug in the stub
            logger.exception("ModelServer handler failed")
            self._send_error(
                500,
                f"ModelServer error: {type(exc).__name__}: {exc}",
                None,
                dashscope,
                {"x-should-retry": "false"},
            )

    def _misbehave(self, fault: str) -> None:
        """Apply a transport fault to the current request."""
        self.close_connection = True
        if fault == "reset":
            # Linger 0: closing sends RST instead of FIN, as a crashed proxy would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif fault == "hang":
            self.stub._release.wait(self.stub.hang_seconds)
        elif fault == "malformed_json":
            data = b'{"object": "list", "data": [{"embedding": [0.1, '
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        else:  # missing_fields
            self._send_json(200, {"request_id": str(uuid.uuid4())})

    def _faulty_vectors(self, vectors: list[list[float]]) -> list[list[float]]:
        """Apply a pending vector fault (if any) to an embedding answer."""
        fault = self.stub._take_fault(VECTOR_FAULTS)
        if fault == "short":
            return vectors[:-1]
        if fault == "nan":
            return [[math.nan, *vectors[0][1:]], *vectors[1:]]
        if fault == "wrong_dimension":
            return [[*vector, 0.0] for vector in vectors]
        return vectors

    def _send_json(
        self, status: int, payload: Any, extra_headers: dict[str, str] | None = None
    ) -> None:
        """Write a complete JSON response with Content-Length (keep-alive safe)."""
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", uuid.uuid4().hex)
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(
        self,
        status: int,
        message: str | None,
        code: str | None,
        dashscope: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Write an error body in the DashScope or OpenAI wire format."""
        payload: dict[str, Any]
        if dashscope:
            default_code, default_message = _DASHSCOPE_ERRORS.get(
                status, ("InternalError" if status >= 500 else "BadRequest", "Request failed.")
            )
            payload = {
                "code": code or default_code,
                "message": message or default_message,
                "request_id": str(uuid.uuid4()),
            }
        else:
            default_message, error_type, default_code = _OPENAI_ERRORS.get(
                status,
                (
                    "Request failed.",
                    "server_error" if status >= 500 else "invalid_request_error",
                    f"http_{status}",
                ),
            )
            payload = {
                "error": {
                    "message": message or default_message,
                    "type": error_type,
                    "param": None,
                    "code": code or default_code,
                }
            }
        try:
            self._send_json(status, payload, extra_headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        """Write one HTTP/1.1 chunk and flush it to the client."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- endpoints ------------------------------------------------------------------

    def _chat_completions(self, body: Any) -> None:
        """OpenAI ``POST /v1/chat/completions`` (plain or SSE-streamed)."""
        model = _model_of(body, dashscope=False)
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            raise _StubError(400, "'messages' must be a non-empty array of message objects.")
        reply = self.stub.chat_reply(messages)
        if not isinstance(reply, str):
            raise TypeError(f"chat_reply must return str, got {type(reply).__name__}")
        prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in messages)
        completion_tokens = count_tokens(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": None,
                },
            )
            return

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                event["usage"] = None
            return event

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [
            chunk({"content": reply[i : i + STREAM_CHUNK_CHARS]}, None)
            for i in range(0, len(reply), STREAM_CHUNK_CHARS)
        ]
        events.append(chunk({}, "stop"))
        if include_usage:
            usage_event = chunk({}, None)
            usage_event["choices"] = []
            usage_event["usage"] = usage
            events.append(usage_event)

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", uuid.uuid4().hex)
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _openai_embeddings(self, body: Any) -> None:
        """OpenAI ``POST /v1/embeddings``."""
        model = _model_of(body, dashscope=False)
        inputs = _openai_embedding_inputs(body.get("input"))
        dim = _positive_int(body.get("dimensions"), "dimensions", self.stub.embedding_dim)
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise _StubError(400, "'encoding_format' must be 'float' or 'base64'.")
        data: list[dict[str, Any]] = []
        vectors = self._faulty_vectors([stub_embedding(text, dim) for text, _tokens in inputs])
        for index, vector in enumerate(vectors):
            embedding: list[float] | str = vector
            if encoding_format == "base64":
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(n for _text, n in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _dashscope_text_embedding(self, body: Any) -> None:
        """DashScope native ``text-embedding`` service."""
        model = _model_of(body, dashscope=True)
        model_input = body.get("input")
        texts = model_input.get("texts") if isinstance(model_input, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _StubError(
                400, "input.texts must be a non-empty list of strings.", "InvalidParameter"
            )
        limit = DASHSCOPE_BATCH_LIMITS.get(model, DEFAULT_DASHSCOPE_BATCH_LIMIT)
        if len(texts) > limit:
            raise _StubError(
                400,
                f"batch size is invalid, it should not be larger than {limit}.",
                "InvalidParameter",
            )
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _StubError(400, "parameters must be an object.", "InvalidParameter")
        try:
            dim = _positive_int(
                (parameters or {}).get("dimension"), "dimension", self.stub.embedding_dim
            )
        except _StubError as exc:
            raise _StubError(400, exc.message, "InvalidParameter") from exc
        self._send_json(
            200,
            {
                "output": {
                    "embeddings": [
                        {"text_index": index, "embedding": vector}
                        for index, vector in enumerate(
                            self._faulty_vectors([stub_embedding(text, dim) for text in texts])
                        )
                    ]
                },
                "usage": {"total_tokens": sum(count_tokens(t) for t in texts)},
                "request_id": str(uuid.uuid4()),
            },
        )

    def _generic_rerank(self, body: Any) -> None:
        """Generic ``POST /v1/rerank`` (Jina / Cohere v2 / Xinference / vLLM / SiliconFlow)."""
        model = _model_of(body, dashscope=False)
        results, tokens = _rerank(
            body.get("query"),
            body.get("documents"),
            body.get("top_n"),
            body.get("return_documents"),
        )
        self._send_json(
            200,
            {
                "id": str(uuid.uuid4()),
                "model": model,
                "results": results,
                "usage": {"total_tokens": tokens},
            },
        )

    def _dashscope_text_rerank(self, body: Any) -> None:
        """DashScope native ``text-rerank`` service."""
        _model_of(body, dashscope=True)  # checked; the answer does not name it
        model_input = body.get("input")
        if not isinstance(model_input, dict):
            raise _StubError(400, "input must be an object.", "InvalidParameter")
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _StubError(400, "parameters must be an object.", "InvalidParameter")
        parameters = parameters or {}
        try:
            results, tokens = _rerank(
                model_input.get("query"),
                model_input.get("documents"),
                parameters.get("top_n"),
                parameters.get("return_documents"),
            )
        except _StubError as exc:
            raise _StubError(exc.status, exc.message, "InvalidParameter") from exc
        self._send_json(
            200,
            {
                "output": {"results": results},
                "usage": {"total_tokens": tokens},
                "request_id": str(uuid.uuid4()),
            },
        )


def _default_message(status: int, dashscope: bool) -> str:
    """The canned error message for ``status`` in the given format."""
    if dashscope:
        return _DASHSCOPE_ERRORS.get(status, ("", "Request failed."))[1]
    return _OPENAI_ERRORS.get(status, ("Request failed.", "", ""))[0]


class ModelServer:
    """Local OpenAI-compatible + DashScope model API over real HTTP on 127.0.0.1.

    Use as a context manager (or call :meth:`start` / :meth:`stop`): entering starts
    the server on a free port in a daemon thread; exiting shuts it down, drops open
    keep-alive connections, closes the socket and joins the thread.

    Attributes:
        api_key: the only key accepted (``Authorization: Bearer <api_key>``).
        embedding_dim: vector length when a request names no dimension.
        chat_reply: ``messages -> assistant text``; settable at any time (or use
            :meth:`answer`).

    Every request received is recorded, in arrival order: see :meth:`requests`.
    """

    def __init__(self, *, api_key: str = "sk-test", embedding_dim: int = 8) -> None:
        """Configure the stub; the server only starts on ``__enter__``/:meth:`start`."""
        if embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")
        self.api_key = api_key
        self.embedding_dim = embedding_dim
        self._recorded: list[RecordedRequest] = []
        self.chat_reply: ChatReply = default_chat_reply
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        self._faults: deque[str] = deque()
        self.hang_seconds = DEFAULT_HANG_SECONDS
        self._delays: dict[RequestKind | None, float] = {}
        self._release = threading.Event()
        self._server: _StubServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free 127.0.0.1 port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("ModelServer is already running")
        self._release.clear()
        server = _StubServer(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ModelServer:{server.server_port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: shutdown, drop open connections, server_close, join the thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._release.set()  # hanging requests give up now
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- addresses --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._server is None:
            raise RuntimeError("ModelServer is not running; use it as a context manager")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """OpenAI-compatible root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def dashscope_base_url(self) -> str:
        """DashScope native HTTP root, ``http://127.0.0.1:PORT/api/v1``."""
        return f"http://{HOST}:{self.port}/api/v1"

    # -- recording and failure injection ------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        """Append a received request (called from handler threads)."""
        with self._lock:
            self._recorded.append(request)

    def _take_failure(self, route: str) -> _Failure | None:
        """Pop the next injected failure, if any and if it is meant for ``route``'s kind."""
        with self._lock:
            if not self._failures:
                return None
            kind = self._failures[0].kind
            if kind is not None and _kind_of(route) != kind:
                return None  # it waits for a request of its kind
            return self._failures.popleft()

    def _delay_for(self, route: str) -> float:
        """Seconds a request to ``route`` is held before it is answered (see :meth:`delay`)."""
        with self._lock:
            return self._delays.get(_kind_of(route), self._delays.get(None, 0.0))

    def _take_fault(self, kinds: tuple[str, ...]) -> str | None:
        """Pop the next injected fault if it is one of ``kinds``."""
        with self._lock:
            if self._faults and self._faults[0] in kinds:
                return self._faults.popleft()
            return None

    def requests(self, kind: RequestKind | None = None) -> list[RecordedRequest]:
        """Recorded requests, in order: all of them, or those of one ``kind`` (``"chat"``,
        ``"embeddings"`` or ``"rerank"``, OpenAI and DashScope endpoints alike)."""
        if kind is None:
            with self._lock:
                return list(self._recorded)
        lists = {
            "chat": self.chat_requests,
            "embeddings": self.embedding_requests,
            "rerank": self.rerank_requests,
        }
        if kind not in lists:
            raise ValueError(f"kind must be one of {', '.join(lists)}, got {kind!r}")
        return lists[kind]()

    def chat_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST .../chat/completions`` requests, in order."""
        with self._lock:
            snapshot = list(self._recorded)
        return [
            r
            for r in snapshot
            if r.method == "POST" and _route(r.path).endswith("/chat/completions")
        ]

    def embedding_requests(self) -> list[RecordedRequest]:
        """Recorded OpenAI and DashScope embedding requests, in order."""
        with self._lock:
            snapshot = list(self._recorded)
        return [r for r in snapshot if r.method == "POST" and _route(r.path) in EMBEDDING_PATHS]

    def rerank_requests(self) -> list[RecordedRequest]:
        """Recorded generic (``/v1/rerank``) and DashScope rerank requests, in order."""
        with self._lock:
            snapshot = list(self._recorded)
        return [r for r in snapshot if r.method == "POST" and _route(r.path) in RERANK_PATHS]

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | None = None,
        kind: RequestKind | None = None,
    ) -> None:
        """Make the next ``times`` requests (any endpoint, or only those of ``kind``:
        ``"chat"``, ``"embeddings"``, ``"rerank"``) fail with HTTP ``status``.

        The error body uses the endpoint's wire format (OpenAI
        ``{"error": {"message", "type", "param", "code"}}`` or DashScope
        ``{"code", "message", "request_id"}``); ``retry_after`` (seconds) adds a
        ``Retry-After`` header. Failures are applied before the auth check and queue
        up behind any failures already pending.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if kind not in (None, "chat", "embeddings", "rerank"):
            raise ValueError(f"kind must be chat, embeddings or rerank, got {kind!r}")
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, kind) for _ in range(times))

    def fault_next(self, fault: str, times: int = 1) -> None:
        """Make the next ``times`` requests misbehave in the way ``fault`` names.

        ``fault`` is one of :data:`FAULTS`. Transport faults (:data:`TRANSPORT_FAULTS`)
        hit the next request to any endpoint; vector faults (:data:`VECTOR_FAULTS`) hit
        the next embedding request and wait while other requests pass. Faults queue up
        in order, behind any pending :meth:`fail_next` statuses (which come first).
        """
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.extend([fault] * times)

    def delay(self, seconds: float, kind: RequestKind | None = None) -> None:
        """Hold every request (or, with ``kind``, every ``"chat"``, ``"embeddings"`` or
        ``"rerank"`` request) ``seconds`` before answering it, as a remote model's own time
        would; 0 turns it off. A delay of a kind wins over the one for every request.
        Requests wait in their own threads, so concurrent ones overlap.

        >>> server = ModelServer()
        >>> server.delay(0.1, kind="embeddings")    # each embeddings request takes 100 ms
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if kind not in (None, "chat", "embeddings", "rerank"):
            raise ValueError(f"kind must be chat, embeddings or rerank, got {kind!r}")
        with self._lock:
            self._delays[kind] = seconds

    def answer(self, *replies: str) -> None:
        """What the chat model answers from now on: one reply for every request, or several
        given in turn (the last one then repeats). Cite a retrieved chunk with ``[n]``.

        >>> server = ModelServer()
        >>> server.answer("退款在3个工作日内到账[1]。")
        >>> server.chat_reply([{"role": "user", "content": "退款多久到账"}])
        '退款在3个工作日内到账[1]。'
        """
        if not replies:
            raise ValueError("answer() needs at least one reply")
        queue = deque(replies)

        def reply(messages: list[dict[str, Any]]) -> str:
            with self._lock:
                return queue.popleft() if len(queue) > 1 else queue[0]

        self.chat_reply = reply

    def timeout_next(self, times: int = 1) -> None:
        """The next ``times`` requests are read and never answered (a client times out; the
        request is held at most :attr:`hang_seconds`)."""
        self.fault_next("hang", times)

    def nan_next(self, times: int = 1) -> None:
        """The next ``times`` embedding answers start with a NaN component."""
        self.fault_next("nan", times)

    def settings(
        self, base: Settings, *, provider: str = "openai", embeddings: bool = False
    ) -> Settings:
        """``base`` with its chat model on this server (``provider`` ``"openai"`` or
        ``"dashscope"``, both through the OpenAI-compatible endpoint, with this server's key);
        with ``embeddings`` the document vectors come from here too (openai-compatible
        provider, :attr:`embedding_dim` dimensions)."""
        from rag_pipeline.testing.settings import override

        keys = {"openai": "openai_api_key", "dashscope": "dashscope_api_key"}
        if provider not in keys:
            raise ValueError(f"provider must be 'openai' or 'dashscope', got {provider!r}")
        changes: dict[str, Any] = {
            "llm": {"provider": provider, "base_url": self.base_url},
            keys[provider]: self.api_key,
        }
        if embeddings:
            changes["embeddings"] = {
                "provider": "openai",
                "base_url": self.base_url,
                "model": "text-embedding-v4",
                "dimensions": self.embedding_dim,
            }
            changes["openai_api_key"] = self.api_key
        return override(base, **changes)

    def reset(self) -> None:
        """Forget recorded requests, pending failures and faults (``chat_reply`` is kept)."""
        with self._lock:
            self._recorded.clear()
            self._failures.clear()
            self._faults.clear()
