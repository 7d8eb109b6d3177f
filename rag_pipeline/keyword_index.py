"""The persisted keyword (BM25) index of one collection, and the mirror that keeps it on the
vector store's ids.

Writes go through ``KeywordIndex`` (tables in ``keyword_store``): each ``add`` is one
transaction that stores the chunks, one new segment of posting lists, the document frequencies
and the collection statistics together, so a reader sees a write entirely or not at all.
``load`` returns a ``bm25.KeywordSearcher``, which answers from the database without loading
the index.

Tokens are made from chunk text normalised by the collection's synonym groups, which the index
records; ``ensure_synonyms`` re-tokenises only the chunks holding a variant whose group
changed, so editing a synonym file never needs a rebuild.

>>> index = KeywordIndex(Path("keyword.sqlite"), "chroma/persistent/rag")    # doctest: +SKIP
>>> index.add(documents, ids)                                                # doctest: +SKIP
>>> index.load(synonyms=groups).search("RP-2024-07 什么时候生效", k=5)        # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DatabaseError, IntegrityError

from rag_pipeline import keyword_store as ks
from rag_pipeline import state_db
from rag_pipeline.bm25 import TOKENIZER_VERSION, KeywordSearcher, question_text, tokenize
from rag_pipeline.errors import CorruptDataError
from rag_pipeline.synonyms import Synonyms

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from rag_pipeline.records import StateRecordManager

_ID_BATCH = 500  # ids per IN (...) list
_SCAN_BATCH = 2000  # chunks per read when re-tokenising


class KeywordIndex:
    """The keyword index of one collection, in a state database (``state_db``): an engine, a
    SQLite file path or a SQLAlchemy URL."""

    def __init__(self, location: Engine | Path | str, namespace: str) -> None:
        self.collection = namespace
        self.namespace = f"{namespace}#tokens-v{TOKENIZER_VERSION}"
        self.engine = (
            location if not isinstance(location, Path | str) else state_db.open_state(location)
        )
        try:
            self.id = self._namespace_id(self.namespace)
            if self.engine.dialect.name == "sqlite":
                self._migrate_legacy_rows()
        except DatabaseError as e:
            if self.engine.dialect.name != "sqlite":  # PostgreSQL's own error says enough
                raise
            raise CorruptDataError(
                f"the state database {self.engine.url.database} is not a readable SQLite "
                f"database ({e.orig}): move it away, then `rag verify --repair` and "
                "`rag ingest FOLDER` rebuild it from the vector store"
            ) from e
        self._synonyms: tuple[str, Synonyms] = ("{}", Synonyms())

    def _namespace_id(self, name: str) -> int:
        with state_db.reading(self.engine) as conn:
            found = conn.execute(
                select(ks.namespaces.c.id).where(ks.namespaces.c.name == name)
            ).scalar()
        if found is not None:
            return int(found)
        try:
            with state_db.writing(self.engine) as conn:
                return int(
                    conn.execute(
                        ks.namespaces.insert().values(name=name).returning(ks.namespaces.c.id)
                    ).scalar_one()
                )
        except IntegrityError:  # created by another process in between
            return self._namespace_id(name)

    # -- writes ------------------------------------------------------------------------------

    def _begin_write(self, conn: Connection) -> Any:
        """Count a change and take the collection's row lock; the row, as it was."""
        return conn.execute(
            update(ks.namespaces)
            .where(ks.namespaces.c.id == self.id)
            .values(changes=ks.namespaces.c.changes + 1)
            .returning(*ks.namespaces.c)
        ).one()

    def _groups(self, encoded: str) -> Synonyms:
        if self._synonyms[0] != encoded:
            self._synonyms = (encoded, Synonyms(json.loads(encoded)))
        return self._synonyms[1]

    def add(self, documents: Sequence[Document], ids: Sequence[str]) -> None:
        """Store chunks (replacing those with the same ids) in one transaction."""
        if len(documents) != len(ids):
            raise ValueError(f"{len(documents)} documents but {len(ids)} ids")
        if not documents:
            return
        with state_db.writing(self.engine) as conn:
            self.add_in(conn, documents, ids)

    def add_in(self, conn: Connection, documents: Sequence[Document], ids: Sequence[str]) -> None:
        """``add`` inside a write transaction the caller holds (the record manager's)."""
        if not documents:
            return
        row = self._begin_write(conn)
        self._add_in(conn, row, documents, ids, self._groups(row.synonyms))
        self._merge(conn)

    def _add_in(
        self,
        conn: Connection,
        row: Any,
        documents: Sequence[Document],
        ids: Sequence[str],
        synonyms: Synonyms,
    ) -> None:
        # The last copy of an id given twice wins, as with the store's upsert.
        latest = {id_: doc for doc, id_ in zip(documents, ids, strict=True)}
        self._delete_in(conn, list(latest))
        docno = int(row.next_docno)
        segment = int(row.next_segment)
        fields: dict[int, dict[str, tuple[list[int], list[int], list[int]]]] = {
            ks.BODY: {},
            ks.QUESTION: {},
        }
        doc_rows = []
        totals = Counter[str]()
        for id_, doc in latest.items():
            body = Counter(tokenize(synonyms.normalise(doc.page_content)))
            asked = question_text(doc.metadata)
            question = Counter(tokenize(synonyms.normalise(asked))) if asked else Counter()
            length, question_length = sum(body.values()), sum(question.values())
            for field, counts, size in (
                (ks.BODY, body, length),
                (ks.QUESTION, question, question_length),
            ):
                for term, tf in counts.items():
                    docnos, tfs, lengths = fields[field].setdefault(term, ([], [], []))
                    docnos.append(docno)
                    tfs.append(tf)
                    lengths.append(size)
            doc_rows.append(
                (
                    self.id,
                    docno,
                    id_,
                    doc.page_content,
                    json.dumps(doc.metadata, ensure_ascii=False),
                    json.dumps(body, ensure_ascii=False),
                    json.dumps(question, ensure_ascii=False),
                    length,
                    question_length,
                    segment,
                )
            )
            totals.update(
                documents=1,
                total_length=length,
                questions=1 if question_length else 0,
                question_length=question_length,
            )
            docno += 1
        ks.bulk(
            conn,
            "INSERT INTO keyword_docs (namespace, docno, id, content, metadata, terms, "
            "question_terms, length, question_length, segment) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            doc_rows,
        )
        ks.write_segment(conn, self.id, segment, fields, len(doc_rows))
        self._change_statistics(conn, totals, next_docno=docno, next_segment=segment + 1)

    def _change_statistics(self, conn: Connection, delta: Counter[str], **values: int) -> None:
        table = ks.namespaces
        conn.execute(
            update(table)
            .where(table.c.id == self.id)
            .values(
                **{name: table.c[name] + delta[name] for name in delta},
                **values,
            )
        )

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with state_db.writing(self.engine) as conn:
            self.delete_in(conn, ids)

    def delete_in(self, conn: Connection, ids: Sequence[str]) -> None:
        """``delete`` inside a write transaction the caller holds."""
        if not ids:
            return
        self._begin_write(conn)
        self._delete_in(conn, list(ids))
        self._merge(conn)

    def _delete_in(self, conn: Connection, ids: list[str]) -> int:
        """Remove the chunks ``ids`` (those present), their document frequencies and their
        share of the statistics; their postings become dead entries."""
        dead: Counter[tuple[int, int, str]] = Counter()  # (segment, field, term)
        per_segment: Counter[int] = Counter()
        totals = Counter[str]()
        removed: list[int] = []
        for start in range(0, len(ids), _ID_BATCH):
            rows = conn.execute(
                select(
                    ks.docs.c.docno,
                    ks.docs.c.terms,
                    ks.docs.c.question_terms,
                    ks.docs.c.length,
                    ks.docs.c.question_length,
                    ks.docs.c.segment,
                ).where(
                    ks.docs.c.namespace == self.id, ks.docs.c.id.in_(ids[start : start + _ID_BATCH])
                )
            ).all()
            for docno, body, question, length, question_length, segment in rows:
                removed.append(docno)
                per_segment[segment] += 1
                dead.update((segment, ks.BODY, term) for term in json.loads(body))
                dead.update((segment, ks.QUESTION, term) for term in json.loads(question))
                totals.update(
                    documents=-1,
                    total_length=-length,
                    questions=-1 if question_length else 0,
                    question_length=-question_length,
                )
        if not removed:
            return 0
        for start in range(0, len(removed), _ID_BATCH):
            conn.execute(
                delete(ks.docs).where(
                    ks.docs.c.namespace == self.id,
                    ks.docs.c.docno.in_(removed[start : start + _ID_BATCH]),
                )
            )
        ks.subtract_live(
            conn,
            [(n, self.id, segment, field, term) for (segment, field, term), n in dead.items()],
        )
        for segment, count in per_segment.items():
            conn.execute(
                update(ks.segments)
                .where(ks.segments.c.namespace == self.id, ks.segments.c.segment == segment)
                .values(live=ks.segments.c.live - count)
            )
        self._change_statistics(conn, totals)
        return len(removed)

    def _merge(self, conn: Connection) -> None:
        while (plan := ks.segments_to_merge(conn, self.id)) is not None:
            ks.merge_segments(conn, self.id, *plan)

    def clear(self) -> int:
        """Remove every chunk of this collection; returns how many went."""
        with state_db.writing(self.engine) as conn:
            row = self._begin_write(conn)
            self._clear_in(conn, self.id)
        return int(row.documents)

    @staticmethod
    def _clear_in(conn: Connection, namespace: int) -> None:
        for table in (ks.docs, ks.postings, ks.segments):
            conn.execute(delete(table).where(table.c.namespace == namespace))
        # The chunk-number counter stays: a searcher pinned before the clear must not see
        # new chunks under numbers it considers old.
        conn.execute(
            update(ks.namespaces)
            .where(ks.namespaces.c.id == namespace)
            .values(documents=0, total_length=0, questions=0, question_length=0)
        )

    def move_to(self, namespace: str) -> int:
        """Hand every chunk over to the collection ``namespace`` (after a rename)."""
        target = f"{namespace}#tokens-v{TOKENIZER_VERSION}"
        with state_db.writing(self.engine) as conn:
            row = self._begin_write(conn)
            existing = conn.execute(
                select(ks.namespaces.c.id).where(ks.namespaces.c.name == target)
            ).scalar()
            if existing is not None and existing != self.id:
                self._clear_in(conn, existing)
                conn.execute(delete(ks.namespaces).where(ks.namespaces.c.id == existing))
            conn.execute(
                update(ks.namespaces).where(ks.namespaces.c.id == self.id).values(name=target)
            )
        self.collection, self.namespace = namespace, target
        return int(row.documents)

    # -- repair ------------------------------------------------------------------------------

    def _counted(self, conn: Connection) -> tuple[int, int, int, int]:
        """The statistics as the chunk rows give them."""
        from sqlalchemy import case, func

        d = ks.docs.c
        row = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(d.length), 0),
                func.coalesce(func.sum(case((d.question_length > 0, 1), else_=0)), 0),
                func.coalesce(func.sum(d.question_length), 0),
            ).where(d.namespace == self.id)
        ).one()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def statistics_agree(self) -> bool:
        """Whether the collection statistics match the chunk rows (they do unless the rows
        were edited behind the index's back)."""
        with state_db.reading(self.engine) as conn:
            row = self._read_row(conn)
            kept = (row.documents, row.total_length, row.questions, row.question_length)
            return tuple(int(v) for v in kept) == self._counted(conn)

    def recount(self) -> None:
        """Recompute the statistics from the chunk rows and rewrite every segment as one (which
        recounts each term's live postings)."""
        with state_db.writing(self.engine) as conn:
            self._begin_write(conn)
            documents, total, questions, question_length = self._counted(conn)
            conn.execute(
                update(ks.namespaces)
                .where(ks.namespaces.c.id == self.id)
                .values(
                    documents=documents,
                    total_length=total,
                    questions=questions,
                    question_length=question_length,
                )
            )
            rows = conn.execute(
                select(ks.segments.c.segment, ks.segments.c.level).where(
                    ks.segments.c.namespace == self.id
                )
            ).all()
            if rows:
                ks.merge_segments(conn, self.id, [r[0] for r in rows], max(r[1] for r in rows))

    # -- synonyms ----------------------------------------------------------------------------

    def ensure_synonyms(self, synonyms: Synonyms | None) -> int:
        """Make the stored tokens those of ``synonyms``: chunks holding a variant whose group
        changed are re-tokenised (nothing else is read). Returns how many were."""
        wanted = json.dumps((synonyms or Synonyms()).mapping, sort_keys=True, ensure_ascii=False)
        with state_db.reading(self.engine) as conn:
            stored = conn.execute(
                select(ks.namespaces.c.synonyms).where(ks.namespaces.c.id == self.id)
            ).scalar_one()
        if stored == wanted:
            return 0
        with state_db.writing(self.engine) as conn:
            row = self._begin_write(conn)
            if row.synonyms == wanted:
                return 0
            old, new = json.loads(row.synonyms), json.loads(wanted)
            changed = Synonyms(
                {v: "\0" for v in old.keys() | new.keys() if old.get(v) != new.get(v)}
            )
            redo: list[tuple[str, Document]] = []
            after = -1
            while changed:
                rows = conn.execute(
                    select(ks.docs.c.docno, ks.docs.c.id, ks.docs.c.content, ks.docs.c.metadata)
                    .where(ks.docs.c.namespace == self.id, ks.docs.c.docno > after)
                    .order_by(ks.docs.c.docno)
                    .limit(_SCAN_BATCH)
                ).all()
                if not rows:
                    break
                after = rows[-1][0]
                redo.extend(
                    (id_, Document(page_content=content, metadata=json.loads(meta)))
                    for _, id_, content, meta in rows
                    if changed.matches(content)
                )
            groups = Synonyms(new)
            for start in range(0, len(redo), _SCAN_BATCH):
                part = redo[start : start + _SCAN_BATCH]
                fresh = self._read_row(conn)
                self._add_in(conn, fresh, [d for _, d in part], [i for i, _ in part], groups)
            conn.execute(
                update(ks.namespaces).where(ks.namespaces.c.id == self.id).values(synonyms=wanted)
            )
            self._merge(conn)
        return len(redo)

    def _read_row(self, conn: Connection) -> Any:
        return conn.execute(select(*ks.namespaces.c).where(ks.namespaces.c.id == self.id)).one()

    # -- reads -------------------------------------------------------------------------------

    def count(self) -> int:
        with state_db.reading(self.engine) as conn:
            return int(self._read_row(conn).documents)

    def changes(self) -> int:
        """A number that grows with every write to this collection's keyword index."""
        with state_db.reading(self.engine) as conn:
            return int(self._read_row(conn).changes)

    def ids(self) -> set[str]:
        with state_db.reading(self.engine) as conn:
            return self.ids_in(conn)

    def ids_in(self, conn: Connection) -> set[str]:
        return set(
            conn.execute(select(ks.docs.c.id).where(ks.docs.c.namespace == self.id)).scalars()
        )

    def load(
        self, *, synonyms: Synonyms | None = None, question_weight: float = 0.0
    ) -> KeywordSearcher:
        """A searcher over the chunks stored now (see ``bm25.KeywordSearcher``); the stored
        tokens are first brought to ``synonyms`` (``ensure_synonyms``)."""
        self.ensure_synonyms(synonyms)
        with state_db.reading(self.engine) as conn:
            pin = int(self._read_row(conn).next_docno) - 1
        return KeywordSearcher(
            self.engine, self.id, pin=pin, synonyms=synonyms, question_weight=question_weight
        )

    # -- the table of earlier versions -------------------------------------------------------

    def _migrate_legacy_rows(self) -> None:
        """Move this collection's chunks from ``keyword_chunks`` (the one-table layout of
        earlier versions, which loaded everything per process) into these tables, once."""
        with state_db.reading(self.engine) as conn:
            present = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keyword_chunks'"
            ).first()
        if present is None:
            return
        pattern = f"{self.collection}#tokens-v%"
        with state_db.writing(self.engine) as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, content, metadata FROM keyword_chunks WHERE namespace LIKE ? "
                "ORDER BY namespace DESC",
                (pattern,),
            ).all()
            if rows:
                latest: dict[str, Document] = {}
                for id_, content, meta in rows:
                    latest.setdefault(
                        id_, Document(page_content=content, metadata=json.loads(meta))
                    )
                if self._read_row(conn).documents == 0:
                    items = list(latest.items())
                    for start in range(0, len(items), _SCAN_BATCH):
                        part = items[start : start + _SCAN_BATCH]
                        row = self._begin_write(conn)
                        self._add_in(
                            conn, row, [d for _, d in part], [i for i, _ in part], Synonyms()
                        )
                    self._merge(conn)
                conn.exec_driver_sql(
                    "DELETE FROM keyword_chunks WHERE namespace LIKE ?", (pattern,)
                )
            (left,) = conn.exec_driver_sql("SELECT COUNT(*) FROM keyword_chunks").one()
            if left == 0:
                conn.exec_driver_sql("DROP TABLE keyword_chunks")


