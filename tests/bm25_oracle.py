"""The in-memory BM25 of earlier versions, kept as the oracle the on-disk keyword index is checked
against: it reads every chunk into numpy arrays and scores the whole collection per query, the
plainest form of the formula (``rag_pipeline.bm25`` reads only the query's posting lists)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.documents import Document

from rag_pipeline.bm25 import K1, B, KeywordHit, question_text, tokenize
from rag_pipeline.stores.filters import check_where, matches
from rag_pipeline.synonyms import Synonyms


def oracle(
    documents: Sequence[Document],
    ids: Sequence[str],
    *,
    synonyms: Synonyms | None = None,
    question_weight: float = 0.0,
) -> OracleSearcher:
    """The oracle over ``documents`` (rows ordered by id, as the old index loaded them)."""
    rows = sorted(
        (
            id_,
            doc.page_content,
            json.dumps(doc.metadata, ensure_ascii=False),
            json.dumps(Counter(tokenize(doc.page_content))),
        )
        for doc, id_ in zip(documents, ids, strict=True)
    )
    return OracleSearcher(rows, synonyms=synonyms, question_weight=question_weight)


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


class OracleSearcher:
    """An in-memory BM25 over the chunks of one collection.

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
