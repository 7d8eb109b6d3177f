"""The native API of ``rag serve`` on a real uvicorn server: health and readiness, /v1/ask with
server-kept sessions and per-request ``k`` / ``filter``, /v1/search, the request limits, the
bearer keys, and an access log that never shows a key. One small corpus is ingested once for
the module with fake embeddings; answers come from the extractive model."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_pipeline.chain import Answer
from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from rag_pipeline.service.state import ServiceState
from tests.helpers import fake_settings, hermetic, write_corpus
from tests.integration.live_service import LiveService, live_service

USER_KEY = "user-key-5f0c1e9a"
ADMIN_KEY = "admin-key-77d2b4c3"
WRONG_KEY = "wrong-key-0a9b8c7d"
USER = {"Authorization": f"Bearer {USER_KEY}"}


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    serve = {"api_keys": [USER_KEY], "admin_keys": [ADMIN_KEY], **overrides.pop("serve", {})}
    return fake_settings(
        data_dir,
        embeddings={"cache": False, **overrides.pop("embeddings", {})},
        retriever={"score_threshold": 0.3},
        llm={"provider": "extractive"},
        serve=serve,
        **overrides,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("service-api")
    with hermetic(root):
        settings = service_settings(root / "data")
        assert not ingest([write_corpus(root / "corpus")], settings).files_failed
        yield settings.data_dir


@pytest.fixture(scope="module")
def service(data_dir: Path) -> Iterator[LiveService]:
    with hermetic(data_dir.parent):
        settings = service_settings(
            data_dir, serve={"max_question_chars": 50, "max_body_kb": 4, "session_turns": 2}
        )
        with live_service(settings) as live:
            yield live


def post(service: LiveService, path: str, body: Any, key: str | None = USER_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(service.url + path, json=body, headers=headers, timeout=60)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "code", "param"} == set(body["error"])
    error: dict[str, Any] = body["error"]
    return error


def test_health_and_readiness(service: LiveService) -> None:
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(service.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "collection": "rag",
        "model": "rag",
        "chat_model": "extractive",
    }


def test_readyz_is_503_until_loaded(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load = ServiceState.load

    def held_load(self: ServiceState) -> None:
        assert release.wait(60)
        real_load(self)

    monkeypatch.setattr(ServiceState, "load", held_load)
    with live_service(service_settings(data_dir), wait_ready=False) as live:
        loading = httpx.get(live.url + "/readyz")
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        assert httpx.get(live.url + "/healthz").json() == {"status": "ok"}
        early = post(live, "/v1/ask", {"question": "运费怎么算"})
        assert early.status_code == 503 and "loading" in error_of(early)["message"]
        release.set()
        assert live.state.ready.wait(60)
        assert httpx.get(live.url + "/readyz").status_code == 200
        assert post(live, "/v1/ask", {"question": "运费怎么算"}).status_code == 200


def test_readyz_shows_the_load_error(data_dir: Path) -> None:
    """Another embedding model than the collection's: the process stays up and says why."""
    settings = service_settings(data_dir, embeddings={"dimensions": 64})
    with live_service(settings, wait_ready=False) as live:
        assert live.state.ready.wait(60)
        failed = httpx.get(live.url + "/readyz")
        body = failed.json()
        assert failed.status_code == 503 and body["status"] == "failed"
        assert "rag ingest --rebuild" in body["error"]["message"]
        asked = post(live, "/v1/ask", {"question": "运费怎么算"})
        assert asked.status_code == 503 and "rebuild" in error_of(asked)["message"]
        assert "Traceback" not in asked.text


def test_ask_returns_the_ask_json_object_with_ids(service: LiveService) -> None:
    response = post(service, "/v1/ask", {"question": "不满99元运费多少钱"})
    body = response.json()
    assert response.status_code == 200
    assert {"answer", "refused", "generated", "degraded", "sources", "standalone_question"} <= set(
        body
    )
    assert body["refused"] is False and body["generated"] is False
    assert "运费8元" in body["answer"] and body["sources"][0]["source"] == "shipping.txt"
    assert len(body["session_id"]) == 32 and len(body["answer_id"]) == 32
    assert response.headers["x-answer-id"] == body["answer_id"]
    again = post(service, "/v1/ask", {"question": "不满99元运费多少钱"}).json()
    assert again["session_id"] != body["session_id"] and again["answer_id"] != body["answer_id"]


