"""Conversations kept by the server for ``/v1/ask`` callers that send a ``session_id``, so a
chat widget sends only the new message.

Kept in the state database (``state_db``; table in ``sessions_store``), so every ``rag serve``
worker and replica sharing it (several machines: PostgreSQL through ``RAG_STATE__URL``) sees
the same conversation: a load balancer needs no sticky sessions. Each call is one short
transaction, safe from many threads and processes.

Bounded three ways (``serve.session_turns``, ``serve.session_ttl``, ``serve.max_sessions``):
a session keeps its last turns, is forgotten after being idle too long, and when too many are
open the least recently used goes first. Idle time is measured on the wall clock, which
replicas share (machines' clocks should agree to well within ``session_ttl``).

>>> sessions = Sessions(engine, turns=2, ttl=60, max_sessions=100)   # doctest: +SKIP
>>> sessions.add_turn("s1", "运费多少", "满99元包邮 [1]")              # doctest: +SKIP
>>> sessions.history("s1")                                            # doctest: +SKIP
[('运费多少', '满99元包邮 [1]')]
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from rag_pipeline import state_db
from rag_pipeline.sessions_store import sessions as table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rag_pipeline.config import Settings

# What a client may use as a session id: long enough for a uuid, nothing a log could trip on.
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def new_session_id() -> str:
    return uuid.uuid4().hex


class Sessions:
    """Conversations in a state database: an engine, or the settings whose state database is
    opened on first use (building the service opens nothing). See the module docstring.

    ``clock`` (wall-clock seconds) is injectable so tests can move time without sleeping."""

    def __init__(
        self,
        state: Engine | Settings,
        *,
        turns: int,
        ttl: float,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.turns = turns
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock

    @property
    def engine(self) -> Engine:
        if not isinstance(self._state, Engine):
            self._state = state_db.state_engine(self._state)
        return self._state

    def __len__(self) -> int:
        if self.turns == 0:
            return 0  # nothing is ever kept
        alive = table.c.used >= self._clock() - self.ttl
        with state_db.reading(self.engine) as conn:
            return int(
                conn.execute(select(func.count()).select_from(table).where(alive)).scalar_one()
            )

    def history(self, session_id: str) -> list[tuple[str, str]]:
        """The session's remembered turns, oldest first (empty for a new or expired one)."""
        if self.turns == 0:
            return []
        where = table.c.session_id == session_id
        with state_db.writing(self.engine) as conn:
            now = self._expire(conn)
            found = conn.execute(select(table.c.turns).where(where)).scalar()
            if found is None:
                return []
            # Reading counts as use (idle timeout and eviction order).
            conn.execute(update(table).where(where).values(used=now, seq=_next_seq(conn)))
        return [(str(q), str(a)) for q, a in json.loads(found)]

    def add_turn(self, session_id: str, question: str, answer: str) -> None:
        """Remember one exchange; keeps the last ``turns`` of them."""
        if self.turns == 0:
            return
        where = table.c.session_id == session_id
        with state_db.writing(self.engine) as conn:
            now = self._expire(conn)
            seq = _next_seq(conn)
            # The row first, then locked (PostgreSQL): two replicas adding a turn to one
            # session at once both keep theirs (SQLite: the write lock serialises them).
            _insert_missing(
                conn, {"session_id": session_id, "turns": "[]", "used": now, "seq": seq}
            )
            kept = conn.execute(select(table.c.turns).where(where).with_for_update()).scalar_one()
            turns = [*json.loads(kept), [question, answer]][-self.turns :]
            conn.execute(
                update(table)
                .where(where)
                .values(turns=json.dumps(turns, ensure_ascii=False), used=now, seq=seq)
            )
            # Too many: the least recently used go (all but the newest max_sessions).
            surplus = (
                select(table.c.session_id)
                .order_by(table.c.seq.desc(), table.c.used.desc())
                .offset(self.max_sessions)
            )
            conn.execute(table.delete().where(table.c.session_id.in_(surplus)))

    def _expire(self, conn: Connection) -> float:
        """Forget the sessions idle longer than ``ttl``; the time now."""
        now = self._clock()
        conn.execute(table.delete().where(table.c.used < now - self.ttl))
        return now


def _next_seq(conn: Connection) -> int:
    # One more than the newest use (an index lookup). Two PostgreSQL transactions at once may
    # draw the same number: a tie in the eviction order, nothing worse.
    return int(conn.execute(select(func.coalesce(func.max(table.c.seq), 0) + 1)).scalar_one())


def _insert_missing(conn: Connection, row: dict[str, Any]) -> None:
    """Insert ``row`` unless its session exists (SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(row).on_conflict_do_nothing())
        return
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    conn.execute(sqlite_insert(table).values(row).on_conflict_do_nothing())
