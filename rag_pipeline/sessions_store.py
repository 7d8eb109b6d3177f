"""The table of server-kept conversations in the state database (``state_db``; the sessions
themselves are ``service.sessions``). Outside ``service/`` and importing nothing of ours, so
``state_db.all_metadata`` can import it without a cycle and without loading the web app."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, MetaData, Table, Text

metadata = MetaData()

sessions = Table(
    "rag_sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("turns", Text, nullable=False),  # JSON [[question, answer], ...], oldest first
    Column("used", Float, nullable=False),  # wall-clock seconds of the last use: the idle timeout
    # Order of last use (the least recently used is evicted first); unlike ``used`` it never
    # ties within one database's writes on SQLite.
    Column("seq", BigInteger, nullable=False),
    Index("rag_sessions_used", "used"),
    Index("rag_sessions_seq", "seq"),
)
