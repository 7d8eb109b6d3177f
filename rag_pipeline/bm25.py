"""Keyword (BM25) index beside the vector store, for exact terms dense retrieval misses.

Tokens are Chinese character unigrams and bigrams (Simplified and Traditional alike, no
dictionary to load), lower-cased English words, and whole codes such as ``rp-2024-07`` or
``hx-kb-3021``. The index lives in SQLite in the data folder, one namespace per collection, and
is updated by ingest with the same chunk ids as the vector store (``keyword_index.KeywordMirror``
wraps the store that LangChain's ``index()`` writes to), so it is never rebuilt per question.
A search reads the posting lists of the question's terms from the database (``keyword_store``)
and nothing else, so its cost does not grow with the collection's size.

Besides BM25, a search reports each chunk's *coverage*: the share of the question's IDF weight
that the chunk contains (0..1). A question whose distinctive words appear nowhere in the
knowledge base has low coverage everywhere, which is what the refusal gate looks at.

>>> searcher = KeywordIndex(path, "chroma/rag").load()            # doctest: +SKIP
>>> searcher.search("RP-2024-07 什么时候生效", k=5)                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from rag_pipeline.stores.filters import check_where, matches
from rag_pipeline.synonyms import Synonyms

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
# Function words carry no topic. In Chinese they also act as separators, so "是什么" in a
# question produces no unigrams or bigrams (什, 么, 是什) that would match every FAQ entry.
_CJK_STOP = sorted(
    "的 了 吗 呢 吧 啊 呀 是 我 你 他 她 它 们 在 有 和 与 或 就 都 也 还 要 会 能 可 以 "
    "怎么 怎样 什么 为什么 如何 可以 能否 是否 这个 那个 一下 一个 请问 多少 哪里 哪些 "
    "这 那 吗 么 "
    # The same in Traditional characters (Taiwan and Hong Kong help centres).
    "們 與 還 會 嗎 麼 這 那 怎麼 怎樣 什麼 為什麼 如何 能否 這個 那個 一個 請問 哪裡 哪些 "
    "您".split(),
    key=len,
    reverse=True,
)
_CJK_STOP_SPLIT = re.compile("|".join(map(re.escape, _CJK_STOP)))
_STOP = frozenset(
    "a an the is are was be to of in on for and or do does did how what why when where "
    "which who can could i my me you your it this that with at by from".split()
)
# Bump when tokenize() changes: indexes of an older version are rebuilt from the store.
TOKENIZER_VERSION = 4  # 4: the on-disk posting lists (keyword_store)
K1, B = 1.2, 0.75


def tokenize(text: str) -> list[str]:
    """Keyword tokens of ``text`` (with repeats, for term frequencies)."""
    text = text.lower()
    tokens: list[str] = []
    for run in _CJK_RUN.findall(text):
        for piece in _CJK_STOP_SPLIT.split(run):
            tokens.extend(piece)
            tokens.extend(piece[i : i + 2] for i in range(len(piece) - 1))
    for word in _WORD.findall(text):
        if word in _STOP:
            continue
        tokens.append(word)
        parts = re.split(r"[-_.]", word)
        if len(parts) > 1:
            tokens.extend(parts)
    return tokens


def question_text(metadata: dict[str, Any]) -> str:
    """The question phrasings a chunk answers, for the question field: an FAQ entry's question
    and alternatives, or a heading that is itself a question (ends with ? or ？), as in an FAQ
    page or a title + answer record; "" for other chunks."""
    if metadata.get("doc_type") == "faq":
        alternatives = str(metadata.get("faq_alternatives") or "").split("|")
        return "\n".join(filter(None, [str(metadata.get("faq_question") or ""), *alternatives]))
    headers = str(metadata.get("headers") or "")
    heading = headers.split(" > ")[-1].strip() or str(metadata.get("title") or "").strip()
    return heading if heading.endswith(("?", "？")) else ""


@dataclass
class KeywordHit:
    document: Document
    bm25: float  # body BM25 + question_weight * question-field BM25: what hits are ranked by
    coverage: float
    question_bm25: float = 0.0


def idf(documents: int, df: int) -> float:
    return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))


_HIT_BATCH = 64  # candidate chunks read per query while collecting hits
_SORTED_FIRST = 500  # candidates sorted before the first read of chunk rows


class KeywordSearcher:
    """BM25 over one collection's keyword index, answered from the database.

    Two fields: the chunk's text, and its question phrasings (``question_text``). A chunk's
    score is its text BM25 plus ``question_weight`` times its question-field BM25, so a
    question that matches an FAQ entry's own question outranks one that only shares words with
    some answer. The question field is sparse: only chunks that have one count towards its
    IDF and average length. ``synonyms`` normalises the question the way the index normalised
    the chunks (``KeywordIndex.load`` makes sure they agree).

    A search reads the collection statistics, the document frequencies and the posting lists
    of the question's own terms, then the rows of the best chunks only: memory and time follow
    the posting lists' lengths, never the collection's size. The searcher is pinned to the
    chunks stored when it was made (``pin``: the highest chunk number then): chunks written
    later are not returned, so a snapshot never sees half of an upload; deleted ones vanish.
    """

    def __init__(
        self,
        engine: Engine,
        namespace: int,
        *,
        pin: int,
        synonyms: Synonyms | None = None,
        question_weight: float = 0.0,
    ) -> None:
        self.engine = engine
        self.namespace = namespace
        self.pin = pin
        self.synonyms = synonyms if synonyms else None
        self.question_weight = question_weight

    def _normalise(self, text: str) -> str:
        return self.synonyms.normalise(text) if self.synonyms is not None else text

    @property
    def size(self) -> int:
        """Chunks in the collection now."""
        from rag_pipeline import state_db

        with state_db.reading(self.engine) as conn:
            return int(self._statistics(conn).documents)

    def _statistics(self, conn: Any) -> Any:
        from sqlalchemy import select

        from rag_pipeline import keyword_store as ks

        table = ks.namespaces
        return conn.execute(select(*table.c).where(table.c.id == self.namespace)).one()

    def idf(self, term: str) -> float:
        """The text field's IDF of ``term`` (as a search computes it)."""
        from rag_pipeline import keyword_store as ks
        from rag_pipeline import state_db

        with state_db.reading(self.engine) as conn:
            documents = int(self._statistics(conn).documents)
            df = ks.document_frequency(conn, self.namespace, ks.BODY, term)
        return idf(documents, df)

    def visible(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` this searcher may return (stored, and not written after it)."""

        from rag_pipeline import keyword_store as ks
        from rag_pipeline import state_db

        if not ids:
            return set()
        wanted = list(dict.fromkeys(ids))
        rows: list[Any] = []
        with state_db.reading(self.engine) as conn:
            for start in range(0, len(wanted), 900):
                part = wanted[start : start + 900]
                rows += ks.driver_rows(
                    conn,
                    "SELECT id, docno FROM keyword_docs WHERE namespace = ? AND "  # noqa: S608
                    f"id IN ({ks.marks(len(part))})",
                    (self.namespace, *part),
                )
        # The pin is checked here: in the statement, SQLite's planner takes the chunk-number
        # range over the id index and scans the collection.
        return {id_ for id_, docno in rows if docno <= self.pin}

    def search(
        self,
        query: str,
        k: int,
        where: dict[str, Any] | None = None,
        accept: Callable[[Document], bool] | None = None,
    ) -> list[KeywordHit]:
        """The best ``k`` chunks for ``query`` that pass the metadata filter ``where`` and
        ``accept`` (a check of the chunk itself, e.g. a content filter)."""
        import numpy as np

        from rag_pipeline import keyword_store as ks
        from rag_pipeline import state_db

        where = check_where(where)  # once per query, not per hit
        terms = sorted(set(tokenize(self._normalise(query))))
        if not terms or k <= 0:
            return []
        with state_db.reading(self.engine) as conn:
            stats = self._statistics(conn)
            documents = int(stats.documents)
            if not documents:
                return []
            body = ks.read_postings(conn, self.namespace, ks.BODY, terms)
            asked = (
                ks.read_postings(conn, self.namespace, ks.QUESTION, terms)
                if self.question_weight
                else {}
            )
            average = float(stats.total_length) / documents
            question_docs = int(stats.questions) or 1
            question_average = float(stats.question_length) / question_docs
            weights = {term: idf(documents, body[term][1] if term in body else 0) for term in terms}
            total_weight = sum(weights.values())
            if not body and not asked:
                return []
            body_docs, body_score, body_idf = _field_arrays(
                [(postings, weights[term]) for term, (postings, _) in body.items()], average
            )
            question_docs_, question_score, _ = _field_arrays(
                [(postings, idf(question_docs, df)) for postings, df in asked.values()],
                question_average,
            )
            # Scores per chunk number, as dense arrays over the numbers the postings span: one
            # vectorised sum per array, no sort of the postings.
            ends = [a for a in (body_docs, question_docs_) if len(a)]
            first = int(min(a.min() for a in ends))
            span = int(max(a.max() for a in ends)) - first + 1
            matched = np.bincount(body_docs - first, weights=body_idf, minlength=span)
            scores: Any = np.bincount(body_docs - first, weights=body_score, minlength=span)
            question_scores = np.bincount(
                question_docs_ - first, weights=question_score, minlength=span
            )
            if self.question_weight:
                scores += self.question_weight * question_scores
            # Written after this searcher was made: not part of its snapshot.
            if first + span - 1 > self.pin:
                scores[max(0, self.pin - first + 1) :] = 0.0
            hits: list[KeywordHit] = []
            for batch in _batches(_ranked(scores, max(4 * k, _SORTED_FIRST)), _HIT_BATCH):
                rows = self._rows(conn, (batch + first).tolist())
                for slot_number in batch.tolist():
                    row = rows.get(slot_number + first)
                    if row is None:  # deleted: a dead posting
                        continue
                    id_, content, metadata = row
                    meta = json.loads(metadata)
                    if where and not matches(meta, where):
                        continue
                    document = Document(id=id_, page_content=content, metadata=meta)
                    if accept is not None and not accept(document):
                        continue
                    hits.append(
                        KeywordHit(
                            document,
                            float(scores[slot_number]),
                            float(matched[slot_number]) / total_weight,
                            float(question_scores[slot_number]),
                        )
                    )
                    if len(hits) == k:
                        return hits
        return hits

    def _rows(self, conn: Any, numbers: list[int]) -> dict[int, tuple[str, str, str]]:

        from rag_pipeline import keyword_store as ks

        rows = ks.driver_rows(
            conn,
            "SELECT docno, id, content, metadata FROM keyword_docs WHERE namespace = ? AND "  # noqa: S608
            f"docno IN ({ks.marks(len(numbers))})",
            (self.namespace, *numbers),
        )
        return {int(docno): (id_, content, meta) for docno, id_, content, meta in rows}


def _field_arrays(lists: Sequence[tuple[Any, float]], average: float) -> tuple[Any, Any, Any]:
    """One field's postings of every query term joined: chunk numbers, BM25 contributions
    (idf x saturation) and each posting's idf (for coverage)."""
    import numpy as np

    if not lists:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    docs = np.concatenate([postings.docs for postings, _ in lists])
    score = np.concatenate(
        [term_idf * _saturation(postings, average) for postings, term_idf in lists]
    )
    idfs = np.repeat([term_idf for _, term_idf in lists], [len(p) for p, _ in lists])
    return docs, score, idfs


def _ranked(scores: Any, first: int) -> Iterator[Any]:
    """Positions of the positive ``scores``, best first, ties by position (chunk number), in
    slices: only the best ``first`` are sorted unless the caller reads on (filters may skip
    many)."""
    import numpy as np

    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > first:
        best = np.argpartition(-scores[candidates], first)[:first]
        threshold = scores[candidates[best]].min()
        above = scores[candidates] >= threshold
        yield _sorted(scores, candidates[above])
        yield _sorted(scores, candidates[~above])
    else:
        yield _sorted(scores, candidates)


def _batches(slices: Iterable[Any], size: int) -> Iterator[Any]:
    for part in slices:
        for start in range(0, len(part), size):
            yield part[start : start + size]


def _sorted(scores: Any, positions: Any) -> Any:
    import numpy as np

    return positions[np.lexsort((positions, -scores[positions]))]


def _saturation(postings: Any, average: float) -> Any:
    """BM25's term-frequency part of each posting: tf (k1 + 1) / (tf + k1 (1 - b + b len/avg))."""
    norm = K1 * (1 - B + B * postings.lengths / (average or 1.0))
    return postings.tfs * (K1 + 1) / (postings.tfs + norm)