# Chunks written to the wrapped store per request: below Chroma's smallest maximum batch
# (client.get_max_batch_size(), 5,461 for the embedded SQLite store) and small enough to keep
# the vectors of one huge file from being held all at once.
ADD_BATCH = 1000


class KeywordMirror(VectorStore):
    """A vector store that also writes every added/deleted chunk to the keyword index.

    LangChain's ``index()`` only adds and deletes, so wrapping the store it writes to keeps both
    indexes on the same ids through every add, replace, prune and cleanup.
    """

    def __init__(
        self,
        inner: VectorStore,
        keyword: KeywordIndex,
        *,
        max_batch: int = ADD_BATCH,
        joined_to: StateRecordManager | None = None,
    ) -> None:
        self.inner = inner
        self.keyword = keyword
        self.max_batch = max(1, max_batch)
        # With a record manager, keyword writes commit in its next transaction (index()
        # records a batch right after writing it), not on their own.
        self.joined_to = joined_to

    @property
    def embeddings(self) -> Embeddings | None:
        return self.inner.embeddings

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        # index() hands over whole files, one of which can exceed what the store takes in
        # one request (Chroma: 5,461 records); slices also bound the vectors held at once.
        given = kwargs.pop("ids", None)
        ids: list[str] = []
        for start in range(0, len(documents), self.max_batch):
            batch = documents[start : start + self.max_batch]
            if given is not None:
                kwargs["ids"] = list(given[start : start + self.max_batch])
            added = self.inner.add_documents(batch, **kwargs)
            if self.joined_to is None:
                self.keyword.add(batch, added)
            else:
                self.joined_to.join(partial(self.keyword.add_in, documents=batch, ids=added))
            ids.extend(added)
        return ids

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, **kwargs: Any
    ) -> list[str]:
        texts = list(texts)
        docs = [
            Document(page_content=t, metadata=(metadatas or [{}] * len(texts))[i])
            for i, t in enumerate(texts)
        ]
        return self.add_documents(docs, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        result = self.inner.delete(ids=ids, **kwargs)
        if ids and self.joined_to is None:
            self.keyword.delete(ids)
        elif ids and self.joined_to is not None:
            self.joined_to.join(partial(self.keyword.delete_in, ids=list(ids)))
        return result

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return self.inner.get_by_ids(ids)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return self.inner.similarity_search(query, k=k, **kwargs)

    @classmethod
    def from_texts(cls, *args: Any, **kwargs: Any) -> KeywordMirror:
        raise NotImplementedError("wrap an existing store: KeywordMirror(store, keyword_index)")
