"""The keyword index's tables in the state database (``state_db``: SQLite or PostgreSQL), laid
out so a query reads the posting lists of its own terms and nothing else.

Posting lists are kept per *segment*: the chunks of one write form a segment, and segments are
merged into larger ones as writes pile up (``MERGE_FACTOR`` segments of one level become one of
the next level, as in Lucene), so a term has a few rows at most. A row holds one term's
postings in one segment as a single binary value: chunk numbers (int32), term frequencies and
chunk lengths (uint16, little-endian), read back as three numpy views. A term found in 30,000
chunks costs a few row reads, not 30,000.

Deleting a chunk removes its ``keyword_docs`` row and lowers the document frequencies and
collection statistics in the same transaction, so BM25 scores stay exact; its postings stay as
dead entries (a search skips chunk numbers without a row) until a merge rewrites their segment.
Chunk numbers are never reused: a replaced chunk gets a new one.

>>> engine = state_db.open_state(Path("state.sqlite"))                    # doctest: +SKIP
>>> with reading(engine) as conn: ...                                      # doctest: +SKIP
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    delete,
    select,
    update,
)

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection

BODY, QUESTION = 0, 1  # the two text fields (see bm25.KeywordSearcher)
MERGE_FACTOR = 6  # this many segments of one level are merged into one of the next level
# A segment whose live chunks fell below this share of its size is rewritten without the dead.
MIN_LIVE_SHARE = 0.5
MAX_LENGTH = 65535  # chunk lengths and term frequencies are stored as uint16 (clipped)

metadata = MetaData()

# One row per collection: its chunk-number and segment counters, the statistics BM25 needs
# (chunks and total length of each field) and the synonym groups its tokens were made with.
namespaces = Table(
    "keyword_namespaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("next_docno", BigInteger, nullable=False, default=1),
    Column("next_segment", BigInteger, nullable=False, default=1),
    Column("documents", BigInteger, nullable=False, default=0),
    Column("total_length", BigInteger, nullable=False, default=0),
    Column("questions", BigInteger, nullable=False, default=0),
    Column("question_length", BigInteger, nullable=False, default=0),
    Column("synonyms", Text, nullable=False, default="{}"),
    # Bumped by every write: a reader that saw the same value has seen the same index.
    Column("changes", BigInteger, nullable=False, default=0),
)

docs = Table(
    "keyword_docs",
    metadata,
    Column("namespace", Integer, primary_key=True),
    Column("docno", BigInteger, primary_key=True, autoincrement=False),
    Column("id", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("terms", Text, nullable=False),  # JSON term -> frequency, for exact deletes
    Column("question_terms", Text, nullable=False),
    Column("length", Integer, nullable=False),
    Column("question_length", Integer, nullable=False),
    Column("segment", BigInteger, nullable=False),
    Index("ix_keyword_docs_id", "namespace", "id", unique=True),
    Index("ix_keyword_docs_segment", "namespace", "segment"),
)

# One row per term per segment. Clustered by segment, so a new segment is appended and a merge
# reads and deletes contiguous rows; the (field, term) index serves searches. ``live`` counts
# the postings whose chunk still exists: a term's document frequency is its rows' sum.
postings = Table(
    "keyword_postings",
    metadata,
    # Segment first: with the namespace first, SQLite's planner (no statistics) prefers a scan
    # of the namespace's primary-key range to the term index for a search.
    Column("segment", BigInteger, primary_key=True, autoincrement=False),
    Column("namespace", Integer, primary_key=True),
    Column("field", SmallInteger, primary_key=True, autoincrement=False),
    Column("term", Text, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("live", Integer, nullable=False),
    Column("docnos", LargeBinary, nullable=False),  # int32 little-endian
    Column("freqs", LargeBinary, nullable=False),  # uint16: term frequencies
    Column("lengths", LargeBinary, nullable=False),  # uint16: the chunks' field lengths
    Index("ix_keyword_postings_term", "namespace", "field", "term"),
    sqlite_with_rowid=False,
)

segments = Table(
    "keyword_segments",
    metadata,
    Column("namespace", Integer, primary_key=True),
    Column("segment", BigInteger, primary_key=True, autoincrement=False),
    Column("level", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("live", BigInteger, nullable=False),
)


def bulk(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` (``?`` placeholders) once per row through the driver's own executemany:
    bulk writes of many small rows spend most of their time in SQLAlchemy's per-row parameter
    handling otherwise. The SQL must be valid on SQLite and PostgreSQL alike."""
    if not rows:
        return
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    for start in range(0, len(rows), 5000):
        conn.exec_driver_sql(sql, list(rows[start : start + 5000]))


_IN_BATCH = 900  # values per IN (...) list, below every driver's parameter limit


def marks(count: int) -> str:
    """``count`` placeholders for an IN list (only placeholders are ever put in the SQL)."""
    return ", ".join("?" * count)


