"""The gap log's tables in the state database (``state_db``; the log itself is ``gaps``).

Table and column names are those of the ``gaps.sqlite`` of older versions, so
``state_db.migrate_legacy_files`` copies an old log over by name. ``gap_answers`` gained an
``id`` (its insertion order, filled in by the copy too): PostgreSQL has no ``rowid`` to
forget the oldest remembered answers by. This module imports nothing of ours, so
``state_db.all_metadata`` can import it without a cycle.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text

metadata = MetaData()

# What the report lists: refused, low-confidence, thumbs-down (and thumbs-up, not listed).
events = Table(
    "gap_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Text, nullable=False),  # UTC ISO time, seconds
    Column("kind", Text, nullable=False),
    Column("question", Text),  # None with serve.log_questions off
    Column("score", Float),
    Column("sources", Text, nullable=False),  # JSON list, best first
    Column("session_id", Text),
    Column("answer_id", Text),
    Column("comment", Text),
    Index("gap_events_at", "at"),
    # A new rating replaces the answer's earlier one: found by answer id.
    Index("gap_events_answer", "answer_id"),
)

# Recent answers, so a rating that comes minutes later knows what it rates.
answers = Table(
    "gap_answers",
    metadata,
    Column("id", Integer, primary_key=True),  # insertion order: the oldest go first
    Column("answer_id", Text, nullable=False, unique=True),
    Column("at", Text, nullable=False),
    Column("question", Text),
    Column("score", Float),
    Column("sources", Text, nullable=False),
    Column("session_id", Text),
)
