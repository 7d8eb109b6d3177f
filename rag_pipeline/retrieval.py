"""Store -> retriever: similarity or MMR top-k, metadata filters, a 0..1 relevance threshold.

Relevance is the cosine similarity of the question and the chunk, clipped to 0..1, on every
backend and index metric; chunks below ``score_threshold`` are dropped, so a question the
knowledge base cannot answer retrieves nothing and the chain refuses without calling a model.
Each returned Document carries its relevance in ``metadata["score"]``.

>>> retriever = build_retriever(settings, store, model.embeddings)      # doctest: +SKIP
>>> docs = retriever.invoke("七天无理由退货怎么申请")                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, SkipValidation

from rag_pipeline.bm25 import KeywordSearcher
from rag_pipeline.stores.base import Hit, VectorBackend
from rag_pipeline.stores.filters import check_where, check_where_document, text_matches
from rag_pipeline.stores.mmr import maximal_marginal_relevance
from rag_pipeline.synonyms import Synonyms, build_synonyms

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.keyword_index import KeywordIndex


class Visibility(Protocol):
    """What a snapshot may return: ``bm25.KeywordSearcher`` is one."""

    def visible(self, ids: Sequence[str]) -> set[str]: ...


class DenseRetriever(BaseRetriever):
    """Dense retrieval over one of our vector backends.

    >>> retriever = DenseRetriever(store=store, embeddings=emb, k=4)  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: VectorBackend
    embeddings: Embeddings
    k: int = 4
    search_type: Literal["similarity", "mmr"] = "similarity"  # hybrid: see HybridRetriever
    fetch_k: int = 20
    lambda_mult: float = 0.5
    score_threshold: float | None = None
    filter: dict[str, Any] = {}
    where_document: dict[str, Any] = {}  # content filter, e.g. {"$contains": "运费"}
    # Which chunks this retriever may return (None: every stored chunk): a set of ids, or a
    # keyword searcher's ``visible`` (the chunks of its snapshot). The store is live: while an
    # ingest runs it already holds part of the upload, which a retriever built before it (a
    # snapshot) must not return. Not validated: a set can hold every id.
    visible_ids: SkipValidation[frozenset[str] | Visibility | None] = None

    def search(self, query: str) -> list[Hit]:
        """Hits for ``query`` after threshold and MMR, best first."""
        return self.scored_search(query)[1]

    def scored_search(self, query: str) -> tuple[float, list[Hit]]:
        """The best relevance found before the threshold (what ``score_threshold`` is compared
        with; 0.0 when the store has nothing), and the hits ``search`` returns."""
        vector = self.embeddings.embed_query(query)
        if self.search_type == "mmr":
            found = self._visible(vector, max(self.fetch_k, self.k), with_vectors=True)
        else:
            found = self._visible(vector, self.k, with_vectors=False)
        best = max((h.relevance for h in found), default=0.0)
        hits = self._passing(found)
        if self.search_type == "mmr" and hits:
            order = maximal_marginal_relevance(
                vector, [h.vector or [] for h in hits], lambda_mult=self.lambda_mult, k=self.k
            )
            hits = [hits[i] for i in order]
        return best, hits

    def scored(self, query: str) -> tuple[float, list[Document]]:
        """The relevance the threshold is compared with, and the chunks ``invoke`` returns
        (``rag eval`` draws the threshold picture from the first)."""
        best, hits = self.scored_search(query)
        return best, [self._document(hit) for hit in hits]

    @staticmethod
    def _document(hit: Hit) -> Document:
        hit.document.metadata["score"] = round(hit.relevance, 4)
        return hit.document

    def _visible(self, vector: list[float], k: int, *, with_vectors: bool) -> list[Hit]:
        """The store's best ``k`` hits among ``visible_ids``. Hidden hits exist only while a
        write is under way, so the search is repeated with more candidates only then."""
        fetch = k
        while True:
            hits = self.store.search(
                vector,
                fetch,
                self.filter or None,
                with_vectors=with_vectors,
                where_document=self.where_document or None,
            )
            if self.visible_ids is None:
                return hits
            if isinstance(self.visible_ids, frozenset | set):
                kept = [h for h in hits if h.document.id in self.visible_ids]
            else:
                shown = self.visible_ids.visible([h.document.id or "" for h in hits])
                kept = [h for h in hits if h.document.id in shown]
            if len(kept) >= k or len(hits) < fetch:
                return kept[:k]
            fetch *= 2

    def _passing(self, hits: list[Hit]) -> list[Hit]:
        if self.score_threshold is None:
            return hits
        return [h for h in hits if h.relevance >= self.score_threshold]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [self._document(hit) for hit in self.search(query)]


