"""The HTTP plumbing in memory (Starlette's TestClient, no socket): the one error shape with
library errors mapped to statuses, the body limit, the access log, the key checks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rag_pipeline.config import Settings
from rag_pipeline.errors import (
    ConfigurationError,
    EmptyIndexError,
    ProviderError,
    StoreUnavailableError,
)
from rag_pipeline.service import http_errors
from rag_pipeline.service.access_log import ANSWER_ID_HEADER, AccessLog
from rag_pipeline.service.auth import require_admin, require_user
from rag_pipeline.service.limits import BodyLimit
from rag_pipeline.service.openai_protocol import ChatCompletionChunk, ChunkChoice, Delta
from rag_pipeline.service.state import NotReadyError

USER_KEY, ADMIN_KEY = "u-key-1", "a-key-2"


class Body(BaseModel):
    text: str


def tiny_app(**serve: object) -> FastAPI:
    """The service's middleware and error handlers around a few routes that fail on demand."""
    app = FastAPI()
    app.state.service = SimpleNamespace(settings=Settings(serve=serve))
    http_errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=100)
    app.add_middleware(AccessLog)
    errors = {
        "provider": ProviderError("the chat model API failed: HTTP 500"),
        "store": StoreUnavailableError("cannot reach the Chroma server at localhost:8000"),
        "empty": EmptyIndexError("nothing ingested"),
        "loading": NotReadyError("the service is still loading its models"),
        "config": ConfigurationError("bad\nsetting"),
        "bug": KeyError("secret internals"),
    }

    @app.post("/echo")
    def echo(body: Body) -> dict[str, str]:
        return {"text": body.text}

    @app.get("/fail/{kind}")
    def fail(kind: str) -> None:
        raise errors[kind]

    @app.get("/answer")
    def answer() -> object:
        from fastapi.responses import JSONResponse

        return JSONResponse({}, headers={ANSWER_ID_HEADER: "abc123"})

    @app.get("/user", dependencies=[Depends(require_user)])
    def user() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/admin", dependencies=[Depends(require_admin)])
    def admin() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = tiny_app(api_keys=[USER_KEY], admin_keys=[ADMIN_KEY])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("kind", "status"),
    [("provider", 502), ("store", 503), ("empty", 503), ("loading", 503), ("config", 500)],
)
def test_library_errors_have_a_status_and_one_line(
    client: TestClient, kind: str, status: int
) -> None:
    response = client.get(f"/fail/{kind}")
    error = response.json()["error"]
    assert response.status_code == status and "\n" not in error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")


def test_a_bug_is_a_500_without_its_details(client: TestClient) -> None:
    response = client.get("/fail/bug")
    assert response.status_code == 500
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert response.json()["error"]["code"] == "internal"


def test_framework_errors_take_the_same_shape(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    invalid = client.post("/echo", json={"text": 3})
    error = invalid.json()["error"]
    assert invalid.status_code == 422 and error["param"] == "text"
    assert error["message"].startswith("text: ")


def test_the_body_limit(client: TestClient) -> None:
    assert client.post("/echo", json={"text": "x" * 50}).json() == {"text": "x" * 50}
    big = client.post("/echo", json={"text": "x" * 200})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"x" * 200
        yield b'"}'

    streamed = client.post("/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    upload = client.post("/echo", files={"f": ("a.txt", b"x" * 500)})
    assert upload.status_code == 422  # multipart is the upload routes' business: not a 413


def test_keys(client: TestClient) -> None:
    assert client.get("/user").status_code == 401
    assert client.get("/user", headers=bearer("nope")).status_code == 401
    assert client.get("/user", headers={"Authorization": USER_KEY}).status_code == 401
    assert client.get("/user", headers=bearer(USER_KEY)).status_code == 200
    assert client.get("/user", headers=bearer(ADMIN_KEY)).status_code == 200
    forbidden = client.get("/admin", headers=bearer(USER_KEY))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_error"
    assert "RAG_SERVE__ADMIN_KEYS" in forbidden.json()["error"]["message"]
    assert client.get("/admin", headers=bearer("nope")).status_code == 401
    assert client.get("/admin", headers=bearer(ADMIN_KEY)).status_code == 200


def test_without_keys_the_routes_are_open() -> None:
    with TestClient(tiny_app()) as open_client:
        assert open_client.get("/user").status_code == 200
        assert open_client.get("/admin").status_code == 200


def test_one_access_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rag_pipeline.service.access")
    client.get("/answer?token=abc", headers=bearer(USER_KEY))
    client.post("/echo", json={"text": "do not log me"}, headers=bearer(USER_KEY))
    client.get("/admin", headers=bearer(USER_KEY))
    lines = [r.getMessage() for r in caplog.records if r.name == "rag_pipeline.service.access"]
    records = [json.loads(line) for line in lines]
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("GET", "/answer", 200),
        ("POST", "/echo", 200),
        ("GET", "/admin", 403),
    ]
    assert records[0]["answer_id"] == "abc123" and "answer_id" not in records[1]
    assert set(records[1]) == {"time", "method", "path", "status", "latency_ms", "client"}
    for line in lines:
        assert USER_KEY not in line and "do not log me" not in line and "token" not in line


def test_a_stream_chunk_keeps_finish_reason_and_drops_unset_extras() -> None:
    chunk = ChatCompletionChunk(
        id="c", created=1, model="rag", choices=[ChunkChoice(delta=Delta(content="a"))]
    )
    event = chunk.sse()
    assert event.startswith("data: ") and event.endswith("\n\n")
    data = json.loads(event.removeprefix("data: "))
    assert data["choices"][0] == {"index": 0, "delta": {"content": "a"}, "finish_reason": None}
    assert not {"sources", "refused", "answer_id"} & set(data)
