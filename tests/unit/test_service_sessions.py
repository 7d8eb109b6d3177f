"""Server-kept conversations in the state database: the last turns, forgotten after the idle
timeout, the least recently used evicted first, one conversation shared by every process on
the database. ``SessionsContract`` runs here on SQLite and on PostgreSQL in
tests/integration/test_state_extras_postgres.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from rag_pipeline.config import Settings
from rag_pipeline.service.sessions import SESSION_ID, Sessions, new_session_id
from rag_pipeline.state_db import open_state


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # wall-clock seconds, as time.time gives

    def __call__(self) -> float:
        return self.now


Make = Callable[..., Sessions]


class SessionsContract:
    """The behaviour of ``Sessions`` on one database; a subclass gives the ``engine``."""

    @pytest.fixture
    def engine(self) -> Engine:
        raise NotImplementedError

    @pytest.fixture
    def make(self, engine: Engine) -> Make:
        def make(
            clock: Clock, *, turns: int = 2, ttl: float = 10, max_sessions: int = 3
        ) -> Sessions:
            return Sessions(engine, turns=turns, ttl=ttl, max_sessions=max_sessions, clock=clock)

        return make

    def test_a_session_keeps_its_last_turns(self, make: Make) -> None:
        kept = make(Clock())
        for n in range(3):
            kept.add_turn("s", f"q{n}", f"a{n}")
        assert kept.history("s") == [("q1", "a1"), ("q2", "a2")]
        assert kept.history("other") == []

    def test_an_idle_session_expires_and_use_keeps_it_alive(self, make: Make) -> None:
        clock = Clock()
        kept = make(clock)
        start = clock.now
        kept.add_turn("s", "q", "a")
        clock.now = start + 9
        assert kept.history("s") == [("q", "a")]  # reading counts as use
        clock.now = start + 18
        assert kept.history("s") == [("q", "a")] and len(kept) == 1
        clock.now = start + 28.5
        assert kept.history("s") == [] and len(kept) == 0

    def test_the_least_recently_used_session_goes_first(self, make: Make) -> None:
        kept = make(Clock(), max_sessions=2)  # one time for all: the order of use decides
        kept.add_turn("a", "qa", "aa")
        kept.add_turn("b", "qb", "ab")
        kept.history("a")  # a is now the most recently used
        kept.add_turn("c", "qc", "ac")
        assert kept.history("b") == [] and kept.history("a") and kept.history("c")
        assert len(kept) == 2

    def test_zero_turns_remembers_nothing(self, make: Make) -> None:
        kept = make(Clock(), turns=0)
        kept.add_turn("s", "q", "a")
        assert kept.history("s") == [] and len(kept) == 0
        assert make(Clock()).history("s") == []  # not stored for anyone else either

    def test_two_replicas_share_the_conversation(self, make: Make) -> None:
        clock = Clock()
        one, two = make(clock), make(clock)
        one.add_turn("s", "运费多少", "满99元包邮 [1]")
        assert two.history("s") == [("运费多少", "满99元包邮 [1]")]
        two.add_turn("s", "那偏远地区呢", "加收10元 [2]")
        assert one.history("s") == [
            ("运费多少", "满99元包邮 [1]"),
            ("那偏远地区呢", "加收10元 [2]"),
        ]
        clock.now += 8
        one.history("s")  # use on one replica keeps it alive on the other
        clock.now += 8
        assert len(two) == 1 and two.history("s")

    def test_concurrent_turns_of_one_session_are_all_kept(self, make: Make) -> None:
        writers = [make(Clock(), turns=40, max_sessions=10) for _ in range(4)]
        errors: list[BaseException] = []

        def talk(n: int) -> None:
            try:
                for i in range(5):
                    writers[n].add_turn("shared", f"q{n}-{i}", f"a{n}-{i}")
                    writers[n].add_turn(f"own-{n}", f"q{i}", f"a{i}")
            except BaseException as e:  # reported below, not lost in the thread
                errors.append(e)

        threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        turns = writers[0].history("shared")
        assert sorted(turns) == sorted(
            (f"q{n}-{i}", f"a{n}-{i}") for n in range(4) for i in range(5)
        )
        for n in range(4):  # each writer's turns in the order it added them
            mine = [q for q, _ in turns if q.startswith(f"q{n}-")]
            assert mine == [f"q{n}-{i}" for i in range(5)]
        assert all(len(writers[0].history(f"own-{n}")) == 5 for n in range(4))


class TestSessionsOnSQLite(SessionsContract):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> Engine:
        return open_state(tmp_path / "state.sqlite")


def test_settings_open_the_state_database_on_first_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})
    kept = Sessions(settings, turns=2, ttl=60, max_sessions=10)
    assert not settings.state_db.exists()  # building it opened nothing
    kept.add_turn("s", "q", "a")
    assert settings.state_db.is_file()
    again = Sessions(open_state(settings.state_db), turns=2, ttl=60, max_sessions=10)
    assert again.history("s") == [("q", "a")]


def test_new_ids_are_unique_and_valid() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(SESSION_ID.match(i) for i in ids)
    assert not SESSION_ID.match("a b") and not SESSION_ID.match("x" * 129)
