"""The state database: everything a collection keeps beside its vectors, in one SQLAlchemy
database shared by every process that works on the collection.

By default a SQLite file in the data folder (``state.sqlite``); with ``RAG_STATE__URL`` a
PostgreSQL database (``postgresql+psycopg://user@host:port/db``), which lets ingest workers
and ``rag serve`` replicas on several machines share one knowledge base. It holds:

- the record manager's rows (``upsertion_record``, the table of LangChain's
  ``SQLRecordManager``, so older data folders keep working unchanged);
- the source manifest (``rag_sources``), the corpus roots (``rag_roots``) and the layout
  version (``rag_layout``);
- the keyword index (``keyword_*``, see ``keyword_store``);
- the gap log and feedback (``gap_*``, see ``gaps_store``), the service's conversations
  (``rag_sessions``), and the embedding cache when ``RAG_STATE__CACHE=database``.

Data folders written before the state database had ``records.sqlite``, ``keyword.sqlite`` and
``gaps.sqlite``; ``state_engine`` copies them into ``state.sqlite`` once, then removes them.

>>> engine = state_engine(settings)                      # doctest: +SKIP
>>> with writing(engine) as conn: ...                    # doctest: +SKIP
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.stores import ByteStore
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.exc import DatabaseError

from rag_pipeline.errors import ConfigurationError, CorruptDataError, MissingExtraError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from rag_pipeline.config import Settings

# The files of data folders from before the state database, copied into it once.
LEGACY_FILES = ("records.sqlite", "keyword.sqlite", "gaps.sqlite")

metadata = MetaData()

# LangChain's SQLRecordManager table, column for column: its rows need no conversion.
records = Table(
    "upsertion_record",
    metadata,
    Column("uuid", String, primary_key=True, index=True, nullable=False),
    Column("key", String, index=True),
    Column("namespace", String, index=True, nullable=False),
    Column("group_id", String, index=True, nullable=True),
    Column("updated_at", Float, index=True),
    UniqueConstraint("key", "namespace", name="uix_key_namespace"),
    Index("ix_key_namespace", "key", "namespace"),
)

# Which sources (files, keyed ``LABEL/SOURCE``) a namespace holds, and under which root.
sources = Table(
    "rag_sources",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("root", Text, nullable=False),
    PrimaryKeyConstraint("namespace", "source"),
)

roots = Table(
    "rag_roots",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("path", Text, nullable=False),
    PrimaryKeyConstraint("namespace", "label"),
    UniqueConstraint("namespace", "path"),
)

layout = Table(
    "rag_layout",
    metadata,
    Column("namespace", Text, primary_key=True),
    Column("version", Integer, nullable=False),
)

# The embedding cache, with RAG_STATE__CACHE=database (see ``DatabaseByteStore``).
cached_vectors = Table(
    "rag_embedding_cache",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_migrate_lock = threading.Lock()


def all_metadata() -> list[MetaData]:
    """Every schema kept in the state database. Each is a module of tables only, importing
    nothing of ours (no import cycle: the code using them imports this module)."""
    from rag_pipeline import gaps_store, keyword_store, sessions_store

    return [metadata, keyword_store.metadata, gaps_store.metadata, sessions_store.metadata]


def _sqlite_engine(path: Path) -> Engine:
    from sqlalchemy.pool import NullPool

    # No pooled connection: a long-lived service or a test session opens many data folders and
    # would otherwise keep one open file per folder.
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling starts none for SELECTs; SQLAlchemy's "begin"
        # below does, so the statements of one read see one state of the file.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        # Readers never wait for a writer, nor a writer for readers (kept by the file once set).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the write lock up front: a read-then-write transaction that upgrades
        # later can fail with "database is locked" when another writer got in between.
        immediate = conn.get_execution_options().get("rag_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _url_engine(url: str) -> Engine:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigurationError(
            f"RAG_STATE__URL is not a database URL ({e}): use "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE, or leave it unset for "
            "state.sqlite in the data folder"
        ) from e
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"RAG_STATE__URL names a {parsed.get_backend_name()} database; the state "
            "database is PostgreSQL (postgresql+psycopg://...) or SQLite (sqlite:///PATH)"
        )
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(Path(parsed.database or "state.sqlite"))
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=8)
    except (ModuleNotFoundError, NoSuchModuleError) as e:
        raise MissingExtraError("a PostgreSQL state database", "postgres", str(e)) from e


def open_state(location: Path | str) -> Engine:
    """The engine of a state database: a SQLite file path, or a SQLAlchemy URL. One engine
    per database and process; missing tables are created."""
    key = str(location)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if isinstance(location, Path):
                location.parent.mkdir(parents=True, exist_ok=True)
                engine = _sqlite_engine(location)
            else:
                engine = _url_engine(location)
            _engines[key] = engine
    try:
        _create_tables(engine)
    except DatabaseError as e:
        raise _unreadable(location, e) from e
    return engine


def _unreadable(location: Path | str, error: DatabaseError) -> ConfigurationError:
    if isinstance(location, Path):
        return CorruptDataError(
            f"the state database {location} is not a readable SQLite database ({error.orig}): "
            "move it away, then `rag verify --repair` and `rag ingest FOLDER` rebuild it from "
            "the vector store (nothing is re-embedded)"
        )
    return ConfigurationError(
        f"cannot use the state database of RAG_STATE__URL ({type(error.orig).__name__}: "
        f"{str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ''}): check "
        "that the server runs, the URL's user, password and database, and that the user may "
        "create tables"
    )


def state_engine(settings: Settings) -> Engine:
    """The state database of ``settings`` (``state.url``, else ``state.sqlite`` in the data
    folder, first filled from the files of older versions if they are there)."""
    location = settings.state_location
    if isinstance(location, Path):
        from rag_pipeline.datafolder import ensure_data_dir

        ensure_data_dir(settings)
        migrate_legacy_files(settings.data_dir, location)
    return open_state(location)


def state_exists(settings: Settings) -> bool:
    """Whether the state database may hold anything yet (a URL: always assumed), without
    creating it."""
    location = settings.state_location
    if not isinstance(location, Path):
        return True
    return location.is_file() or any((settings.data_dir / n).is_file() for n in LEGACY_FILES)


def describe(location: Path | str) -> str:
    """A state location for people: a path, or the URL with its password hidden."""
    if isinstance(location, Path):
        return str(location)
    from sqlalchemy.engine import make_url

    try:
        return make_url(location).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: never print what could be a secret
        return "(unreadable URL)"


def same_location(a: Path | str, b: Path | str) -> bool:
    """Whether two state locations name one database."""
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return str(a) == str(b)


def _create_tables(engine: Engine) -> None:
    from sqlalchemy import inspect

    schemas = all_metadata()
    with reading(engine) as conn:
        inspector = inspect(conn)
        if all(inspector.has_table(name) for schema in schemas for name in schema.tables):
            return
    with writing(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Two processes creating the tables at once: one waits, then finds them.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7275283)")
        for schema in schemas:
            schema.create_all(conn, checkfirst=True)


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction: every statement in it sees the same committed state."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction (SQLite: holding the write lock from its first statement)."""
    with engine.connect() as conn:
        conn = conn.execution_options(rag_write=True)
        with conn.begin():
            yield conn


def upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, replacing those with the same primary key (SQLite and PostgreSQL)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(list(rows))
        keys = [c.name for c in table.primary_key.columns]
        rest = {c.name: pg.excluded[c.name] for c in table.columns if c.name not in keys}
        conn.execute(pg.on_conflict_do_update(index_elements=keys, set_=rest))
        return
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    conn.execute(sqlite_insert(table).values(list(rows)).prefix_with("OR REPLACE"))


class DatabaseByteStore(ByteStore):
    """LangChain's byte-store contract over ``rag_embedding_cache``: the embedding cache that
    every worker sharing the state database shares. Writes are upserts, so two workers caching
    the same text at once both succeed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        t = cached_vectors
        found: dict[str, bytes] = {}
        with reading(self.engine) as conn:
            for start in range(0, len(keys), 500):
                part = list(keys[start : start + 500])
                found.update(
                    (str(k), bytes(v))
                    for k, v in conn.execute(select(t.c.key, t.c.value).where(t.c.key.in_(part)))
                )
        return [found.get(key) for key in keys]

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        rows = [{"key": k, "value": v} for k, v in dict(key_value_pairs).items()]
        with writing(self.engine) as conn:
            for start in range(0, len(rows), 500):
                upsert(conn, cached_vectors, rows[start : start + 500])

    def mdelete(self, keys: Sequence[str]) -> None:
        t = cached_vectors
        with writing(self.engine) as conn:
            for start in range(0, len(keys), 500):
                conn.execute(delete(t).where(t.c.key.in_(list(keys[start : start + 500]))))

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        t = cached_vectors
        query = select(t.c.key).order_by(t.c.key)
        if prefix:
            query = query.where(t.c.key.startswith(prefix, autoescape=True))
        with reading(self.engine) as conn:
            keys = [str(k) for k in conn.execute(query).scalars()]
        yield from keys


def migrate_legacy_files(data_dir: Path, target: Path) -> list[str]:
    """Copy the SQLite files of older versions (``LEGACY_FILES``) into ``target`` once, then
    remove them; returns the names copied. Runs while holding a lock file, so concurrent
    first opens copy once; ``target`` appears only complete (written aside, then renamed)."""
    old = [data_dir / name for name in LEGACY_FILES if (data_dir / name).is_file()]
    if not old or target.exists():
        return []
    import filelock

    with _migrate_lock, filelock.FileLock(str(data_dir / "state-migrate.lock"), timeout=600):
        old = [p for p in old if p.is_file()]
        if not old or target.exists():
            return []
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        engine = _sqlite_engine(partial)
        try:
            _create_tables(engine)
        finally:
            engine.dispose()
        with closing(sqlite3.connect(partial)) as db:
            for path in old:
                try:
                    _copy_tables(db, path)
                except sqlite3.DatabaseError as e:
                    partial.unlink(missing_ok=True)
                    raise CorruptDataError(
                        f"{path} is not a readable SQLite database ({e}), so it cannot be "
                        f"copied into {target.name}: move it away (the data it held is rebuilt "
                        "from the vector store by `rag verify --repair` and `rag ingest`)"
                    ) from e
            db.execute("PRAGMA journal_mode=DELETE")  # one file to rename
        partial.replace(target)
        for path in old:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
    names = ", ".join(p.name for p in old)
    print(f"rag: moved {names} into {target.name} (the state database)", file=sys.stderr)
    return [p.name for p in old]


def _copy_tables(db: sqlite3.Connection, path: Path) -> None:
    """Copy every table of the SQLite file ``path`` into ``db`` (a table ``db`` lacks is
    created as it was), by column name."""
    db.execute("ATTACH DATABASE ? AS old", (str(path),))
    try:
        with db:
            found = db.execute(
                "SELECT name, sql FROM old.sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            for name, sql in found:
                have = {r[1] for r in db.execute(f'PRAGMA main.table_info("{name}")')}
                if not have:
                    db.execute(sql)  # a table of an older layout (migrated on first use)
                    have = {r[1] for r in db.execute(f'PRAGMA main.table_info("{name}")')}
                columns = [
                    r[1] for r in db.execute(f'PRAGMA old.table_info("{name}")') if r[1] in have
                ]
                listed = ", ".join(f'"{c}"' for c in columns)
                # Names from the file's own catalogue, quoted: not user input.
                db.execute(
                    f'INSERT OR REPLACE INTO main."{name}" ({listed}) '  # noqa: S608
                    f'SELECT {listed} FROM old."{name}"'
                )
    finally:
        db.execute("DETACH DATABASE old")
