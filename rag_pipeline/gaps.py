"""The knowledge-gap log: refused questions, low-confidence answers and thumbs-down feedback,
kept in the state database (``state_db``: ``state.sqlite`` in the data folder, or the
PostgreSQL of ``RAG_STATE__URL``; tables in ``gaps_store``) and listed grouped (near-duplicates
merged, most frequent first) by ``rag gaps`` and ``GET /v1/gaps``.

The service calls ``record_answer`` after every answer and ``record_feedback`` for
/v1/feedback. One short transaction per call: safe from many threads, from several
``rag serve`` workers and, on PostgreSQL, from replicas on several machines.

With ``log_questions`` off no text a user typed is kept (neither questions nor feedback
comments): entries then hold the scores and sources only, and group by their top source.

>>> log = GapLog(settings, log_questions=True, low_confidence=0.85)  # doctest: +SKIP
>>> log.record_answer(answer, answer_id="a1", session_id=None)      # doctest: +SKIP
>>> log.report()[0]["example"]                                      # doctest: +SKIP
'运费险怎么理赔'
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from rag_pipeline import gaps_store, state_db
from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.chain import Answer
    from rag_pipeline.config import Settings

Kind = Literal["refused", "low_confidence", "thumbs_down", "thumbs_up"]
# Answers remembered for feedback (newest kept): a rating comes seconds or minutes later.
REMEMBERED_ANSWERS = 10_000
TOP_SOURCES = 3
MAX_VARIANTS = 10  # distinct question variants listed per group
# Two normalised questions whose character-bigram sets overlap this much (Jaccard) are one
# group: merges "运费怎么算" / "运费怎么计算" (0.5) and "我的快递到哪了" / "我的快递到哪里了"
# (0.62), keeps "退货要多久" / "退货运费谁出" (0.12) apart; tests/unit/test_gaps.py.
MERGE_SIMILARITY = 0.5
_RATINGS = ("thumbs_up", "thumbs_down")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def normalise(question: str) -> str:
    """``question`` for comparison: NFKC (full-width to half-width), lower case, without
    punctuation, symbols and white space."""
    text = unicodedata.normalize("NFKC", question).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZC")


def bigrams(text: str) -> frozenset[str]:
    """Character bigrams of a normalised text (the text itself when shorter than two)."""
    if len(text) < 2:
        return frozenset({text}) if text else frozenset()
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two bigram sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def parse_since(text: str | None) -> datetime | None:
    """``--since`` / ``?since=``: a date (``2026-12-01``) or an ISO time, UTC if no zone given."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise ConfigurationError(
            f"--since {text!r} is not a date: give YYYY-MM-DD or an ISO time such as "
            "2026-12-01T08:00:00+08:00"
        ) from e
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class GapLog:
    """The gap log in a state database: an engine, or the settings whose state database is
    opened on first use (so building the service opens nothing). See the module docstring."""

    def __init__(
        self, state: Engine | Settings, *, log_questions: bool, low_confidence: float
    ) -> None:
        self._state = state
        self.log_questions = log_questions
        self.low_confidence = low_confidence

    @property
    def engine(self) -> Engine:
        if not isinstance(self._state, Engine):
            self._state = state_db.state_engine(self._state)
        return self._state

    def _text(self, text: str | None) -> str | None:
        return text if self.log_questions else None

    def record_answer(self, answer: Answer, *, answer_id: str, session_id: str | None) -> None:
        """Remember ``answer`` (for feedback); log it when refused or below low_confidence."""
        best = max((s.score for s in answer.sources), default=None)
        ranked = sorted(answer.sources, key=lambda s: -s.score)
        sources = json.dumps(list(dict.fromkeys(s.source for s in ranked))[:TOP_SOURCES])
        question = self._text(answer.question)
        kind: Kind | None = None
        if answer.refused:
            kind = "refused"
        elif best is None or best < self.low_confidence:
            kind = "low_confidence"
        row = {"at": _now(), "question": question, "score": best, "sources": sources}
        t = gaps_store.answers
        with state_db.writing(self.engine) as conn:
            # Answer ids are fresh per answer; one given twice replaces the first (as before).
            conn.execute(delete(t).where(t.c.answer_id == answer_id))
            new_id = conn.execute(
                t.insert()
                .values(answer_id=answer_id, session_id=session_id, **row)
                .returning(t.c.id)
            ).scalar_one()
            # Bounded: the newest REMEMBERED_ANSWERS stay (ids grow with each insert).
            conn.execute(delete(t).where(t.c.id <= new_id - REMEMBERED_ANSWERS))
            if kind is not None:
                conn.execute(
                    gaps_store.events.insert().values(
                        kind=kind, session_id=session_id, answer_id=answer_id, **row
                    )
                )

    def record_feedback(
        self, answer_id: str, rating: Literal["up", "down"], comment: str | None = None
    ) -> bool:
        """Record a rating (replacing an earlier one of the same answer); False when
        ``answer_id`` is unknown (or forgotten already)."""
        kind: Kind = "thumbs_down" if rating == "down" else "thumbs_up"
        a, e = gaps_store.answers, gaps_store.events
        with state_db.writing(self.engine) as conn:
            # Locked (PostgreSQL): two ratings of one answer at once still leave one.
            found = conn.execute(
                select(a.c.question, a.c.score, a.c.sources, a.c.session_id)
                .where(a.c.answer_id == answer_id)
                .with_for_update()
            ).first()
            if found is None:
                return False
            # One rating per answer: rating it again replaces the earlier one.
            conn.execute(delete(e).where(e.c.answer_id == answer_id, e.c.kind.in_(_RATINGS)))
            conn.execute(
                e.insert().values(
                    at=_now(),
                    kind=kind,
                    question=found.question,
                    score=found.score,
                    sources=found.sources,
                    session_id=found.session_id,
                    answer_id=answer_id,
                    comment=self._text(comment),
                )
            )
        return True

    def events(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """The logged gaps (thumbs-up left out), oldest first."""
        start = since.astimezone(UTC).isoformat(timespec="seconds") if since else ""
        e = gaps_store.events
        query = (
            select(e.c.at, e.c.kind, e.c.question, e.c.score, e.c.sources, e.c.comment)
            .where(e.c.at >= start, e.c.kind != "thumbs_up")
            .order_by(e.c.id)
        )
        with state_db.reading(self.engine) as conn:
            rows = conn.execute(query).all()
        return [
            {
                "at": at,
                "kind": kind,
                "question": question,
                "score": score,
                "sources": json.loads(sources),
                "comment": comment,
            }
            for at, kind, question, score, sources, comment in rows
        ]

    def report(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Gap groups, most frequent first (see ``group``)."""
        return group(self.events(since))


def group(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events merged into groups, most frequent first (then most recent).

    Questions are compared normalised (``normalise``); a question joins the first group
    whose example question is at least ``MERGE_SIMILARITY`` similar (character-bigram
    Jaccard), the most frequent variants being placed first. Events without question text
    group by their top source. ``best_score`` is the highest relevance any of the group's
    answers reached (None when none retrieved anything).
    """
    by_text: dict[str, list[dict[str, Any]]] = {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        key = normalise(event["question"]) if event["question"] else ""
        if key:
            by_text.setdefault(key, []).append(event)
        else:
            top = event["sources"][0] if event["sources"] else ""
            by_source.setdefault(top, []).append(event)
    clusters: list[tuple[frozenset[str], list[dict[str, Any]]]] = []
    for key in sorted(by_text, key=lambda k: (-len(by_text[k]), k)):
        grams = bigrams(key)
        for example, members in clusters:
            if similarity(grams, example) >= MERGE_SIMILARITY:
                members.extend(by_text[key])
                break
        else:
            clusters.append((grams, list(by_text[key])))
    groups = [_summary(members) for _, members in clusters]
    groups += [_summary(members, source=top) for top, members in by_source.items()]
    groups.sort(key=lambda g: str(g["last_seen"]), reverse=True)
    groups.sort(key=lambda g: -int(g["count"]))  # stable: most recent first among equals
    return groups


def _summary(members: list[dict[str, Any]], source: str | None = None) -> dict[str, Any]:
    variants = Counter(e["question"] for e in members if e["question"])
    scores = [e["score"] for e in members if e["score"] is not None]
    sources = Counter(s for e in members for s in e["sources"])
    return {
        "count": len(members),
        "kinds": dict(Counter(e["kind"] for e in members).most_common()),
        "example": variants.most_common(1)[0][0] if variants else None,
        "questions": [q for q, _ in variants.most_common(MAX_VARIANTS)],
        "last_seen": max(e["at"] for e in members),
        "best_score": max(scores) if scores else None,
        "top_sources": [s for s, _ in sources.most_common(TOP_SOURCES)]
        or ([source] if source else []),
        "comments": [e["comment"] for e in members if e["comment"]][:MAX_VARIANTS],
    }


def _width(text: str) -> int:
    # Terminal columns: CJK characters take two.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns (with an ellipsis) and padded to it."""
    if _width(text) > width:
        while _width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _width(text))


def _where(settings: Settings) -> str:
    """The state database for a message: its file, or its URL without the password."""
    location = settings.state_location
    if not isinstance(location, str):
        return str(location)
    from sqlalchemy.engine import make_url

    return make_url(location).render_as_string(hide_password=True)


def print_report(settings: Settings, *, since: str | None, as_json: bool) -> int:
    """``rag gaps``: print the grouped report; the exit code."""
    moment = parse_since(since)
    groups: list[dict[str, Any]] = []
    # Reading a data folder without a state database creates none.
    if state_db.state_exists(settings):
        log = GapLog(
            settings,
            log_questions=settings.serve.log_questions,
            low_confidence=settings.serve.low_confidence,
        )
        groups = log.report(moment)
    empty = "no gaps recorded yet" + (f" since {since}" if since else "") + f" ({_where(settings)})"
    if as_json:
        print(json.dumps(groups, ensure_ascii=False, indent=2))
        if not groups:
            print(empty, file=sys.stderr)
        return 0
    if not groups:
        print(empty)
        return 0
    print(f"{'count':>5}  {_cell('kinds', 28)}  {_cell('example question', 40)}  top source")
    for g in groups:
        kinds = ", ".join(f"{kind} {n}" for kind, n in g["kinds"].items())
        example = g["example"] or "(question not logged)"
        top = g["top_sources"][0] if g["top_sources"] else "-"
        print(f"{g['count']:>5}  {_cell(kinds, 28)}  {_cell(example, 40)}  {top}")
    return 0
