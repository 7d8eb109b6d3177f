"""Server-kept conversations: the last turns, forgotten after the idle timeout, the least
recently used evicted first."""

from __future__ import annotations

from rag_pipeline.service.sessions import SESSION_ID, Sessions, new_session_id


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sessions(clock: Clock, *, turns: int = 2, ttl: float = 10, max_sessions: int = 3) -> Sessions:
    return Sessions(turns=turns, ttl=ttl, max_sessions=max_sessions, clock=clock)


def test_a_session_keeps_its_last_turns() -> None:
    kept = sessions(Clock())
    for n in range(3):
        kept.add_turn("s", f"q{n}", f"a{n}")
    assert kept.history("s") == [("q1", "a1"), ("q2", "a2")]
    assert kept.history("other") == []


def test_an_idle_session_expires_and_use_keeps_it_alive() -> None:
    clock = Clock()
    kept = sessions(clock)
    kept.add_turn("s", "q", "a")
    clock.now = 9
    assert kept.history("s") == [("q", "a")]  # reading counts as use
    clock.now = 18
    assert kept.history("s") == [("q", "a")]
    clock.now = 28.5
    assert kept.history("s") == [] and len(kept) == 0


def test_the_least_recently_used_session_goes_first() -> None:
    clock = Clock()
    kept = sessions(clock, max_sessions=2)
    kept.add_turn("a", "qa", "aa")
    kept.add_turn("b", "qb", "ab")
    kept.history("a")  # a is now the most recently used
    kept.add_turn("c", "qc", "ac")
    assert kept.history("b") == [] and kept.history("a") and kept.history("c")
    assert len(kept) == 2


def test_zero_turns_remembers_nothing() -> None:
    kept = sessions(Clock(), turns=0)
    kept.add_turn("s", "q", "a")
    assert kept.history("s") == [] and len(kept) == 0


def test_new_ids_are_unique_and_valid() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(SESSION_ID.match(i) for i in ids)
    assert not SESSION_ID.match("a b") and not SESSION_ID.match("x" * 129)
