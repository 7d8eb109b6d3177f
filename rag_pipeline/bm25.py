"""Keyword (BM25) index beside the vector store, for exact terms dense retrieval misses.

Tokens are Chinese character unigrams and bigrams (Simplified and Traditional alike, no
dictionary to load), lower-cased English words, and whole codes such as ``rp-2024-07`` or
``hx-kb-3021``. The index lives in SQLite in the data folder, one namespace per collection, and
is updated by ingest with the same chunk ids as the vector store (``KeywordMirror`` wraps the
store that LangChain's ``index()`` writes to), so it is never rebuilt per question.

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
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from rag_pipeline.errors import CorruptDataError
from rag_pipeline.stores.filters import check_where, matches
from rag_pipeline.synonyms import Synonyms

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
TOKENIZER_VERSION = 3
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


class _Field:
    """BM25 postings of one text field over the searcher's chunks (numpy arrays with each
    posting's term weight precomputed, so a query costs one vectorised add per query term)."""

    def __init__(self, counts_of: Sequence[dict[str, int]], *, sparse: bool = False) -> None:
        import numpy as np

        term_numbers: dict[str, int] = {}
        terms_of, docs_of, tfs_of, lengths = [], [], [], []
        for number, counts in enumerate(counts_of):
            lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                terms_of.append(term_numbers.setdefault(term, len(term_numbers)))
                docs_of.append(number)
                tfs_of.append(tf)
        self.size = len(counts_of)
        # A sparse field (most chunks have no question): chunks without it are not its
        # documents, so they neither count towards the IDF nor pull the average length down.
        self.documents = (sum(1 for n in lengths if n) or 1) if sparse else self.size
        term_arr = np.asarray(terms_of, dtype=np.int32)
        order = np.argsort(term_arr, kind="stable")
        self.docs = np.asarray(docs_of, dtype=np.int32)[order]
        tf_arr = np.asarray(tfs_of, dtype=np.float32)[order]
        length = np.asarray(lengths, dtype=np.float32)
        average = float(length.sum()) / self.documents if self.size else 1.0
        norm = K1 * (1 - B + B * length / (average or 1.0))
        self.weights: Any = tf_arr * (K1 + 1) / (tf_arr + norm[self.docs]) if self.size else tf_arr
        bounds = np.concatenate(
            ([0], np.cumsum(np.bincount(term_arr, minlength=len(term_numbers))))
        )
        self.postings: dict[str, tuple[int, int]] = {
            term: (int(bounds[n]), int(bounds[n + 1])) for term, n in term_numbers.items()
        }

    def idf(self, term: str) -> float:
        start, end = self.postings.get(term, (0, 0))
        df = end - start
        return math.log(1.0 + (self.documents - df + 0.5) / (df + 0.5))

    def scores(self, terms: Iterable[str]) -> tuple[Any, Any, float]:
        """BM25 per chunk, the IDF weight of the terms each chunk holds, and the total."""
        import numpy as np

        scores = np.zeros(self.size, dtype=np.float32)
        matched = np.zeros(self.size, dtype=np.float32)
        total_weight = 0.0
        for term in terms:
            idf = self.idf(term)
            total_weight += idf
            start, end = self.postings.get(term, (0, 0))
            if end > start:
                doc_idx = self.docs[start:end]  # a term occurs once per doc: no repeats
                scores[doc_idx] += idf * self.weights[start:end]
                matched[doc_idx] += idf
        return scores, matched, total_weight


