"""The record manager: which chunk ids a collection holds, per source, in the state database.

LangChain's ``index()`` keeps its bookkeeping through a ``RecordManager``; this one stores the
rows of LangChain's ``SQLRecordManager`` (same table, so older data folders need no
conversion) in the state database, SQLite or PostgreSQL. What it adds: writes that must land
with the records, such as the keyword index's rows for the same chunks and the source
manifest, are *joined* to the next record write and commit in its transaction. A replica then
sees a file group's chunks entirely or not at all, and a worker killed between the vector write
and the records leaves nothing but vectors no reader sees (dropped, like any id outside the
keyword snapshot).

>>> manager = StateRecordManager(engine, "chroma/persistent/rag")      # doctest: +SKIP
>>> manager.join(lambda conn: keyword.add_in(conn, docs, ids))          # doctest: +SKIP
>>> manager.update(ids, group_ids=sources)                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import decimal
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from langchain_core.indexing import RecordManager
from sqlalchemy import delete, select, text

from rag_pipeline import state_db
from rag_pipeline.state_db import records

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

JoinedWrite = Callable[["Connection"], None]
_IN_BATCH = 500  # keys per IN (...) list: SQLite's statement variable limit stays far away


class StateRecordManager(RecordManager):
    """LangChain's record-manager contract over the state database's ``upsertion_record``."""

    def __init__(self, engine: Engine, namespace: str) -> None:
        super().__init__(namespace)
        self.engine = engine
        self._joined: list[JoinedWrite] = []

    def join(self, write: JoinedWrite) -> None:
        """Run ``write`` in the transaction of the next ``update`` or ``delete_keys``, before
        the records (so writers meet on the keyword index's row lock first, never in a
        deadlock over record rows)."""
        self._joined.append(write)

    def _run_joined(self, conn: Connection) -> None:
        pending, self._joined = self._joined, []
        for write in pending:
            write(conn)

    def flush(self) -> None:
        """Commit joined writes that no record write took along."""
        if self._joined:
            with state_db.writing(self.engine) as conn:
                self._run_joined(conn)

    def create_schema(self) -> None:
        """Nothing to do: ``state_db.open_state`` creates the tables."""

    def get_time(self) -> float:
        # The database's clock, as LangChain's own: every worker compares times of one clock.
        query = (
            "SELECT EXTRACT (EPOCH FROM CLOCK_TIMESTAMP())"
            if self.engine.dialect.name == "postgresql"
            else "SELECT (julianday('now') - 2440587.5) * 86400.0"
        )
        with state_db.reading(self.engine) as conn:
            value = conn.execute(text(query)).scalar()
        if isinstance(value, decimal.Decimal):
            return float(value)
        if not isinstance(value, float):
            raise TypeError(f"the database returned {value!r} for the time")
        return value

    def update(
        self,
        keys: Sequence[str],
        *,
        group_ids: Sequence[str | None] | None = None,
        time_at_least: float | None = None,
    ) -> None:
        if group_ids is None:
            group_ids = [None] * len(keys)
        if len(keys) != len(group_ids):
            raise ValueError(f"{len(keys)} keys but {len(group_ids)} group ids")
        now = self.get_time()
        if time_at_least and now < time_at_least:
            # LangChain's guard: a clock that went back would make cleanup delete new records.
            raise AssertionError(f"Time sync issue: {now} < {time_at_least}")
        latest = list(dict(zip(keys, group_ids, strict=True)).items())
        with state_db.writing(self.engine) as conn:
            self._run_joined(conn)
            for start in range(0, len(latest), _IN_BATCH):
                self._upsert(conn, latest[start : start + _IN_BATCH], now)

    def _upsert(self, conn: Connection, rows: list[tuple[str, str | None]], now: float) -> None:
        values = [
            {
                "uuid": str(uuid.uuid4()),
                "key": key,
                "namespace": self.namespace,
                "group_id": group,
                "updated_at": now,
            }
            for key, group in rows
        ]
        changed = {"updated_at", "group_id"}
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(records).values(values)
            conn.execute(
                pg.on_conflict_do_update(
                    constraint="uix_key_namespace", set_={c: pg.excluded[c] for c in changed}
                )
            )
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite = sqlite_insert(records).values(values)
            conn.execute(
                lite.on_conflict_do_update(
                    index_elements=[records.c.key, records.c.namespace],
                    set_={c: lite.excluded[c] for c in changed},
                )
            )

    def exists(self, keys: Sequence[str]) -> list[bool]:
        found: set[str] = set()
        with state_db.reading(self.engine) as conn:
            for start in range(0, len(keys), _IN_BATCH):
                part = list(keys[start : start + _IN_BATCH])
                found.update(
                    conn.execute(
                        select(records.c.key).where(
                            records.c.namespace == self.namespace, records.c.key.in_(part)
                        )
                    ).scalars()
                )
        return [key in found for key in keys]

    def list_keys(
        self,
        *,
        before: float | None = None,
        after: float | None = None,
        group_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        query = select(records.c.key).where(records.c.namespace == self.namespace)
        if after is not None:
            query = query.where(records.c.updated_at > after)
        if before is not None:
            query = query.where(records.c.updated_at < before)
        if group_ids is not None:
            query = query.where(records.c.group_id.in_(list(group_ids)))
        if limit:
            query = query.limit(limit)
        with state_db.reading(self.engine) as conn:
            return [str(k) for k in conn.execute(query).scalars()]

    def delete_keys(self, keys: Sequence[str]) -> None:
        with state_db.writing(self.engine) as conn:
            self._run_joined(conn)
            self.delete_in(conn, keys)

    def delete_in(self, conn: Connection, keys: Sequence[str]) -> None:
        """Delete ``keys`` inside a transaction the caller holds."""
        for start in range(0, len(keys), _IN_BATCH):
            conn.execute(
                delete(records).where(
                    records.c.namespace == self.namespace,
                    records.c.key.in_(list(keys[start : start + _IN_BATCH])),
                )
            )

    # The asynchronous half of the contract: ingest is synchronous, so these run the same
    # code in a worker thread.
    async def acreate_schema(self) -> None:
        return None

    async def aget_time(self) -> float:
        return await asyncio.to_thread(self.get_time)

    async def aupdate(
        self,
        keys: Sequence[str],
        *,
        group_ids: Sequence[str | None] | None = None,
        time_at_least: float | None = None,
    ) -> None:
        await asyncio.to_thread(self.update, keys, group_ids=group_ids, time_at_least=time_at_least)

    async def aexists(self, keys: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(self.exists, keys)

    async def alist_keys(
        self,
        *,
        before: float | None = None,
        after: float | None = None,
        group_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        return await asyncio.to_thread(
            lambda: self.list_keys(before=before, after=after, group_ids=group_ids, limit=limit)
        )

    async def adelete_keys(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_keys, keys)
