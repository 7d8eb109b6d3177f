"""Store -> retriever: similarity or MMR top-k, metadata filters, a 0..1 relevance threshold.

Relevance is the cosine similarity of the question and the chunk, clipped to 0..1, on every
backend and index metric; chunks below ``score_threshold`` are dropped, so a question the
knowledge base cannot answer retrieves nothing and the chain refuses without calling a model.
Each returned Document carries its relevance in ``metadata["score"]``.

>>> retriever = build_retriever(settings, store, model.embeddings)      # doctest: +SKIP
>>> docs = retriever.invoke("七天无理由退货怎么申请")                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag_pipeline.stores import Hit, VectorBackend

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


class DenseRetriever(BaseRetriever):
    """Dense retrieval over one of our vector backends.

    >>> retriever = DenseRetriever(store=store, embeddings=emb, k=4)  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: VectorBackend
    embeddings: Embeddings
    k: int = 4
    search_type: Literal["similarity", "mmr"] = "similarity"
    fetch_k: int = 20
    lambda_mult: float = 0.5
    score_threshold: float | None = None
    filter: dict[str, Any] = {}

    def search(self, query: str) -> list[Hit]:
        """Hits for ``query`` after threshold and MMR, best first."""
        vector = self.embeddings.embed_query(query)
        if self.search_type == "mmr":
            hits = self.store.search(
                vector, max(self.fetch_k, self.k), self.filter or None, with_vectors=True
            )
            hits = self._passing(hits)
            if hits:
                import numpy as np
                from langchain_core.vectorstores.utils import maximal_marginal_relevance

                order = maximal_marginal_relevance(
                    np.array(vector, dtype=np.float32),
                    [h.vector for h in hits],
                    lambda_mult=self.lambda_mult,
                    k=self.k,
                )
                hits = [hits[i] for i in order]
            return hits
        return self._passing(self.store.search(vector, self.k, self.filter or None))

    def _passing(self, hits: list[Hit]) -> list[Hit]:
        if self.score_threshold is None:
            return hits
        return [h for h in hits if h.relevance >= self.score_threshold]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = []
        for hit in self.search(query):
            hit.document.metadata["score"] = round(hit.relevance, 4)
            docs.append(hit.document)
        return docs


def build_retriever(
    settings: Settings, store: VectorBackend, embeddings: Embeddings
) -> DenseRetriever:
    """The retriever the settings describe."""
    cfg = settings.retriever
    return DenseRetriever(
        store=store,
        embeddings=embeddings,
        k=cfg.k,
        search_type=cfg.search_type,
        fetch_k=cfg.fetch_k,
        lambda_mult=cfg.lambda_mult,
        score_threshold=cfg.score_threshold,
        filter=dict(cfg.filter),
    )