def test_a_session_keeps_the_conversation(service: LiveService) -> None:
    first = post(service, "/v1/ask", {"question": "运费怎么算"}).json()
    follow_up = post(
        service, "/v1/ask", {"question": "那偏远地区呢", "session_id": first["session_id"]}
    ).json()
    assert follow_up["session_id"] == first["session_id"]
    # The rule-based condense of the extractive model: the previous question is prefixed.
    assert follow_up["standalone_question"] == "运费怎么算 那偏远地区呢"
    assert "偏远地区" in follow_up["answer"]
    alone = post(service, "/v1/ask", {"question": "那偏远地区呢"}).json()
    assert alone["standalone_question"] == "那偏远地区呢"  # another session knows nothing


def test_a_client_chosen_session_id_is_kept(service: LiveService) -> None:
    post(service, "/v1/ask", {"question": "运费怎么算", "session_id": "widget-42"})
    follow_up = post(service, "/v1/ask", {"question": "那偏远地区呢", "session_id": "widget-42"})
    assert follow_up.json()["standalone_question"] == "运费怎么算 那偏远地区呢"
    bad = post(service, "/v1/ask", {"question": "运费", "session_id": "a b"})
    assert bad.status_code == 422 and error_of(bad)["param"] == "session_id"


def test_every_answer_goes_to_the_gap_log(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Answer, str, str | None]] = []

    def record_answer(answer: Answer, *, answer_id: str, session_id: str | None) -> None:
        calls.append((answer, answer_id, session_id))

    monkeypatch.setattr(service.state.gaps, "record_answer", record_answer)
    answered = post(service, "/v1/ask", {"question": "不满99元运费多少钱"}).json()
    refused = post(service, "/v1/ask", {"question": "今天天气怎么样"}).json()
    assert refused["refused"] is True and refused["sources"] == []
    assert [(a.answer, i, s) for a, i, s in calls] == [
        (answered["answer"], answered["answer_id"], answered["session_id"]),
        (refused["answer"], refused["answer_id"], refused["session_id"]),
    ]


def test_k_and_filter_apply_to_one_request_only(service: LiveService) -> None:
    question = "退货运费"
    narrowed = post(
        service, "/v1/search", {"query": question, "k": 1, "filter": {"source": "returns.md"}}
    ).json()["results"]
    assert len(narrowed) == 1 and narrowed[0]["source"] == "returns.md"
    assert narrowed[0]["metadata"]["source"] == "returns.md"
    assert {"source", "score", "content", "metadata"} == set(narrowed[0])
    everything = post(service, "/v1/search", {"query": question}).json()["results"]
    assert len(everything) > 2 and {r["source"] for r in everything} > {"returns.md"}
    asked = post(
        service,
        "/v1/ask",
        {"question": question, "k": 1, "filter": {"source": {"$in": ["returns.md"]}}},
    ).json()
    assert [s["source"] for s in asked["sources"]] == ["returns.md"]
    # Nothing of the shipping file may answer when the filter leaves it out.
    excluded = post(
        service, "/v1/ask", {"question": "不满99元运费多少钱", "filter": {"source": "faq.csv"}}
    ).json()
    assert "shipping.txt" not in {s["source"] for s in excluded["sources"]}
    assert "shipping.txt" in {
        s["source"]
        for s in post(service, "/v1/ask", {"question": "不满99元运费多少钱"}).json()["sources"]
    }


