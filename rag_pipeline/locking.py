"""The writer lock of a collection: a file lock in the data folder, or a PostgreSQL advisory
lock when the state database is PostgreSQL (``RAG_STATE__URL``).

Ingest, ``--rebuild``, ``rag migrate``, ``collections rename / delete / delete-docs`` and
``rag verify --repair`` hold the lock of the collection they write. It goes when the process
ends, however it ends (``kill -9`` included: the operating system closes the file, PostgreSQL
the session), so a crashed writer never leaves a stale lock. Readers (``ask``, ``search``,
``eval``) take no lock and never wait.

With the state in PostgreSQL the lock orders writers on every machine that shares the state,
and ingest takes it *shared*: several ingest workers run at once (each file group's records,
manifest rows and keyword rows commit in one transaction, serialised by the keyword index's
row lock), while rebuilds, renames, deletes and repairs take it exclusively. With SQLite state
every writer takes it exclusively, as one file has one writer at a time anyway.

>>> with collection_lock(settings, store.namespace):      # doctest: +SKIP
...     ingest_into(store)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline.errors import CollectionLockedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from rag_pipeline.config import Settings

LOCKS = "locks"


def lock_path(settings: Settings, namespace: str) -> Path:
    """The lock file of ``namespace`` (a hash: namespaces hold URLs and slashes)."""
    digest = hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:20]
    return settings.data_dir / LOCKS / f"{digest}.lock"


def _holder(owner: Path) -> str:
    try:
        info: dict[str, Any] = json.loads(owner.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"process {info.get('pid', '?')} ({info.get('command', '?')}, since {since})"


def _locked_error(what: str, namespace: str, holder: str, timeout: float) -> CollectionLockedError:
    waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
    return CollectionLockedError(
        f"{what} needs the collection {namespace!r}, which {holder} is writing"
        f"{waited}: wait for it to finish, or let writers wait by setting "
        "RAG_INGEST__LOCK_TIMEOUT=SECONDS"
    )


@contextmanager
def collection_lock(
    settings: Settings, namespace: str, *, what: str = "this command", shared: bool = False
) -> Iterator[None]:
    """Hold the write lock of ``namespace``; waits ``settings.ingest.lock_timeout`` seconds
    (0: fail at once), then raises CollectionLockedError naming the holder. ``shared``: other
    shared holders may hold it too (ingest workers on a PostgreSQL state; with SQLite state
    every lock is exclusive)."""
    if settings.state.url is not None:
        from rag_pipeline.state_db import state_engine

        engine = state_engine(settings)
        if engine.dialect.name == "postgresql":
            with _advisory_lock(engine, namespace, what, settings.ingest.lock_timeout, shared):
                yield
            return
    with _file_lock(settings, namespace, what):
        yield


def advisory_key(namespace: str) -> int:
    """The advisory-lock key of ``namespace``: 64 bits of its hash, signed as PostgreSQL's."""
    digest = hashlib.sha256(f"rag_pipeline:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _advisory_lock(
    engine: Engine, namespace: str, what: str, timeout: float, shared: bool
) -> Iterator[None]:
    from sqlalchemy import text

    key = advisory_key(namespace)
    kind = "_shared" if shared else ""
    # Its own connection, outside any transaction: the lock belongs to this session, and
    # PostgreSQL drops it with the session if the process dies.
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + timeout
        while not conn.execute(text(f"SELECT pg_try_advisory_lock{kind}(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                raise _locked_error(what, namespace, _advisory_holder(conn, key), timeout)
            time.sleep(0.2)
        try:
            yield
        finally:
            conn.execute(text(f"SELECT pg_advisory_unlock{kind}(:k)"), {"k": key})


def _advisory_holder(conn: Connection, key: int) -> str:
    from sqlalchemy import text

    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        text(
            "SELECT a.pid, a.client_addr, a.application_name, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo "
            "LIMIT 1"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "another process"
    where = f" at {row.client_addr}" if row.client_addr else ""
    since = row.backend_start.strftime("%Y-%m-%d %H:%M:%S") if row.backend_start else "?"
    return f"PostgreSQL session {row.pid}{where} (since {since})"


@contextmanager
def _file_lock(settings: Settings, namespace: str, what: str) -> Iterator[None]:
    import filelock

    from rag_pipeline.datafolder import ensure_data_dir

    ensure_data_dir(settings)
    path = lock_path(settings, namespace)
    path.parent.mkdir(exist_ok=True)
    owner = path.with_suffix(".owner")
    lock = filelock.FileLock(str(path))
    timeout = settings.ingest.lock_timeout
    try:
        if timeout > 0:
            lock.acquire(timeout=timeout)
        else:
            lock.acquire(blocking=False)
    except filelock.Timeout as e:
        raise _locked_error(what, namespace, _holder(owner), timeout) from e
    try:
        command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3]) or "python"
        owner.write_text(
            json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}),
            encoding="utf-8",
        )
        yield
    finally:
        lock.release()
