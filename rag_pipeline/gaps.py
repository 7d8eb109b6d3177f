"""The knowledge-gap log: refused questions, low-confidence answers and thumbs-down feedback,
kept in ``<data_dir>/gaps.sqlite`` and listed grouped (near-duplicates merged, most frequent
first) by ``rag gaps`` and ``GET /v1/gaps``.

INTERFACE ONLY (being built): the service calls ``record_answer`` after every answer and
``record_feedback`` for /v1/feedback.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rag_pipeline.chain import Answer


class GapLog:
    def __init__(self, path: Path, *, log_questions: bool, low_confidence: float) -> None:
        self.path = path
        self.log_questions = log_questions
        self.low_confidence = low_confidence

    def record_answer(self, answer: Answer, *, answer_id: str, session_id: str | None) -> None:
        """Remember ``answer`` (for feedback); log it when refused or below low_confidence."""

    def record_feedback(
        self, answer_id: str, rating: Literal["up", "down"], comment: str | None = None
    ) -> bool:
        """Record a rating; False when ``answer_id`` is unknown."""
        return False

    def report(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Gap groups, most frequent first."""
        return []


def print_report(settings: Any, *, since: str | None, as_json: bool) -> int:
    """``rag gaps``: print the grouped report; the exit code."""
    raise NotImplementedError