def test_bad_requests_are_422_naming_the_field(service: LiveService) -> None:
    too_long = post(service, "/v1/ask", {"question": "运" * 51})
    error = error_of(too_long)
    assert too_long.status_code == 422 and error["param"] == "question"
    assert "question" in error["message"] and "50" in error["message"]
    for body, field in [
        ({"question": "   "}, "question"),
        ({"question": "运费", "filter": {"page": {"$like": 2}}}, "filter"),
        ({"question": "运费", "k": 0}, "k"),
        ({"question": "运费", "kk": 3}, "kk"),  # a typo is not ignored
        ({}, "question"),
    ]:
        response = post(service, "/v1/ask", body)
        assert response.status_code == 422, body
        assert error_of(response)["param"] == field and field in error_of(response)["message"]
    bad_filter = post(service, "/v1/search", {"query": "运费", "filter": {"$or": 3}})
    assert bad_filter.status_code == 422 and error_of(bad_filter)["param"] == "filter"
    assert post(service, "/v1/search", {"query": ""}).status_code == 422


def test_a_body_over_the_limit_is_413(service: LiveService) -> None:
    big = {"question": "运费", "filter": {"note": "x" * 5000}}
    response = post(service, "/v1/ask", big)
    assert response.status_code == 413 and "4 KB" in error_of(response)["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield b'{"question": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    streamed = httpx.post(
        service.url + "/v1/ask",
        content=chunked(),
        headers={**USER, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "request_too_large"


def test_keys(service: LiveService) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/ask", {"question": "运费怎么算"}),
        ("POST", "/v1/search", {"query": "运费"}),
        ("GET", "/v1/models", None),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "rag", "messages": [{"role": "user", "content": "运费"}]},
        ),
    ]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": USER_KEY}):
            denied = httpx.request(method, service.url + path, json=body, headers=headers)
            assert denied.status_code == 401, (path, headers)
            assert error_of(denied)["type"] == "authentication_error"
            assert denied.headers["www-authenticate"] == "Bearer"
        for key in (USER_KEY, ADMIN_KEY):  # an admin key passes the user routes too
            allowed = httpx.request(
                method, service.url + path, json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert allowed.status_code == 200, (path, allowed.text)
    assert httpx.get(service.url + "/healthz").status_code == 200  # open
    assert httpx.get(service.url + "/readyz").status_code == 200


def test_no_key_or_text_reaches_the_logs(
    service: LiveService, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rag_pipeline"):
        caplog.set_level(logging.DEBUG, logger=name)
        # uvicorn's default log config (applied by any server started earlier in this
        # process) stops its loggers propagating, which would hide their records from caplog.
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    caplog.set_level(logging.DEBUG)
    question = "不满99元运费多少钱"
    answered = post(service, "/v1/ask", {"question": question}).json()
    post(service, "/v1/ask", {"question": question}, key=ADMIN_KEY)
    post(service, "/v1/ask", {"question": question}, key=WRONG_KEY)
    httpx.get(service.url + "/v1/models", headers=USER)
    # The server's records (this process's httpx/httpcore records are the test client's).
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("uvicorn" in r.name for r in caplog.records)
    for line in lines:
        for secret in (USER_KEY, ADMIN_KEY, WRONG_KEY, question, "运费8元"):
            assert secret not in line, line
    access = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "rag_pipeline.service.access"
    ]
    statuses = [(a["method"], a["path"], a["status"]) for a in access]
    assert statuses == [
        ("POST", "/v1/ask", 200),
        ("POST", "/v1/ask", 200),
        ("POST", "/v1/ask", 401),
        ("GET", "/v1/models", 200),
    ]
    assert access[0]["answer_id"] == answered["answer_id"] and "answer_id" not in access[2]
    assert all(a["latency_ms"] >= 0 and a["client"].startswith("127.0.0.1:") for a in access)


def test_cors_is_off_unless_origins_are_configured(service: LiveService, data_dir: Path) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    closed = httpx.options(service.url + "/v1/ask", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    with hermetic(data_dir.parent):
        settings = service_settings(data_dir, serve={"cors_origins": ["https://shop.example"]})
        with live_service(settings) as open_to_one:
            allowed = httpx.options(open_to_one.url + "/v1/ask", headers=preflight)
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
            other = {**preflight, "Origin": "https://evil.example"}
            refused = httpx.options(open_to_one.url + "/v1/ask", headers=other)
            assert "access-control-allow-origin" not in refused.headers
