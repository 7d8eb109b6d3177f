"""What a collection keeps beside its vectors, created, counted, moved, copied and dropped here.

Three things, all keyed by the backend's namespace (backend + location + collection name):

- the LangChain record manager (``SQLRecordManager`` in ``settings.record_db``): which chunk
  ids are stored, grouped by ``source``; it is what makes re-ingesting incremental;
- the source manifest (our table ``rag_sources`` in the same file): which files the namespace
  holds, under which corpus root, so deleted files can be pruned;
- the corpus roots (our table ``rag_roots``): each ingested folder's resolved path and a short
  label, unique in the namespace. A file's *source key* is ``LABEL/SOURCE`` (``SOURCE`` being
  its path relative to the folder, the ``source`` metadata users see), so two folders holding
  ``faq.csv`` keep both; the key is the record-manager group of the file's chunks, which carry
  the label as ``root`` metadata.
- the keyword index (``rag_pipeline.bm25.KeywordIndex`` in ``settings.keyword_db``).

Only public record-manager calls are used (``list_keys``, ``update``, ``delete_keys``): a
rename moves each source's keys to the new namespace group by group.

>>> from rag_pipeline.config import Settings
>>> state = Bookkeeping(Settings(data_dir=tmp), "chroma/persistent/rag")   # doctest: +SKIP
>>> state.counts().to_dict()                                               # doctest: +SKIP
{'records': 0, 'sources': 0, 'keyword_chunks': 0}
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rag_pipeline.batching import batched
from rag_pipeline.datafolder import ensure_data_dir
from rag_pipeline.errors import CorruptDataError
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.stores.base import source_key

if TYPE_CHECKING:
    from langchain_classic.indexes import SQLRecordManager

    from rag_pipeline.config import Settings
    from rag_pipeline.loading import SourceFile
    from rag_pipeline.stores.base import VectorBackend

KEY_BATCH = 500
LAYOUT_VERSION = 2  # 1: sources keyed by relative path alone (same names in two folders clashed)
_LABEL_CHARS = re.compile(r"[^\w.-]+")


@dataclass
class Counts:
    """Rows kept for one namespace (what ``move_to`` moves and ``drop`` removes)."""

    records: int = 0
    sources: int = 0
    keyword_chunks: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class SourceManifest:
    """Which sources a namespace holds, and under which corpus root.

    LangChain's record manager knows keys per source but cannot list sources; pruning deleted
    files needs that list, so it is kept here, in the same SQLite file.
    """

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS rag_sources ("
                "namespace TEXT NOT NULL, source TEXT NOT NULL, root TEXT NOT NULL, "
                "PRIMARY KEY (namespace, source))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def rows(self) -> list[tuple[str, str]]:
        """Every (source, root) of the namespace."""
        with closing(self._connect()) as db:
            found = db.execute(
                "SELECT source, root FROM rag_sources WHERE namespace = ? ORDER BY source",
                (self.namespace,),
            ).fetchall()
        return [(str(s), str(r)) for s, r in found]

    def under(self, root: Path) -> set[str]:
        return {source for source, at in self.rows() if at == str(root)}

    def add(self, files: Iterable[SourceFile], labels: dict[Path, str]) -> None:
        """Record files (each under its root's label) as held by the namespace."""
        self.add_rows((source_key(labels[f.root], f.source), str(f.root)) for f in files)

    def add_rows(self, rows: Iterable[tuple[str, str]]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO rag_sources VALUES (?, ?, ?)",
                [(self.namespace, source, root) for source, root in rows],
            )

    def remove(self, sources: Iterable[str]) -> int:
        with closing(self._connect()) as db, db:
            cursor = db.executemany(
                "DELETE FROM rag_sources WHERE namespace = ? AND source = ?",
                [(self.namespace, s) for s in sources],
            )
        return cursor.rowcount

    def clear(self) -> int:
        with closing(self._connect()) as db, db:
            cursor = db.execute("DELETE FROM rag_sources WHERE namespace = ?", (self.namespace,))
        return cursor.rowcount


def record_manager(settings: Settings, namespace: str) -> SQLRecordManager:
    """LangChain's record manager for ``namespace``, in the data folder (tables created)."""
    from langchain_classic.indexes import SQLRecordManager
    from sqlalchemy.exc import DatabaseError

    ensure_data_dir(settings)
    from sqlalchemy.pool import NullPool

    # No pooled connection: each Bookkeeping would otherwise keep one open file per engine
    # for the life of the process (a long-lived service or a test session runs out of them).
    manager = SQLRecordManager(
        namespace,
        db_url=f"sqlite:///{settings.record_db}",
        engine_kwargs={"poolclass": NullPool},
    )
    try:
        manager.create_schema()
    except DatabaseError as e:
        raise _corrupt_records(settings, e) from e
    return manager


def _corrupt_records(settings: Settings, error: Exception) -> CorruptDataError:
    return CorruptDataError(
        f"the record file {settings.record_db} is not a readable SQLite database "
        f"({type(error).__name__}): move it away, then `rag verify --repair` and "
        "`rag ingest FOLDER` rebuild the records from the store (nothing is re-embedded)"
    )


class Bookkeeping:
    """The record manager, source manifest and keyword index of one collection namespace.

    >>> state = Bookkeeping(settings, store.namespace)          # doctest: +SKIP
    >>> state.delete_sources(store, ["faq.csv"])                 # doctest: +SKIP
    """

    def __init__(self, settings: Settings, namespace: str) -> None:
        self.settings = settings
        self.namespace = namespace
        self.records = record_manager(settings, namespace)
        self.manifest = SourceManifest(settings.record_db, namespace)
        self.keyword = KeywordIndex(settings.keyword_db, namespace)
        try:
            self._create_tables()
        except sqlite3.DatabaseError as e:
            raise _corrupt_records(settings, e) from e

    def _create_tables(self) -> None:
        with closing(self._db()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS rag_roots (namespace TEXT NOT NULL, "
                "label TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (namespace, label), "
                "UNIQUE (namespace, path))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS rag_layout (namespace TEXT PRIMARY KEY, "
                "version INTEGER NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.record_db)

    # -- roots -------------------------------------------------------------------------------

    def roots(self) -> dict[str, str]:
        """Every corpus root of the namespace: label -> resolved path."""
        with closing(self._db()) as db:
            rows = db.execute(
                "SELECT label, path FROM rag_roots WHERE namespace = ? ORDER BY label",
                (self.namespace,),
            ).fetchall()
        return {str(label): str(path) for label, path in rows}

    def root_label(self, path: Path) -> str:
        """The label of the corpus root ``path`` (resolved), made and recorded on first use:
        the folder's name, with ``-2``, ``-3``, ... when another folder has that name."""
        resolved = str(path.resolve())
        known = self.roots()
        for label, at in known.items():
            if at == resolved:
                return label
        base = _LABEL_CHARS.sub("_", path.resolve().name).strip("_") or "root"
        label, n = base, 1
        while label in known:
            n += 1
            label = f"{base}-{n}"
        with closing(self._db()) as db, db:
            db.execute("INSERT INTO rag_roots VALUES (?, ?, ?)", (self.namespace, label, resolved))
        return label

    def _add_roots(self, roots: dict[str, str]) -> None:
        with closing(self._db()) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO rag_roots VALUES (?, ?, ?)",
                [(self.namespace, label, path) for label, path in roots.items()],
            )
            db.execute(
                "INSERT OR REPLACE INTO rag_layout VALUES (?, ?)", (self.namespace, LAYOUT_VERSION)
            )

    def _clear_roots(self) -> None:
        with closing(self._db()) as db, db:
            db.execute("DELETE FROM rag_roots WHERE namespace = ?", (self.namespace,))
            db.execute("DELETE FROM rag_layout WHERE namespace = ?", (self.namespace,))

    def upgrade_layout(self) -> int:
        """Key the sources of a namespace written before roots existed by root label + path
        (once); returns how many sources were re-keyed. Their chunks gain the ``root`` label,
        and so new ids, at the next ingest of their folder (vectors come from the cache)."""
        with closing(self._db()) as db:
            row = db.execute(
                "SELECT version FROM rag_layout WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        if row is not None and int(row[0]) >= LAYOUT_VERSION:
            return 0
        labels = {path: label for label, path in self.roots().items()}
        moved = 0
        for source, root in self.manifest.rows():
            label = labels.get(root) or self.root_label(Path(root))
            labels[root] = label
            if source.startswith(f"{label}/"):
                continue
            keys = self.records.list_keys(group_ids=[source])
            for batch in batched(keys, KEY_BATCH):
                self.record(batch, [source_key(label, source)] * len(batch))
            self.manifest.remove([source])
            self.manifest.add_rows([(source_key(label, source), root)])
            moved += 1
        self._add_roots({})
        return moved

    def counts(self) -> Counts:
        """How many rows each part holds."""
        return Counts(
            len(self.records.list_keys()), len(self.manifest.rows()), self.keyword.count()
        )

    def record(self, ids: Sequence[str], groups: Sequence[str | None]) -> None:
        """Record stored chunk ids with their groups (sources), as ``index()`` would."""
        self.records.update(list(ids), group_ids=list(groups))

    def forget_records(self) -> int:
        """Drop every record-manager key and manifest row (the store was emptied)."""
        keys = self.records.list_keys()
        for batch in batched(keys, KEY_BATCH):
            self.records.delete_keys(list(batch))
        self.manifest.clear()
        return len(keys)

    def drop(self) -> Counts:
        """Remove every row kept for the namespace; returns how many went."""
        sources = self.manifest.clear()
        records = self.forget_records()
        self._clear_roots()
        return Counts(records, sources, self.keyword.clear())

    def move_to(self, namespace: str) -> Counts:
        """Move every row to ``namespace`` (rows already there are stale leftovers of a
        collection that no longer exists, and go first); returns how many moved."""
        target = Bookkeeping(self.settings, namespace)
        target.drop()
        rows = self.manifest.rows()
        moved = self.copy_to(target, rows)
        roots = self.roots()
        self.forget_records()
        self._clear_roots()
        target.manifest.add_rows(rows)
        target._add_roots(roots)
        chunks = self.keyword.move_to(namespace)
        self.namespace = namespace
        self.records, self.manifest = target.records, target.manifest
        return Counts(moved, len(rows), chunks)

    def copy_roots_and_manifest(self, target: Bookkeeping) -> None:
        """Give ``target`` this namespace's roots and source manifest (after a migration)."""
        target._add_roots(self.roots())
        target.manifest.add_rows(self.manifest.rows())

    def copy_to(self, target: Bookkeeping, rows: list[tuple[str, str]] | None = None) -> int:
        """Copy every record-manager key, with its group, to ``target``; returns the count."""
        copied: set[str] = set()
        for source, _root in rows if rows is not None else self.manifest.rows():
            keys = self.records.list_keys(group_ids=[source])
            for batch in batched(keys, KEY_BATCH):
                target.record(batch, [source] * len(batch))
            copied.update(keys)
        # Keys of no listed source (a chunk without ``source`` metadata, say) keep no group.
        rest = [k for k in self.records.list_keys() if k not in copied]
        for batch in batched(rest, KEY_BATCH):
            target.record(batch, [None] * len(batch))
        return len(copied) + len(rest)

    def sync_keyword_index(self, store: VectorBackend) -> None:
        """Make the keyword index hold exactly the chunks the record manager says are stored
        (after a rebuild, a wiped store, or an index built before the keyword index existed)."""
        recorded = set(self.records.list_keys())
        indexed = self.keyword.ids()
        if indexed - recorded:
            self.keyword.delete(sorted(indexed - recorded))
        missing = sorted(recorded - indexed)
        for batch in batched(missing, KEY_BATCH):
            docs = store.get(list(batch))
            self.keyword.add(docs, [d.id or "" for d in docs])

    def delete_ids(self, store: VectorBackend, ids: Sequence[str]) -> int:
        """Remove chunks by id from the store, the keyword index and the records."""
        ids = list(ids)
        store.delete(ids)
        self.keyword.delete(ids)
        self.records.delete_keys(ids)
        return len(ids)

    def delete_sources(self, store: VectorBackend, sources: Iterable[str]) -> int:
        """Remove every chunk of ``sources`` everywhere, and the sources from the manifest."""
        sources = list(sources)
        deleted = 0
        for source in sources:
            deleted += self.delete_ids(store, self.records.list_keys(group_ids=[source]))
        self.manifest.remove(sources)
        return deleted
