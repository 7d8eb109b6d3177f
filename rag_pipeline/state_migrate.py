"""``rag state migrate --to URL``: copy the whole state database (every collection's records,
sources, roots, keyword index, gap log, sessions, and the embedding cache if it is there) to
another database, SQLite to PostgreSQL or back, then check the copy.

The copy reads one snapshot of the source (a single read transaction), so writers that keep
running are not half-copied; what they write after the snapshot is not in the copy, so stop
them first (the command holds the configured collection's write lock while it copies). The
target must hold none of our rows, unless ``replace`` empties it first. Afterwards every table
must have as many rows in the target as in the snapshot, and ``rag verify`` with the target as
the state must find the configured collection in order.

>>> report = migrate_state(settings, "postgresql+psycopg://rag@db:5432/rag")   # doctest: +SKIP
>>> report.ok                                                                 # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from sqlalchemy import delete, func, select, text

from rag_pipeline import state_db
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.locking import collection_lock

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from rag_pipeline.config import Settings

COPY_BATCH = 1000  # rows per read and per insert: posting rows can be large
Progress = Callable[[str, int], None]  # (table, rows copied so far)


@dataclass
class StateMigrationReport:
    """What ``migrate_state`` copied; ``to_dict`` is ``rag state migrate --json``."""

    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)  # rows copied per table
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)  # (source, target)
    replaced: bool = False
    verify_ok: bool | None = None  # None: the collection was not checked (no store yet)
    verify_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatched and self.verify_ok is not False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def target_location(value: str) -> Path | str:
    """``--to``: a SQLAlchemy URL, or a path (a SQLite file)."""
    if "://" in value:
        return value
    return Path(value).expanduser().resolve()


def _tables() -> list[Table]:
    return [t for schema in state_db.all_metadata() for t in schema.sorted_tables]


def _rows_held(conn: Connection, tables: list[Table]) -> dict[str, int]:
    held = {}
    for table in tables:
        n = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        if n:
            held[table.name] = n
    return held


def migrate_state(
    settings: Settings,
    to: Path | str,
    *,
    replace: bool = False,
    check: bool = True,
    progress: Progress | None = None,
) -> StateMigrationReport:
    """Copy the state database of ``settings`` to ``to`` (see the module docstring)."""
    source_location = settings.state_location
    if state_db.same_location(source_location, to):
        raise ConfigurationError(
            f"the state database is already {state_db.describe(to)}: give another --to, or change "
            "RAG_STATE__URL to copy from elsewhere"
        )
    source = state_db.state_engine(settings)
    target = state_db.open_state(to)
    report = StateMigrationReport(
        state_db.describe(source_location), state_db.describe(to), replaced=replace
    )
    tables = _tables()
    from rag_pipeline.stores import connect

    backend = connect(settings)
    namespace = backend.namespace
    backend.close()
    with collection_lock(settings, namespace, what="rag state migrate"):
        with state_db.reading(target) as conn:
            held = _rows_held(conn, tables)
        if held and not replace:
            listed = ", ".join(f"{name} ({n} rows)" for name, n in held.items())
            raise ConfigurationError(
                f"the target state database {state_db.describe(to)} already holds data: "
                f"{listed}; give --replace to empty it first, or choose an empty database"
            )
        with state_db.reading(source) as read, state_db.writing(target) as write:
            if held:
                for table in reversed(tables):
                    write.execute(delete(table))
            expected = _rows_held(read, tables)
            for table in tables:
                report.tables[table.name] = _copy(read, write, table, progress)
            _advance_sequences(write, tables)
        with state_db.reading(target) as conn:
            copied = _rows_held(conn, tables)
    for name in expected.keys() | copied.keys():
        if expected.get(name, 0) != copied.get(name, 0):
            report.mismatched[name] = (expected.get(name, 0), copied.get(name, 0))
    if check and not report.mismatched:
        _verify_target(settings, to, report)
    return report


def _copy(read: Connection, write: Connection, table: Table, progress: Progress | None) -> int:
    done = 0
    order = list(table.primary_key.columns) or list(table.columns)
    result = read.execution_options(yield_per=COPY_BATCH).execute(select(table).order_by(*order))
    for part in result.mappings().partitions(COPY_BATCH):
        write.execute(table.insert(), [dict(row) for row in part])
        done += len(part)
        if progress is not None:
            progress(table.name, done)
    return done


def _advance_sequences(conn: Connection, tables: list[Table]) -> None:
    """PostgreSQL: rows copied with their ids leave a serial column's sequence behind, and the
    next insert would reuse an id; move each sequence past the copied ids."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                top = conn.execute(select(func.max(column))).scalar() or 0
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence(:t, :c), :v, false)"),
                    {"t": table.name, "c": column.name, "v": int(top) + 1},
                )


def _verify_target(settings: Settings, to: Path | str, report: StateMigrationReport) -> None:
    from rag_pipeline.errors import EmptyIndexError
    from rag_pipeline.verify import verify

    url = to if isinstance(to, str) else f"sqlite:///{to}"
    moved = settings.model_copy(
        update={"state": settings.state.model_copy(update={"url": SecretStr(url)})}
    )
    try:
        found = verify(moved)
    except EmptyIndexError:
        return  # nothing ingested into the configured collection: nothing to check
    report.verify_ok = found.ok
    report.verify_problems = [f"{p.kind}: {p.count}" for p in found.problems]