def driver_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one statement (``?`` placeholders) run through the driver directly."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    return list(conn.exec_driver_sql(sql, tuple(params)).all())


def subtract_live(conn: Connection, rows: Sequence[tuple[int, int, int, int, str]]) -> None:
    """Lower ``live`` by n for each (n, namespace, segment, field, term): chunks were deleted."""
    bulk(
        conn,
        "UPDATE keyword_postings SET live = live - ? "
        "WHERE namespace = ? AND segment = ? AND field = ? AND term = ?",
        rows,
    )


_INSERT_POSTINGS = (
    "INSERT INTO keyword_postings (segment, namespace, field, term, count, live, docnos, freqs, "
    "lengths) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# -- posting lists -----------------------------------------------------------------------------


@dataclass
class PostingList:
    """One term's postings (of one segment, or several concatenated)."""

    docs: np.ndarray  # int64 chunk numbers
    tfs: np.ndarray  # float64 term frequencies
    lengths: np.ndarray  # float64 chunk lengths (of the field)

    def __len__(self) -> int:
        return len(self.docs)


def _uint16(values: list[int]) -> bytes:
    try:
        return struct.pack(f"<{len(values)}H", *values)
    except struct.error:  # a frequency or length beyond uint16: clipped
        return struct.pack(f"<{len(values)}H", *(min(v, MAX_LENGTH) for v in values))


def decode(docnos: bytes, freqs: bytes, lengths: bytes) -> PostingList:
    """Posting lists stored one after another, as one list (the blobs joined per column)."""
    import numpy as np

    return PostingList(
        np.frombuffer(docnos, dtype="<i4").astype(np.int64),
        np.frombuffer(freqs, dtype="<u2").astype(np.float64),
        np.frombuffer(lengths, dtype="<u2").astype(np.float64),
    )


def read_postings(
    conn: Connection, namespace: int, field: int, wanted: Iterable[str]
) -> dict[str, tuple[PostingList, int]]:
    """The posting lists of ``wanted`` terms in ``field`` (every segment concatenated), each
    with its document frequency."""
    names = sorted(set(wanted))
    if not names:
        return {}
    found: dict[str, tuple[list[bytes], list[bytes], list[bytes]]] = {}
    frequency: dict[str, int] = {}
    # Plain SQL on the hot path of every search: building the statement costs more in
    # SQLAlchemy than running it.
    rows = []
    for start in range(0, len(names), _IN_BATCH):  # a pasted essay has thousands of terms
        part = names[start : start + _IN_BATCH]
        rows += driver_rows(
            conn,
            "SELECT term, live, docnos, freqs, lengths FROM keyword_postings "  # noqa: S608
            f"WHERE namespace = ? AND field = ? AND term IN ({marks(len(part))})",
            (namespace, field, *part),
        )
    for term, live, docnos, freqs, lengths in rows:
        parts = found.setdefault(term, ([], [], []))
        parts[0].append(docnos)
        parts[1].append(freqs)
        parts[2].append(lengths)
        frequency[term] = frequency.get(term, 0) + int(live)
    return {
        term: (decode(*(b"".join(column) for column in parts)), frequency[term])
        for term, parts in found.items()
    }


def document_frequency(conn: Connection, namespace: int, field: int, term: str) -> int:
    from sqlalchemy import func

    return int(
        conn.execute(
            select(func.coalesce(func.sum(postings.c.live), 0)).where(
                postings.c.namespace == namespace,
                postings.c.field == field,
                postings.c.term == term,
            )
        ).scalar_one()
    )


def write_segment(
    conn: Connection,
    namespace: int,
    segment: int,
    fields: dict[int, dict[str, tuple[list[int], list[int], list[int]]]],
    size: int,
    *,
    level: int = 0,
) -> None:
    """Store a new segment: ``fields[field][term] = (docnos, tfs, lengths)``."""
    rows = [
        (
            segment,
            namespace,
            field,
            term,
            len(docnos),
            len(docnos),
            struct.pack(f"<{len(docnos)}i", *docnos),
            _uint16(tfs),
            _uint16(lengths),
        )
        for field, by_term in sorted(fields.items())
        for term, (docnos, tfs, lengths) in sorted(by_term.items())
    ]
    bulk(conn, _INSERT_POSTINGS, rows)
    conn.execute(
        segments.insert(),
        [{"namespace": namespace, "segment": segment, "level": level, "size": size, "live": size}],
    )


def segments_to_merge(conn: Connection, namespace: int) -> tuple[list[int], int] | None:
    """The segments the next merge rewrites and the level of the result, or None: the first
    level holding ``MERGE_FACTOR`` segments, else a segment that is mostly dead entries."""
    rows = conn.execute(
        select(segments.c.segment, segments.c.level, segments.c.size, segments.c.live)
        .where(segments.c.namespace == namespace)
        .order_by(segments.c.level, segments.c.segment)
    ).all()
    by_level: dict[int, list[int]] = {}
    for segment, level, _size, _live in rows:
        by_level.setdefault(level, []).append(segment)
    for level in sorted(by_level):
        if len(by_level[level]) >= MERGE_FACTOR:
            return by_level[level][:MERGE_FACTOR], level + 1
    for segment, level, size, live in rows:
        if size and live < MIN_LIVE_SHARE * size:
            return [segment], level
    return None


def merge_segments(conn: Connection, namespace: int, merged: list[int], level: int) -> int:
    """Rewrite ``merged`` as one new segment at ``level``, without dead entries; returns the
    new segment's number. Reads one term's rows at a time."""
    import numpy as np

    (segment,) = conn.execute(
        update(namespaces)
        .where(namespaces.c.id == namespace)
        .values(next_segment=namespaces.c.next_segment + 1)
        .returning(namespaces.c.next_segment - 1)
    ).one()
    live = np.fromiter(
        conn.execute(
            select(docs.c.docno).where(docs.c.namespace == namespace, docs.c.segment.in_(merged))
        ).scalars(),
        dtype=np.int64,
    )
    alive = np.zeros(0, dtype=bool)
    base = 0
    if len(live):
        base = int(live.min())
        alive = np.zeros(int(live.max()) - base + 1, dtype=bool)
        alive[live - base] = True
    in_merged = (postings.c.namespace == namespace, postings.c.segment.in_(merged))
    keys = conn.execute(
        select(postings.c.field, postings.c.term)
        .where(*in_merged)
        .distinct()
        .order_by(postings.c.field, postings.c.term)
    ).all()
    # A few thousand terms per read bound the memory a merge of large segments takes.
    for start in range(0, len(keys), 2000):
        group = keys[start : start + 2000]
        for field in sorted({f for f, _ in group}):
            wanted = [t for f, t in group if f == field]
            rows = conn.execute(
                select(
                    postings.c.term,
                    postings.c.count,
                    postings.c.docnos,
                    postings.c.freqs,
                    postings.c.lengths,
                )
                .where(*in_merged, postings.c.field == field, postings.c.term.in_(wanted))
                .order_by(postings.c.term, postings.c.segment)
            ).all()
            bulk(conn, _INSERT_POSTINGS, _merged_rows(namespace, field, segment, rows, alive, base))
    conn.execute(delete(postings).where(*in_merged))
    conn.execute(
        delete(segments).where(segments.c.namespace == namespace, segments.c.segment.in_(merged))
    )
    conn.execute(
        segments.insert(),
        [
            {
                "namespace": namespace,
                "segment": segment,
                "level": level,
                "size": len(live),
                "live": len(live),
            }
        ],
    )
    conn.execute(
        update(docs)
        .where(docs.c.namespace == namespace, docs.c.segment.in_(merged))
        .values(segment=segment)
    )
    return int(segment)


def _merged_rows(
    namespace: int, field: int, segment: int, rows: Sequence[Any], alive: Any, base: int
) -> list[tuple[Any, ...]]:
    """The rows of one field's terms in the merged segment: each term's postings from every
    old segment, in segment order, without chunks that are gone (``alive``). ``rows`` are
    (term, count, docnos, freqs, lengths), ordered by term."""
    import numpy as np

    if not rows:
        return []
    joined = decode(*(b"".join(row[i] for row in rows) for i in (2, 3, 4)))
    # Each posting's term, as a number in the order of ``rows`` (which is by term).
    terms = [row[0] for row in rows]
    starts_term = np.asarray([True] + [a != b for a, b in zip(terms, terms[1:], strict=False)])
    term_of_row = np.cumsum(starts_term) - 1
    term_names = [t for t, first in zip(terms, starts_term.tolist(), strict=True) if first]
    term_number = np.repeat(term_of_row, [row[1] for row in rows])
    offset = joined.docs - base
    keep = (offset >= 0) & (offset < len(alive))
    keep[keep] = alive[offset[keep]]
    term_number = term_number[keep]
    doc_bytes = joined.docs[keep].astype("<i4").tobytes()
    tf_bytes = joined.tfs[keep].astype("<u2").tobytes()
    length_bytes = joined.lengths[keep].astype("<u2").tobytes()
    # Runs of one term number are that term's merged list (terms without a live posting
    # have no run and no row).
    edges = np.flatnonzero(np.diff(term_number, prepend=-1)).tolist() + [len(term_number)]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        term = term_names[int(term_number[a])]
        out.append(
            (
                segment,
                namespace,
                field,
                term,
                b - a,
                b - a,
                doc_bytes[4 * a : 4 * b],
                tf_bytes[2 * a : 2 * b],
                length_bytes[2 * a : 2 * b],
            )
        )
    return out
