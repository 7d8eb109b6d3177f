"""Conversations kept by the server for ``/v1/ask`` callers that send a ``session_id``, so a
chat widget sends only the new message.

Bounded three ways (``serve.session_turns``, ``serve.session_ttl``, ``serve.max_sessions``):
a session keeps its last turns, is forgotten after being idle too long, and when too many are
open the least recently used goes first. Memory only: a restart (or another worker process)
starts the conversation afresh, which costs the customer one lost follow-up, not an answer.

>>> sessions = Sessions(turns=2, ttl=60, max_sessions=100)
>>> sessions.add_turn("s1", "运费多少", "满99元包邮 [1]")
>>> sessions.history("s1")
[('运费多少', '满99元包邮 [1]')]
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

# What a client may use as a session id: long enough for a uuid, nothing a log could trip on.
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass
class _Session:
    turns: list[tuple[str, str]] = field(default_factory=list)
    used: float = 0.0


class Sessions:
    """Thread-safe LRU of conversations with an idle timeout (see the module docstring).

    ``clock`` is injectable so tests can move time without sleeping."""

    def __init__(
        self,
        *,
        turns: int,
        ttl: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.turns = turns
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._sessions)

    def history(self, session_id: str) -> list[tuple[str, str]]:
        """The session's remembered turns, oldest first (empty for a new or expired one)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            session = self._sessions.get(session_id)
            if session is None:
                return []
            session.used = now
            self._sessions.move_to_end(session_id)
            return list(session.turns)

    def add_turn(self, session_id: str, question: str, answer: str) -> None:
        """Remember one exchange; keeps the last ``turns`` of them."""
        if self.turns == 0:
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            session = self._sessions.pop(session_id, None) or _Session()
            session.turns = [*session.turns, (question, answer)][-self.turns :]
            session.used = now
            self._sessions[session_id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)  # least recently used

    def _expire(self, now: float) -> None:
        # The OrderedDict is in order of last use: expired sessions are all at the front.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.used <= self.ttl:
                return
            self._sessions.popitem(last=False)
