"""What a collection keeps beside its vectors, created, counted, moved, copied and dropped here.

Everything lives in the state database (``state_db``: ``state.sqlite`` in the data folder, or
PostgreSQL with ``RAG_STATE__URL``), keyed by the backend's namespace (backend + location +
collection name):

- the record manager (``records.StateRecordManager``): which chunk ids are stored, grouped by
  ``source``; it is what makes re-ingesting incremental;
- the source manifest (``rag_sources``): which files the namespace holds, under which corpus
  root, so deleted files can be pruned;
- the corpus roots (``rag_roots``): each ingested folder's resolved path and a short label,
  unique in the namespace. A file's *source key* is ``LABEL/SOURCE`` (``SOURCE`` being its path
  relative to the folder, the ``source`` metadata users see), so two folders holding
  ``faq.csv`` keep both; the key is the record-manager group of the file's chunks, which carry
  the label as ``root`` metadata;
- the keyword index (``keyword_index.KeywordIndex``).

>>> from rag_pipeline.config import Settings
>>> state = Bookkeeping(Settings(data_dir=tmp), "chroma/persistent/rag")   # doctest: +SKIP
>>> state.counts().to_dict()                                               # doctest: +SKIP
{'records': 0, 'sources': 0, 'keyword_chunks': 0}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from rag_pipeline import state_db
from rag_pipeline.batching import batched
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.records import StateRecordManager
from rag_pipeline.stores.base import source_key

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

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

    The record manager knows keys per source but cannot list sources; pruning deleted files
    needs that list, so it is kept here, in the state database.
    """

    def __init__(self, engine: Engine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace

    def rows(self) -> list[tuple[str, str]]:
        """Every (source, root) of the namespace."""
        t = state_db.sources
        with state_db.reading(self.engine) as conn:
            found = conn.execute(
                select(t.c.source, t.c.root)
                .where(t.c.namespace == self.namespace)
                .order_by(t.c.source)
            ).all()
        return [(str(s), str(r)) for s, r in found]

    def under(self, root: Path) -> set[str]:
        return {source for source, at in self.rows() if at == str(root)}

    def add(self, files: Iterable[SourceFile], labels: dict[Path, str]) -> None:
        """Record files (each under its root's label) as held by the namespace."""
        self.add_rows(self.rows_of(files, labels))

    @staticmethod
    def rows_of(files: Iterable[SourceFile], labels: dict[Path, str]) -> list[tuple[str, str]]:
        return [(source_key(labels[f.root], f.source), str(f.root)) for f in files]

    def add_rows(self, rows: Iterable[tuple[str, str]]) -> None:
        with state_db.writing(self.engine) as conn:
            self.add_in(conn, rows)

    def add_in(self, conn: Connection, rows: Iterable[tuple[str, str]]) -> None:
        """``add_rows`` inside a write transaction the caller holds."""
        listed = [{"namespace": self.namespace, "source": s, "root": r} for s, r in rows]
        for batch in batched(listed, KEY_BATCH):
            state_db.upsert(conn, state_db.sources, batch)

    def remove(self, sources: Iterable[str]) -> int:
        with state_db.writing(self.engine) as conn:
            return self.remove_in(conn, sources)

    def remove_in(self, conn: Connection, sources: Iterable[str]) -> int:
        t = state_db.sources
        removed = 0
        for batch in batched(list(sources), KEY_BATCH):
            removed += conn.execute(
                delete(t).where(t.c.namespace == self.namespace, t.c.source.in_(list(batch)))
            ).rowcount
        return removed

    def clear(self) -> int:
        t = state_db.sources
        with state_db.writing(self.engine) as conn:
            return conn.execute(delete(t).where(t.c.namespace == self.namespace)).rowcount


def record_manager(settings: Settings, namespace: str) -> StateRecordManager:
    """The record manager of ``namespace``, in the state database of ``settings``."""
    return StateRecordManager(state_db.state_engine(settings), namespace)


class Bookkeeping:
    """The record manager, source manifest and keyword index of one collection namespace.

    >>> state = Bookkeeping(settings, store.namespace)          # doctest: +SKIP
    >>> state.delete_sources(store, ["faq.csv"])                 # doctest: +SKIP
    """

    def __init__(self, settings: Settings, namespace: str) -> None:
        self.settings = settings
        self.namespace = namespace
        self.engine = state_db.state_engine(settings)
        self.records = StateRecordManager(self.engine, namespace)
        self.manifest = SourceManifest(self.engine, namespace)
        self.keyword = KeywordIndex(self.engine, namespace)

    # -- roots -------------------------------------------------------------------------------

    def roots(self) -> dict[str, str]:
        """Every corpus root of the namespace: label -> resolved path."""
        t = state_db.roots
        with state_db.reading(self.engine) as conn:
            rows = conn.execute(
                select(t.c.label, t.c.path)
                .where(t.c.namespace == self.namespace)
                .order_by(t.c.label)
            ).all()
        return {str(label): str(path) for label, path in rows}

    def root_label(self, path: Path) -> str:
        """The label of the corpus root ``path`` (resolved), made and recorded on first use:
        the folder's name, with ``-2``, ``-3``, ... when another folder has that name."""
        resolved = str(path.resolve())
        base = _LABEL_CHARS.sub("_", path.resolve().name).strip("_") or "root"
        for _attempt in range(20):
            known = self.roots()
            for label, at in known.items():
                if at == resolved:
                    return label
            label, n = base, 1
            while label in known:
                n += 1
                label = f"{base}-{n}"
            try:
                with state_db.writing(self.engine) as conn:
                    conn.execute(
                        insert(state_db.roots).values(
                            namespace=self.namespace, label=label, path=resolved
                        )
                    )
                return label
            except IntegrityError:
                continue  # another worker recorded a root at that moment: look again
        raise RuntimeError(f"could not record the corpus root {resolved}")

    def _add_roots(self, roots: dict[str, str]) -> None:
        with state_db.writing(self.engine) as conn:
            state_db.upsert(
                conn,
                state_db.roots,
                [{"namespace": self.namespace, "label": k, "path": v} for k, v in roots.items()],
            )
            state_db.upsert(
                conn, state_db.layout, [{"namespace": self.namespace, "version": LAYOUT_VERSION}]
            )

    def _clear_roots(self) -> None:
        with state_db.writing(self.engine) as conn:
            for t in (state_db.roots, state_db.layout):
                conn.execute(delete(t).where(t.c.namespace == self.namespace))

    def upgrade_layout(self) -> int:
        """Key the sources of a namespace written before roots existed by root label + path
        (once); returns how many sources were re-keyed. Their chunks gain the ``root`` label,
        and so new ids, at the next ingest of their folder (vectors come from the cache)."""
        t = state_db.layout
        with state_db.reading(self.engine) as conn:
            version = conn.execute(
                select(t.c.version).where(t.c.namespace == self.namespace)
            ).scalar()
        if version is not None and int(version) >= LAYOUT_VERSION:
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
        (after a rebuild, a wiped store, or an index built before the keyword index existed).
        Both are read in one snapshot: another worker's write lands in both or neither."""
        with state_db.reading(self.engine) as conn:
            recorded = set(
                conn.execute(
                    select(state_db.records.c.key).where(
                        state_db.records.c.namespace == self.namespace
                    )
                ).scalars()
            )
            indexed = self.keyword.ids_in(conn)
        if indexed - recorded:
            self.keyword.delete(sorted(indexed - recorded))
        missing = sorted(recorded - indexed)
        for batch in batched(missing, KEY_BATCH):
            docs = store.get(list(batch))
            self.keyword.add(docs, [d.id or "" for d in docs])

    def delete_ids(self, store: VectorBackend, ids: Sequence[str]) -> int:
        """Remove chunks by id from the store, then from the keyword index and the records
        (one transaction)."""
        ids = list(ids)
        store.delete(ids)
        with state_db.writing(self.engine) as conn:
            self.keyword.delete_in(conn, ids)
            self.records.delete_in(conn, ids)
        return len(ids)

    def delete_sources(self, store: VectorBackend, sources: Iterable[str]) -> int:
        """Remove every chunk of ``sources`` everywhere, and the sources from the manifest."""
        deleted = 0
        for source in sources:
            ids = self.records.list_keys(group_ids=[source])
            store.delete(ids)
            with state_db.writing(self.engine) as conn:
                self.keyword.delete_in(conn, ids)
                self.records.delete_in(conn, ids)
                self.manifest.remove_in(conn, [source])
            deleted += len(ids)
        return deleted
