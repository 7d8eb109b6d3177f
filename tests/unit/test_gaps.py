"""The knowledge-gap log: what is logged, feedback, grouping of near-duplicates, the report,
and an old data folder's gaps.sqlite carried into the state database."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rag_pipeline.chain import Answer, Source
from rag_pipeline.config import Settings
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.gaps import (
    MERGE_SIMILARITY,
    REMEMBERED_ANSWERS,
    GapLog,
    bigrams,
    group,
    normalise,
    parse_since,
    print_report,
    similarity,
)
from rag_pipeline.state_db import open_state, state_engine

# gaps.sqlite as the versions before the state database wrote it (a fixture of that format).
OLD_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE gap_events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
    question TEXT, score REAL, sources TEXT NOT NULL, session_id TEXT, answer_id TEXT,
    comment TEXT);
CREATE INDEX gap_events_at ON gap_events (at);
CREATE TABLE gap_answers (answer_id TEXT PRIMARY KEY, at TEXT NOT NULL, question TEXT,
    score REAL, sources TEXT NOT NULL, session_id TEXT);
INSERT INTO gap_answers VALUES ('old-1', '2026-11-30T09:00:00+00:00', '运费怎么算', 0.4,
    '["shipping.txt"]', 's1');
INSERT INTO gap_answers VALUES ('old-2', '2026-11-30T09:05:00+00:00', '退货流程', 0.95, '[]',
    NULL);
INSERT INTO gap_events (at, kind, question, score, sources, session_id, answer_id, comment)
    VALUES ('2026-11-30T09:00:00+00:00', 'low_confidence', '运费怎么算', 0.4,
    '["shipping.txt"]', 's1', 'old-1', NULL);
"""


def _answer(question: str, *scores: float, refused: bool = False) -> Answer:
    sources = [
        Source(number=n, source=f"doc{n}.md", score=score, content="...")
        for n, score in enumerate(scores, start=1)
    ]
    return Answer(question, question, "答", refused, sources=sources, context=sources)


def _log(tmp_path: Path, *, log_questions: bool = True) -> GapLog:
    engine = open_state(tmp_path / "state.sqlite")
    return GapLog(engine, log_questions=log_questions, low_confidence=0.85)


def _event(question: str | None, kind: str = "refused", **extra: object) -> dict[str, object]:
    return {
        "at": "2026-12-01T10:00:00+00:00",
        "kind": kind,
        "question": question,
        "score": None,
        "sources": [],
        "comment": None,
        **extra,
    }


def test_normalise_folds_width_case_punctuation_and_space() -> None:
    assert normalise("  运费 怎么算？？ ") == normalise("运费怎么算?") == "运费怎么算"
    assert normalise("ＲＰ－２０２４ Return!") == "rp2024return"


@pytest.mark.parametrize(
    ("a", "b", "merged"),
    [
        ("运费怎么算", "运费怎么计算", True),  # 0.5
        ("我的快递到哪了", "我的快递到哪里了", True),  # 0.62
        ("How do I return shoes?", "how do i return my shoes", True),
        ("退货要多久", "退货运费谁出", False),  # 0.12
        ("如何开发票", "怎么修改地址", False),
    ],
)
def test_the_merge_threshold_on_typical_pairs(a: str, b: str, merged: bool) -> None:
    score = similarity(bigrams(normalise(a)), bigrams(normalise(b)))
    assert (score >= MERGE_SIMILARITY) is merged, score


def test_group_merges_near_duplicates_most_frequent_first() -> None:
    events = [
        _event("运费怎么算", score=0.4, sources=["shipping.txt"]),
        _event("运费怎么算？", kind="low_confidence", score=0.7, sources=["shipping.txt"]),
        _event("运费怎么计算", kind="thumbs_down", comment="没回答"),
        _event("发票怎么开", at="2026-12-01T11:00:00+00:00"),
    ]
    first, second = group(events)
    assert first["count"] == 3
    assert first["kinds"] == {"refused": 1, "low_confidence": 1, "thumbs_down": 1}
    assert first["example"] in ("运费怎么算", "运费怎么算？")
    assert set(first["questions"]) == {"运费怎么算", "运费怎么算？", "运费怎么计算"}
    assert first["best_score"] == 0.7  # the highest relevance reached
    assert first["top_sources"] == ["shipping.txt"]
    assert first["comments"] == ["没回答"]
    assert (second["count"], second["example"], second["best_score"]) == (1, "发票怎么开", None)
    assert second["last_seen"] == "2026-12-01T11:00:00+00:00"


def test_group_without_question_text_goes_by_top_source() -> None:
    events = [
        _event(None, sources=["a.md", "b.md"]),
        _event(None, sources=["a.md"]),
        _event(None),
    ]
    groups = group(events)
    assert [(g["count"], g["top_sources"], g["example"]) for g in groups] == [
        (2, ["a.md", "b.md"], None),
        (1, [], None),
    ]


