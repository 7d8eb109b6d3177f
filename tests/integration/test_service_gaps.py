"""The knowledge-gap log through the live service (/v1/feedback, /v1/gaps) and ``rag gaps``
run as a real process on the same data folder.

Answers come from the live service's ``state.assistant`` and are logged with
``state.gaps.record_answer``, as /v1/ask does after each answer.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from rag_pipeline.service.state import ServiceState
from tests.helpers import fake_settings, write_corpus
from tests.integration.live_service import live_service
from tests.integration.processes import run_python

USER, ADMIN = "user-key-1", "admin-key-1"
AS_USER = {"Authorization": f"Bearer {USER}"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
# Near-duplicates of one question the sample corpus cannot answer (bigram Jaccard >= 0.5).
MARS = ["火星上可以送货吗", "火星上可以送货么？", "请问 火星上可以送货吗"]


def _settings(tmp_path: Path, **serve: Any) -> Settings:
    # Thresholds for the fake embeddings: the FAQ question of the sample corpus scores 0.75,
    # the questions about Mars 0.1 (refused).
    settings = fake_settings(
        tmp_path / "data",
        serve={"api_keys": [USER], "admin_keys": [ADMIN], "low_confidence": 0.7, **serve},
        retriever={"score_threshold": 0.5},
    )
    ingest([write_corpus(tmp_path / "corpus")], settings)
    return settings


def _ask(state: ServiceState, question: str) -> tuple[str, bool]:
    answer_id = uuid.uuid4().hex
    answer = state.assistant.ask(question)
    state.gaps.record_answer(answer, answer_id=answer_id, session_id="session-1")
    return answer_id, answer.refused


def _rag_gaps(data_dir: Path, *args: str) -> Any:
    return run_python(
        ["-m", "rag_pipeline.cli", "gaps", "--data-dir", str(data_dir), *args], timeout=120
    )


def test_refused_and_thumbs_down_questions_are_grouped(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with live_service(settings) as live:
        state = live.state
        assert [_ask(state, q)[1] for q in MARS] == [True, True, True]
        answered, refused = _ask(state, "怎么修改收货地址")
        assert not refused

        feedback = live.url + "/v1/feedback"
        down = {"answer_id": answered, "rating": "down", "comment": "没说发货后怎么办"}
        assert httpx.post(feedback, json=down).status_code == 401
        up = {"answer_id": answered, "rating": "up"}
        assert httpx.post(feedback, json=up, headers=AS_USER).status_code == 200
        done = httpx.post(feedback, json=down, headers=AS_USER)  # changed their mind
        assert (done.status_code, done.json()) == (200, {"status": "recorded"})
        unknown = {"answer_id": "no-such-answer", "rating": "down"}
        assert httpx.post(feedback, json=unknown, headers=AS_USER).status_code == 404
        bad = {"answer_id": answered, "rating": "meh"}
        assert httpx.post(feedback, json=bad, headers=AS_USER).status_code == 422

        gaps = live.url + "/v1/gaps"
        assert httpx.get(gaps, headers=AS_USER).status_code == 403
        groups = httpx.get(gaps, headers=AS_ADMIN).json()["groups"]
        mars = groups[0]
        assert mars["count"] == 3 and mars["kinds"] == {"refused": 3}
        assert set(mars["questions"]) == set(MARS)
        address = next(g for g in groups if g["example"] == "怎么修改收货地址")
        assert address["kinds"] == {"thumbs_down": 1}  # thumbs-up is no gap
        assert address["comments"] == ["没说发货后怎么办"]
        future = httpx.get(gaps, params={"since": "2999-01-01"}, headers=AS_ADMIN)
        assert future.json() == {"groups": []}
        wrong = httpx.get(gaps, params={"since": "yesterday"}, headers=AS_ADMIN)
        assert wrong.status_code == 422 and "YYYY-MM-DD" in wrong.json()["error"]["message"]

    # rag gaps, a separate process reading the same log.
    cli = _rag_gaps(settings.data_dir, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == groups
    table = _rag_gaps(settings.data_dir)
    assert table.returncode == 0, table.stderr
    assert "refused 3" in table.stdout and any(q in table.stdout for q in MARS)
    since = _rag_gaps(settings.data_dir, "--since", "last week")
    assert since.returncode == 2 and "--since" in since.stderr


def test_rag_gaps_on_an_empty_log(tmp_path: Path) -> None:
    done = _rag_gaps(tmp_path / "nothing-here")
    assert done.returncode == 0, done.stderr
    assert "no gaps recorded yet" in done.stdout
    assert not (tmp_path / "nothing-here" / "state.sqlite").exists()  # reading created none


def test_without_log_questions_no_question_text_is_stored(tmp_path: Path) -> None:
    settings = _settings(tmp_path, log_questions=False)
    secret = "火星上可以送货吗我的电话13800138000"
    with live_service(settings) as live:
        answer_id, refused = _ask(live.state, secret)
        assert refused
        down = {"answer_id": answer_id, "rating": "down", "comment": "评论13900139000"}
        assert httpx.post(live.url + "/v1/feedback", json=down, headers=AS_USER).status_code == 200
        groups = httpx.get(live.url + "/v1/gaps", headers=AS_ADMIN).json()["groups"]
    assert [(g["count"], g["example"], g["questions"]) for g in groups] == [(2, None, [])]
    stored = b"".join(p.read_bytes() for p in settings.data_dir.glob("state.sqlite*"))
    assert answer_id.encode() in stored  # the log was written ...
    for text in (secret, "13800138000", "13900139000"):
        assert text.encode() not in stored  # ... without the user's words
