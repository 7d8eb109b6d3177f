"""The gap log and the server-kept sessions on a real PostgreSQL (the testing kit's
``postgres_server``): answers, feedback and the grouped report as on SQLite, ``rag gaps``'s
report through ``RAG_STATE__URL``, and the sessions contract of
tests/unit/test_service_sessions.py (two replicas on one database, concurrent turns)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from rag_pipeline.chain import Answer, Source
from rag_pipeline.config import Settings
from rag_pipeline.gaps import GapLog, print_report
from rag_pipeline.state_db import open_state
from tests.unit.test_service_sessions import SessionsContract


def _answer(question: str, *scores: float, refused: bool = False) -> Answer:
    sources = [
        Source(number=n, source=f"doc{n}.md", score=score, content="...")
        for n, score in enumerate(scores, start=1)
    ]
    return Answer(question, question, "答", refused, sources=sources, context=sources)


class TestSessionsOnPostgreSQL(SessionsContract):
    @pytest.fixture
    def engine(self, postgres_server: Any) -> Engine:
        return open_state(postgres_server.fresh_database())


def test_the_gap_log_on_postgresql(
    postgres_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_server.fresh_database()
    settings = Settings(
        data_dir=tmp_path / "data", embeddings={"provider": "fake"}, state={"url": url}
    )
    log = GapLog(settings, log_questions=True, low_confidence=0.85)
    log.record_answer(_answer("运费怎么算", refused=True), answer_id="a1", session_id="s1")
    log.record_answer(_answer("运费怎么计算", 0.6, 0.8), answer_id="a2", session_id=None)
    log.record_answer(_answer("退货流程", 0.95), answer_id="a3", session_id=None)  # confident
    assert log.record_feedback("a3", "up") is True
    assert log.record_feedback("a3", "down", "说得不对") is True  # replaces the thumbs-up
    assert log.record_feedback("nope", "down") is False
    first, second = log.report()
    assert (first["count"], first["kinds"]) == (2, {"refused": 1, "low_confidence": 1})
    assert first["best_score"] == 0.8 and first["top_sources"] == ["doc2.md", "doc1.md"]
    assert (second["example"], second["kinds"], second["comments"]) == (
        "退货流程",
        {"thumbs_down": 1},
        ["说得不对"],
    )
    assert print_report(settings, since=None, as_json=False) == 0
    assert "refused 1, low_confidence 1" in capsys.readouterr().out
    assert not settings.data_dir.exists()  # nothing written to a data folder


def test_gap_log_writers_on_postgresql_lose_nothing(postgres_server: Any) -> None:
    engine = open_state(postgres_server.fresh_database())
    log = GapLog(engine, log_questions=False, low_confidence=0.85)
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            for i in range(5):
                log.record_answer(
                    _answer(f"问{n}", refused=True), answer_id=f"{n}-{i}", session_id=None
                )
                log.record_feedback(f"{n}-0", "up" if i % 2 else "down")
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    kinds = [e["kind"] for e in log.events()]
    # 20 refusals; each first answer rated 5 times, one rating kept: down (the last).
    assert kinds.count("refused") == 20 and kinds.count("thumbs_down") == 4


def test_an_empty_report_names_the_database_without_its_password(
    postgres_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test cluster trusts 127.0.0.1: any password is accepted, and must not be printed.
    url = postgres_server.fresh_database().replace("postgres@", "postgres:s3cret-pw@", 1)
    settings = Settings(
        data_dir=tmp_path / "data", embeddings={"provider": "fake"}, state={"url": url}
    )
    assert print_report(settings, since=None, as_json=False) == 0
    out = capsys.readouterr().out
    assert "no gaps recorded yet" in out and "127.0.0.1" in out and "s3cret-pw" not in out