class KeywordSearcher:
    """An in-memory BM25 over the chunks of one collection (built from ``KeywordIndex.load``).

    Two fields: the chunk's text, and its question phrasings (``question_text``). A chunk's
    score is its text BM25 plus ``question_weight`` times its question-field BM25, so a
    question that matches an FAQ entry's own question outranks one that only shares words with
    some answer. ``synonyms`` normalises the question and the chunks (stored token counts are
    of the raw text; chunks holding a variant are re-tokenised here, so changing the synonym
    list never needs a rebuilt index). Coverage stays a property of the chunk text.
    """

    def __init__(
        self,
        rows: Iterable[tuple[str, str, str, str]],
        *,
        synonyms: Synonyms | None = None,
        question_weight: float = 0.0,
    ) -> None:
        self.synonyms = synonyms if synonyms else None
        self.question_weight = question_weight
        self.ids: list[str] = []
        self.contents: list[str] = []
        self.metadatas: list[dict[str, Any]] = []
        body: list[dict[str, int]] = []
        questions: list[dict[str, int]] = []
        for id_, content, metadata, terms in rows:
            meta = json.loads(metadata)
            self.ids.append(id_)
            self.contents.append(content)
            self.metadatas.append(meta)
            if self.synonyms is not None and self.synonyms.matches(content):
                body.append(Counter(tokenize(self.synonyms.normalise(content))))
            else:
                body.append(json.loads(terms))
            asked = question_text(meta)
            questions.append(Counter(tokenize(self._normalise(asked))) if asked else {})
        self.size = len(self.ids)
        # What a dense retriever paired with this searcher may return (see build_retriever).
        self.id_set = frozenset(self.ids)
        self._body = _Field(body)
        self._questions = _Field(questions, sparse=True)
        self.postings = self._body.postings

    def _normalise(self, text: str) -> str:
        return self.synonyms.normalise(text) if self.synonyms is not None else text

    def idf(self, term: str) -> float:
        return self._body.idf(term)

    def search(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[KeywordHit]:
        import numpy as np

        where = check_where(where)  # once per query, not per hit
        terms = set(tokenize(self._normalise(query)))
        if not terms or not self.size:
            return []
        scores, matched, total_weight = self._body.scores(terms)
        question_scores = np.zeros(self.size, dtype=np.float32)
        if self.question_weight:
            question_scores, _, _ = self._questions.scores(terms)
            scores = scores + self.question_weight * question_scores
        candidates = np.flatnonzero(scores)
        # Filters can drop hits, so rank every candidate then stop at k.
        ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
        hits = []
        for doc in ranked.tolist():
            meta = self.metadatas[doc]
            if where and not matches(meta, where):
                continue
            document = Document(
                id=self.ids[doc], page_content=self.contents[doc], metadata=dict(meta)
            )
            hits.append(
                KeywordHit(
                    document,
                    float(scores[doc]),
                    float(matched[doc]) / total_weight,
                    float(question_scores[doc]),
                )
            )
            if len(hits) == k:
                break
        return hits


class KeywordIndex:
    """The persisted keyword index of one collection (SQLite, in the data folder)."""

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self.namespace = f"{namespace}#tokens-v{TOKENIZER_VERSION}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(sqlite3.connect(path)) as db, db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS keyword_chunks ("
                    "namespace TEXT NOT NULL, id TEXT NOT NULL, content TEXT NOT NULL, "
                    "metadata TEXT NOT NULL, terms TEXT NOT NULL, PRIMARY KEY (namespace, id))"
                )
                db.execute("SELECT COUNT(*) FROM keyword_chunks LIMIT 1").fetchone()
        except sqlite3.DatabaseError as e:
            raise CorruptDataError(
                f"the keyword index {path} is not a readable SQLite database ({e}): delete it; "
                "it is rebuilt from the vector store by the next `rag ingest` or `rag ask`"
            ) from e

    def add(self, documents: Sequence[Document], ids: Sequence[str]) -> None:
        rows = [
            (
                self.namespace,
                id_,
                doc.page_content,
                json.dumps(doc.metadata, ensure_ascii=False),
                json.dumps(Counter(tokenize(doc.page_content)), ensure_ascii=False),
            )
            for doc, id_ in zip(documents, ids, strict=True)
        ]
        with closing(sqlite3.connect(self.path)) as db, db:
            db.executemany("INSERT OR REPLACE INTO keyword_chunks VALUES (?, ?, ?, ?, ?)", rows)

    def delete(self, ids: Sequence[str]) -> None:
        with closing(sqlite3.connect(self.path)) as db, db:
            db.executemany(
                "DELETE FROM keyword_chunks WHERE namespace = ? AND id = ?",
                [(self.namespace, i) for i in ids],
            )

    def clear(self) -> int:
        """Remove every chunk of this collection; returns how many went."""
        with closing(sqlite3.connect(self.path)) as db, db:
            cursor = db.execute("DELETE FROM keyword_chunks WHERE namespace = ?", (self.namespace,))
        return cursor.rowcount

    def count(self) -> int:
        with closing(sqlite3.connect(self.path)) as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM keyword_chunks WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        return int(n)

    def move_to(self, namespace: str) -> int:
        """Hand every chunk over to the collection ``namespace`` (after a rename)."""
        target = KeywordIndex(self.path, namespace)
        target.clear()
        with closing(sqlite3.connect(self.path)) as db, db:
            cursor = db.execute(
                "UPDATE keyword_chunks SET namespace = ? WHERE namespace = ?",
                (target.namespace, self.namespace),
            )
        self.namespace = target.namespace
        return cursor.rowcount

    def ids(self) -> set[str]:
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute(
                "SELECT id FROM keyword_chunks WHERE namespace = ?", (self.namespace,)
            ).fetchall()
        return {r[0] for r in rows}

    def load(
        self, *, synonyms: Synonyms | None = None, question_weight: float = 0.0
    ) -> KeywordSearcher:
        """The searcher over this collection's chunks (see ``KeywordSearcher``)."""
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute(
                "SELECT id, content, metadata, terms FROM keyword_chunks WHERE namespace = ? "
                "ORDER BY id",
                (self.namespace,),
            ).fetchall()
        return KeywordSearcher(rows, synonyms=synonyms, question_weight=question_weight)


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
        self, inner: VectorStore, keyword: KeywordIndex, *, max_batch: int = ADD_BATCH
    ) -> None:
        self.inner = inner
        self.keyword = keyword
        self.max_batch = max(1, max_batch)

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
            self.keyword.add(batch, added)
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
        if ids:
            self.keyword.delete(ids)
        return result

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return self.inner.get_by_ids(ids)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return self.inner.similarity_search(query, k=k, **kwargs)

    @classmethod
    def from_texts(cls, *args: Any, **kwargs: Any) -> KeywordMirror:
        raise NotImplementedError("wrap an existing store: KeywordMirror(store, keyword_index)")