def test_refused_and_low_confidence_answers_are_logged(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record_answer(_answer("退货运费谁出", refused=True), answer_id="a1", session_id="s1")
    log.record_answer(_answer("运费多少", 0.6, 0.8), answer_id="a2", session_id=None)
    log.record_answer(_answer("退货流程", 0.95), answer_id="a3", session_id=None)  # confident
    events = log.events()
    assert [(e["kind"], e["question"], e["score"]) for e in events] == [
        ("refused", "退货运费谁出", None),
        ("low_confidence", "运费多少", 0.8),
    ]
    assert events[1]["sources"] == ["doc2.md", "doc1.md"]  # best first
    assert datetime.fromisoformat(events[0]["at"]).tzinfo is not None  # UTC ISO time


def test_feedback_on_remembered_answers(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record_answer(_answer("退货流程", 0.95), answer_id="a3", session_id=None)
    assert log.record_feedback("a3", "up") is True
    assert log.events() == []  # thumbs-up is recorded, but it is no gap
    assert log.record_feedback("a3", "down", "说得不对") is True
    assert log.record_feedback("a3", "down", "说得不对") is True  # again: replaces, not adds
    assert log.record_feedback("nope", "down") is False
    (event,) = log.events()
    assert (event["kind"], event["question"], event["comment"]) == (
        "thumbs_down",
        "退货流程",
        "说得不对",
    )


def test_remembered_answers_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rag_pipeline.gaps as gaps

    monkeypatch.setattr(gaps, "REMEMBERED_ANSWERS", 3)
    log = _log(tmp_path)
    for n in range(6):
        log.record_answer(_answer(f"问题{n}", 0.95), answer_id=f"a{n}", session_id=None)
    assert [log.record_feedback(f"a{n}", "up") for n in range(6)] == [False] * 3 + [True] * 3
    assert REMEMBERED_ANSWERS >= 1000


def test_without_log_questions_no_user_text_is_kept(tmp_path: Path) -> None:
    log = _log(tmp_path, log_questions=False)
    log.record_answer(
        _answer("我的手机号是13800138000", refused=True), answer_id="answer-7f3e", session_id=None
    )
    log.record_feedback("answer-7f3e", "down", "评论也不留")
    kept = b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite*"))
    assert b"answer-7f3e" in kept  # the state database holds the entries ...
    assert b"13800138000" not in kept and "评论也不留".encode() not in kept  # ... not the words
    assert [e["question"] for e in log.events()] == [None, None]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    log = _log(tmp_path)

    def ask(n: int) -> None:
        for i in range(10):
            log.record_answer(
                _answer(f"问{n}-{i}", refused=True), answer_id=f"{n}-{i}", session_id=None
            )

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log.events()) == 80


def test_since_filters_and_bad_values_name_the_option(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record_answer(_answer("退货", refused=True), answer_id="a", session_id=None)
    assert log.report(parse_since("2000-01-01"))
    assert log.report(parse_since("2999-01-01T00:00:00+08:00")) == []
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(ConfigurationError, match=r"--since.*YYYY-MM-DD"):
        parse_since("last tuesday")


def test_print_report_table_json_and_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, embeddings={"provider": "fake"})
    assert print_report(settings, since=None, as_json=False) == 0
    assert "no gaps recorded yet" in capsys.readouterr().out
    assert not settings.state_db.exists()  # reading does not create the state database

    log = GapLog(state_engine(settings), log_questions=True, low_confidence=0.85)
    log.record_answer(_answer("运费怎么算", refused=True), answer_id="a", session_id=None)
    log.record_answer(_answer("运费怎么算?", refused=True), answer_id="b", session_id=None)
    assert print_report(settings, since=None, as_json=True) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["count"] == 2
    assert print_report(settings, since=None, as_json=False) == 0
    table = capsys.readouterr().out
    assert "refused 2" in table and "运费怎么算" in table


def test_an_old_gaps_sqlite_is_carried_into_the_state_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag_pipeline.gaps as gaps

    with closing(sqlite3.connect(tmp_path / "gaps.sqlite")) as db:
        db.executescript(OLD_SCHEMA)
    settings = Settings(data_dir=tmp_path, embeddings={"provider": "fake"})
    log = GapLog(state_engine(settings), log_questions=True, low_confidence=0.85)
    assert not list(tmp_path.glob("gaps.sqlite*"))  # copied, then removed
    assert log.events() == [
        {
            "at": "2026-11-30T09:00:00+00:00",
            "kind": "low_confidence",
            "question": "运费怎么算",
            "score": 0.4,
            "sources": ["shipping.txt"],
            "comment": None,
        }
    ]
    # An answer given before the upgrade can still be rated, with what it was logged with.
    assert log.record_feedback("old-2", "down", "不对") is True
    assert log.events()[-1]["question"] == "退货流程"
    # New answers come after the old ones: the oldest is still the first forgotten.
    monkeypatch.setattr(gaps, "REMEMBERED_ANSWERS", 2)
    log.record_answer(_answer("新问题", 0.95), answer_id="new-1", session_id=None)
    assert [log.record_feedback(a, "up") for a in ("old-1", "old-2", "new-1")] == [
        False,
        True,
        True,
    ]
