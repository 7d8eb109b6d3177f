"""Assertions about a bot's answers whose failure messages show what the bot did instead.

Each takes an :class:`~rag_pipeline.chain.Answer` (anything with ``answer``, ``refused``,
``sources`` and ``context``) and raises ``AssertionError`` with the answer's text, its cited
sources and what was retrieved, so a failing test explains itself without a debugger.

>>> from rag_pipeline.chain import Answer, Source
>>> cited = Source(number=1, source="docs/refund-policy.md", score=0.9, content="7天内退款")
>>> answer = Answer("怎么退款", "怎么退款", "签收后7天内可退款[1]。", False, [cited], [cited])
>>> assert_answers(answer, contains="7天", cites="refund-policy.md")
>>> assert_refused(answer)
Traceback (most recent call last):
AssertionError: expected a refusal (hand-over), got an answer:
  answer:    '签收后7天内可退款[1]。'
  cites:     [1] docs/refund-policy.md
  retrieved: [1] docs/refund-policy.md (score 0.900)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_pipeline.testing.model_api import ModelServer, RequestKind

__all__ = ["assert_answers", "assert_no_model_call", "assert_refused"]


def _names(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _sources(items: Iterable[Any], *, scores: bool = False) -> str:
    shown = [
        f"[{s.number}] {s.source}" + (f" (score {s.score:.3f})" if scores else "") for s in items
    ]
    return ", ".join(shown) or "(none)"


def describe(answer: Any) -> str:
    """The lines of a failure message that show what the bot answered and from what."""
    return (
        f"  answer:    {answer.answer!r}\n"
        f"  cites:     {_sources(answer.sources)}\n"
        f"  retrieved: {_sources(answer.context, scores=True)}"
    )


def _same_file(source: str, name: str) -> bool:
    # A source is the path as ingested ("docs/refund-policy.md"); a test names the file.
    return source == name or source.replace("\\", "/").endswith("/" + name.lstrip("/"))


def assert_answers(
    answer: Any,
    *,
    contains: str | Iterable[str] | None = None,
    cites: str | Iterable[str] | None = None,
) -> None:
    """The bot answered (no refusal); its text contains every string of ``contains``, and its
    cited sources include every file of ``cites`` (a file name or the end of its path)."""
    __tracebackhide__ = True  # pytest shows the test's line, not this one
    if answer.refused:
        raise AssertionError(
            f"expected an answer, the bot refused (handed over):\n{describe(answer)}"
        )
    missing = [text for text in _names(contains) if text not in answer.answer]
    if missing:
        raise AssertionError(
            f"expected the answer to contain {', '.join(map(repr, missing))}:\n{describe(answer)}"
        )
    cited = [s.source for s in answer.sources]
    uncited = [name for name in _names(cites) if not any(_same_file(s, name) for s in cited)]
    if uncited:
        retrieved = [s.source for s in answer.context]
        hint = ""
        if all(any(_same_file(s, name) for s in retrieved) for name in uncited):
            hint = "\n  (it was retrieved but not cited: the answer names other [n])"
        raise AssertionError(
            f"expected the answer to cite {', '.join(map(repr, uncited))}:\n"
            f"{describe(answer)}{hint}"
        )


def assert_refused(answer: Any) -> None:
    """The bot refused: it handed over (the configured refusal) instead of answering."""
    __tracebackhide__ = True
    if not answer.refused:
        raise AssertionError(f"expected a refusal (hand-over), got an answer:\n{describe(answer)}")


def assert_no_model_call(server: ModelServer, kind: RequestKind = "chat") -> None:
    """``server`` received no request of ``kind`` (default: no chat completion): the answer,
    or the refusal, was decided without the model."""
    __tracebackhide__ = True
    received = server.requests(kind)
    if received:
        lines = []
        for request in received[:3]:
            body = request.body if isinstance(request.body, dict) else {}
            question = ""
            messages = body.get("messages")
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
                question = str(messages[-1].get("content", ""))[:80]
            lines.append(
                f"  {request.method} {request.path} model={body.get('model')!r} {question!r}"
            )
        more = f"\n  ... and {len(received) - 3} more" if len(received) > 3 else ""
        raise AssertionError(
            f"expected no {kind} request to the model server, got {len(received)}:\n"
            + "\n".join(lines)
            + more
        )