class KeywordRetriever(BaseRetriever):
    """BM25 over the persisted keyword index; ``metadata["keyword_coverage"]`` in 0..1.

    >>> retriever = KeywordRetriever(searcher=KeywordIndex(path, ns).load(), k=5)  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: KeywordSearcher
    k: int = 4
    filter: dict[str, Any] = {}
    where_document: dict[str, Any] = {}  # content filter, checked on each hit's text

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        where_document = self.where_document

        def accept(document: Document) -> bool:
            return text_matches(document.page_content, where_document)

        hits = self.searcher.search(
            query, self.k, self.filter or None, accept if where_document else None
        )
        docs = []
        for hit in hits:
            hit.document.metadata["keyword_coverage"] = round(hit.coverage, 4)
            hit.document.metadata["bm25"] = round(hit.bm25, 4)
            docs.append(hit.document)
        return docs


class HybridRetriever(BaseRetriever):
    """Dense + keyword retrieval fused into one ranking, behind a refusal gate.

    ``fusion="score"`` (default): dense_weight * min-max normalised cosine + keyword_weight *
    BM25 / best BM25 + coverage_weight * keyword coverage; ``"rrf"``: weighted reciprocal rank
    fusion (LangChain's ``EnsembleRetriever``). On the pooled DEV QA sets score fusion beat
    both retrievers alone, equal-weight RRF did not (docs/tuning.md).

    Hybrid relevance = (dense relevance + g * keyword coverage) / (1 + g), in 0..1, with
    g = ``gate_keyword_weight``. e5 similarities of unrelated texts are high (0.8+), so dense
    relevance alone cannot tell "about something else" from "about us"; the share of the
    question's distinctive words found in the knowledge base can. When the best hybrid
    relevance is below ``score_threshold`` nothing is returned and the chain refuses.
    Each returned chunk has ``score`` (its hybrid relevance) and ``keyword_coverage``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    dense: DenseRetriever
    keyword: KeywordRetriever
    k: int = 4
    fusion: Literal["score", "rrf"] = "score"
    dense_weight: float = 0.25
    keyword_weight: float = 0.75
    coverage_weight: float = 0.2
    score_threshold: float | None = None
    gate_keyword_weight: float = 0.2

    def relevance(self, dense: float, coverage: float) -> float:
        g = self.gate_keyword_weight
        return (dense + g * coverage) / (1 + g)

    def fuse(self, dense_docs: list[Document], keyword_docs: list[Document]) -> list[Document]:
        """Each chunk once, best first, by ``fusion``; sets ``score`` (hybrid relevance)."""
        coverage = {d.id: d.metadata["keyword_coverage"] for d in keyword_docs}
        dense_relevance = {d.id: d.metadata["dense_relevance"] for d in dense_docs}
        if self.fusion == "rrf":
            fused = self._reciprocal_rank(dense_docs, keyword_docs)
        else:
            fused = self._score_fusion(dense_docs, keyword_docs)
        for doc in fused:
            cov = coverage.get(doc.id, 0.0)
            doc.metadata["keyword_coverage"] = cov
            doc.metadata["dense_relevance"] = dense_relevance.get(doc.id, 0.0)
            doc.metadata["score"] = round(self.relevance(dense_relevance.get(doc.id, 0.0), cov), 4)
        return fused

    def _reciprocal_rank(
        self, dense_docs: list[Document], keyword_docs: list[Document]
    ) -> list[Document]:
        from langchain_classic.retrievers import EnsembleRetriever

        for doc in (*dense_docs, *keyword_docs):
            doc.metadata["chunk_id"] = doc.id
        ensemble = EnsembleRetriever(
            retrievers=[self.dense, self.keyword],
            weights=[self.dense_weight, self.keyword_weight],
            id_key="chunk_id",
        )
        fused = ensemble.weighted_reciprocal_rank([dense_docs, keyword_docs])
        for doc in fused:
            doc.metadata.pop("chunk_id", None)
        return fused

    def _score_fusion(
        self, dense_docs: list[Document], keyword_docs: list[Document]
    ) -> list[Document]:
        """dense_weight * min-max(cosine) + keyword_weight * bm25 / max(bm25)
        + coverage_weight * keyword coverage, over the union of both candidate lists."""
        scores: dict[str, float] = {}
        by_id: dict[str, Document] = {}
        if dense_docs:
            values = [d.metadata["dense_relevance"] for d in dense_docs]
            low, high = min(values), max(values)
            for doc in dense_docs:
                norm = (doc.metadata["dense_relevance"] - low) / (high - low) if high > low else 1.0
                scores[doc.id or ""] = self.dense_weight * norm
                by_id[doc.id or ""] = doc
        if keyword_docs:
            best = max(d.metadata["bm25"] for d in keyword_docs) or 1.0
            for doc in keyword_docs:
                key = doc.id or ""
                scores[key] = scores.get(key, 0.0) + (
                    self.keyword_weight * doc.metadata["bm25"] / best
                    + self.coverage_weight * doc.metadata["keyword_coverage"]
                )
                by_id.setdefault(key, doc)
        return [by_id[key] for key in sorted(scores, key=lambda key: -scores[key])]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self.scored(query)[1]

    def scored(self, query: str) -> tuple[float, list[Document]]:
        """The gate relevance (the best dense relevance and the best keyword coverage, which
        may come from different chunks, combined by ``relevance``) and the chunks ``invoke``
        returns: none when the gate relevance is below ``score_threshold``."""
        dense_hits = self.dense.search(query)
        keyword_docs = self.keyword.invoke(query)
        best_dense = max((h.relevance for h in dense_hits), default=0.0)
        best_coverage = max((d.metadata["keyword_coverage"] for d in keyword_docs), default=0.0)
        gate = self.relevance(best_dense, best_coverage)
        if self.score_threshold is not None and gate < self.score_threshold:
            return gate, []
        dense_docs = []
        for hit in dense_hits:
            hit.document.metadata["dense_relevance"] = round(hit.relevance, 4)
            dense_docs.append(hit.document)
        return gate, self.fuse(dense_docs, keyword_docs)[: self.k]


def load_synonyms_for(settings: Settings, namespace: str) -> Synonyms:
    """The synonym groups a collection's retrieval uses: the packaged defaults (unless
    ``retriever.default_synonyms`` is off), ``synonyms.txt`` at the top of each corpus folder
    ingested into it, then the ``retriever.synonyms`` file. The Assistant hands the same
    groups to FAQ direct answers."""
    from rag_pipeline import state_db
    from rag_pipeline.bookkeeping import Bookkeeping

    roots: list[Path] = []
    if state_db.state_exists(settings):
        roots = [Path(p) for p in Bookkeeping(settings, namespace).roots().values()]
    cfg = settings.retriever
    return build_synonyms(cfg.synonyms, use_defaults=cfg.default_synonyms, roots=roots)


def load_keyword_index(
    settings: Settings, store: VectorBackend, synonyms: Synonyms | None = None
) -> KeywordSearcher:
    """The collection's keyword index, rebuilt from the store's chunks first when it is missing
    (written by an older tokenizer, or a store filled by another tool). ``synonyms``: the
    collection's groups when the caller has them already (``load_synonyms_for``)."""
    from rag_pipeline import state_db
    from rag_pipeline.keyword_index import KeywordIndex

    index = KeywordIndex(state_db.state_engine(settings), store.namespace)
    if index.count() == 0 and store.count() > 0:
        _rebuild_keyword_index(settings, store, index, synonyms)
    return index.load(
        synonyms=synonyms if synonyms is not None else load_synonyms_for(settings, store.namespace),
        question_weight=settings.retriever.question_weight,
    )


def _rebuild_keyword_index(
    settings: Settings, store: VectorBackend, index: KeywordIndex, synonyms: Synonyms | None
) -> None:
    """Fill an empty keyword index from the store, only when no writer is at work: a writer's
    vectors precede its records and keyword rows, so copying them in mid-write would show a
    file group half done. With a shared (PostgreSQL) state the index is rebuilt only for a
    collection that has records (one ingested before the keyword index existed); a store
    written by another tool is then left to `rag verify --repair`."""
    from rag_pipeline.errors import CollectionLockedError
    from rag_pipeline.locking import collection_lock
    from rag_pipeline.records import StateRecordManager

    quiet = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"lock_timeout": 0.0})}
    )
    try:
        with collection_lock(quiet, store.namespace, what="rebuilding the keyword index"):
            if index.count() > 0:
                return
            shared = settings.state.url is not None
            if shared and not StateRecordManager(index.engine, store.namespace).list_keys(limit=1):
                return
            index.ensure_synonyms(synonyms)
            for batch in store.scan():
                index.add([r.document() for r in batch], [r.id for r in batch])
    except CollectionLockedError:
        return  # a writer is at work; it keeps the index itself


