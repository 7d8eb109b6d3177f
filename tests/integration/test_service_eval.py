"""The evaluation from the admin API on a real uvicorn server: who may run it, the summary and
the report behind its capability link, the report's own policy, no questions, one at a time.

A real evaluation (fake embeddings) of a small knowledge base with its questions.jsonl and
out_of_scope.jsonl, ingested into the served collection as a user would.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from rag_pipeline.service import eval_api
from tests.helpers import fake_settings, write_corpus
from tests.integration.live_service import LiveService, live_service

USER, ADMIN = "user-key-1", "admin-key-1"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_USER = {"Authorization": f"Bearer {USER}"}
THRESHOLD = 0.3
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
QUESTIONS = [
    {"question": "退货运费谁承担", "sources": ["returns.md"], "answer_contains": "买家承担"},
    {"question": "不满99元运费多少", "sources": ["shipping.txt"], "answer_contains": "8元"},
    {"question": "退款多久到账", "sources": ["returns.md"], "answer_contains": "3个"},
]


def write_knowledge_base(folder: Path) -> Path:
    """The small corpus with its questions, kept out of the index by .ragignore."""
    kb = write_corpus(folder)
    (kb / "questions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in QUESTIONS), encoding="utf-8"
    )
    (kb / "out_of_scope.jsonl").write_text(
        '{"question": "今天天气怎么样"}\n{"question": "股票明天会涨吗"}\n', encoding="utf-8"
    )
    (kb / ".ragignore").write_text("questions.jsonl\nout_of_scope.jsonl\n", encoding="utf-8")
    return kb


def _settings(tmp_path: Path) -> Settings:
    return fake_settings(
        tmp_path / "data",
        serve={"api_keys": [USER], "admin_keys": [ADMIN]},
        retriever={"score_threshold": THRESHOLD},
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LiveService]:
    settings = _settings(tmp_path)
    ingest([write_knowledge_base(tmp_path / "kb")], settings)
    with live_service(settings) as live:
        yield live


def _run(live: LiveService, headers: dict[str, str] | None = AS_ADMIN) -> httpx.Response:
    return httpx.post(live.url + "/v1/eval", headers=headers, timeout=300)


def _error(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message


def test_only_an_admin_key_runs_it_or_reads_the_latest(service: LiveService) -> None:
    for method, path in (("POST", "/v1/eval"), ("GET", "/v1/eval/latest")):
        assert httpx.request(method, service.url + path, timeout=30).status_code == 401, path
        denied = httpx.request(method, service.url + path, headers=AS_USER, timeout=30)
        assert denied.status_code == 403, path
        assert "admin key" in _error(denied)
    assert not (service.state.settings.data_dir / "reports").exists()  # nothing ran


def test_a_run_gives_the_figures_and_a_link_that_opens_without_a_key(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag_pipeline.embeddings

    def no_second_model(settings: Any) -> Any:
        raise AssertionError("the evaluation built a second embedding model")

    # The served model is reused: building one now would fail the run.
    monkeypatch.setattr(rag_pipeline.embeddings, "build_embedding_model", no_second_model)
    # And the data folder's cache: the chunks the served ingest embedded are not embedded again.
    embeddings = service.state.snapshot.model.embeddings
    embedded: list[str] = []
    real_embed = embeddings.embed_documents

    def counting(texts: list[str]) -> list[list[float]]:
        embedded.extend(texts)
        return real_embed(texts)

    monkeypatch.setattr(embeddings, "embed_documents", counting)
    done = _run(service)
    assert done.status_code == 200, done.text
    assert embedded == []
    body = done.json()
    figures = body["summary"]
    assert figures["n_queries"] == len(QUESTIONS) and figures["n_out_of_scope"] == 2
    assert figures["score_threshold"] == THRESHOLD and figures["config"] == "hybrid"
    for name in ("hit@1", "hit@5", "answer_contains", "refused_in_scope", "refused_out_of_scope"):
        assert 0.0 <= figures[name] <= 1.0, (name, figures)
    assert figures["hit@5"] == 1.0  # three files: every expected source is in the top 5
    assert figures["datasets"] == [str((service.state.settings.data_dir.parent / "kb").resolve())]

    kept = service.state.settings.data_dir / "reports" / body["report"]
    assert re.fullmatch(r"eval-\d{8}T\d{6}\.\d{6}Z\.html", kept.name) and kept.is_file()
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temporary file left
    # The scratch index lives in the data folder, beside (not inside) the served collection.
    assert (service.state.settings.data_dir / "eval-scratch" / "data").is_dir()

    match = re.fullmatch(r"/v1/eval/reports/([A-Za-z0-9_-]{43})", body["report_url"])
    assert match is not None, body["report_url"]
    page = httpx.get(service.url + body["report_url"], timeout=30)  # no Authorization header
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.text == kept.read_text(encoding="utf-8")
    assert f"threshold {THRESHOLD:.2f}" in page.text and "<td>hybrid</td>" in page.text
    # Opened without a key, so it must not show one: the settings it lists are masked.
    assert USER not in page.text and ADMIN not in page.text

    latest = httpx.get(service.url + "/v1/eval/latest", headers=AS_ADMIN, timeout=30)
    assert latest.status_code == 200 and latest.text == page.text
    assert latest.headers["content-security-policy"] == POLICY

    for wrong in (match[1][:-1] + ("A" if match[1][-1] != "A" else "B"), "x", kept.name):
        missing = httpx.get(f"{service.url}/v1/eval/reports/{wrong}", timeout=30)
        assert missing.status_code == 404, wrong
        assert "no such report link" in _error(missing)


def test_an_expired_link_is_gone(service: LiveService) -> None:
    service.state.evaluations.links.ttl = 0.0  # every link issued from now on is expired
    body = _run(service).json()
    assert httpx.get(service.url + body["report_url"], timeout=30).status_code == 404
    # The file is still kept, and the latest for scripts.
    latest = httpx.get(service.url + "/v1/eval/latest", headers=AS_ADMIN, timeout=30)
    assert latest.status_code == 200


def test_without_questions_it_says_where_to_put_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ingest([write_corpus(tmp_path / "corpus")], settings)
    with live_service(settings) as live:
        missing = _run(live)
        assert missing.status_code == 404
        message = _error(missing)
        assert "questions.jsonl" in message and '"Evaluation"' in message
        assert str(settings.documents_dir) in message
        none_yet = httpx.get(live.url + "/v1/eval/latest", headers=AS_ADMIN, timeout=30)
        assert none_yet.status_code == 404 and "POST /v1/eval" in _error(none_yet)


def test_a_malformed_question_line_is_named(service: LiveService) -> None:
    questions = service.state.settings.data_dir.parent / "kb" / "questions.jsonl"
    with questions.open("a", encoding="utf-8") as f:
        f.write('{"question": "没有来源的问题"}\n')
    refused = _run(service)
    assert refused.status_code == 422
    assert _error(refused) == (
        f'{questions.resolve()}, line {len(QUESTIONS) + 1}: "sources" must be a list of file '
        "names (relative to the folder)"
    )
    assert not (service.state.settings.data_dir / "reports").exists()


def test_a_second_run_while_one_runs_is_refused(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = eval_api.evaluate

    def held(*args: Any, **kwargs: Any) -> dict[str, Any]:
        entered.set()
        assert release.wait(120), "the test never released the evaluation"
        return real(*args, **kwargs)

    monkeypatch.setattr(eval_api, "evaluate", held)
    first: list[httpx.Response] = []
    runner = threading.Thread(target=lambda: first.append(_run(service)))
    runner.start()
    try:
        assert entered.wait(60), "the first evaluation did not start"
        second = _run(service)
        assert second.status_code == 409
        assert "an evaluation is already running" in _error(second)
    finally:
        release.set()
        runner.join(300)
    assert first and first[0].status_code == 200, first
    # Once done, the next one runs.
    monkeypatch.setattr(eval_api, "evaluate", real)
    assert _run(service).status_code == 200