def snapshot_ids(settings: Settings, store: VectorBackend) -> Visibility | None:
    """The chunks stored now, as the keyword index (which ingest keeps on the store's ids)
    knows them, for a dense retriever that must not see later writes half done; None when the
    keyword index is empty (a store filled by another tool: no such guarantee). Nothing is
    loaded: the returned searcher checks a search's hits against the index."""
    from rag_pipeline import state_db
    from rag_pipeline.keyword_index import KeywordIndex

    index = KeywordIndex(state_db.state_engine(settings), store.namespace)
    if index.count() == 0:
        return None
    return index.load(synonyms=load_synonyms_for(settings, store.namespace))


def build_retriever(
    settings: Settings,
    store: VectorBackend,
    embeddings: Embeddings,
    keyword: KeywordSearcher | None = None,
    visible_ids: frozenset[str] | Visibility | None = None,
) -> BaseRetriever:
    """The retriever the settings describe (``hybrid`` needs the keyword searcher). With a
    reranker configured, the retriever fetches ``rerank.candidates`` chunks and LangChain's
    ``ContextualCompressionRetriever`` hands them to the reranker, which keeps ``k``.

    Hybrid retrieval answers from the keyword searcher's chunks only: dense hits it does not
    hold (written after it was loaded) are dropped. ``visible_ids`` does the same for
    similarity and MMR search (``snapshot_ids``); None returns whatever the store holds."""
    from rag_pipeline.reranking import build_reranker

    cfg = settings.retriever
    reranker = build_reranker(settings, top_n=cfg.k)
    k = max(cfg.k, settings.rerank.candidates) if reranker is not None else cfg.k
    where = check_where(dict(cfg.filter)) or {}
    where_document = check_where_document(cfg.where_document) or {}
    dense = DenseRetriever(
        store=store,
        embeddings=embeddings,
        k=k,
        search_type=cfg.search_type if cfg.search_type != "hybrid" else "similarity",
        fetch_k=cfg.fetch_k,
        lambda_mult=cfg.lambda_mult,
        score_threshold=cfg.score_threshold,
        filter=where,
        where_document=where_document,
        visible_ids=visible_ids,
    )
    retriever: BaseRetriever = dense
    if cfg.search_type == "hybrid":
        if keyword is None:
            keyword = load_keyword_index(settings, store)
        candidates = max(cfg.candidates, k)
        dense.k, dense.score_threshold = candidates, None
        dense.visible_ids = keyword
        retriever = HybridRetriever(
            dense=dense,
            keyword=KeywordRetriever(
                searcher=keyword,
                k=candidates,
                filter=where,
                where_document=where_document,
            ),
            k=k,
            fusion=cfg.fusion,
            dense_weight=cfg.dense_weight,
            keyword_weight=cfg.keyword_weight,
            coverage_weight=cfg.coverage_weight,
            score_threshold=cfg.score_threshold,
            gate_keyword_weight=cfg.gate_keyword_weight,
        )
    if reranker is None:
        return retriever
    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever

    return ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)
