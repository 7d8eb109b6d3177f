"""Optional second stage: a reranker model re-scores the retrieved chunks and keeps the best k.

Off by default (``settings.rerank.provider`` None). Each reranker is a LangChain
``BaseDocumentCompressor``, so ``build_retriever`` puts it behind LangChain's
``ContextualCompressionRetriever``:

- ``dashscope``: DashScope's rerank API (``gte-rerank-v2`` by default) through the official
  SDK, honouring ``base_url``, retrying 429/5xx and turning failures into ``ProviderError``;
- ``huggingface``: a cross-encoder (e.g. bge-reranker-v2-m3) in a local folder, through
  LangChain's ``HuggingFaceCrossEncoder`` (extra ``[hf]``; never downloads);
- ``http``: any server speaking the common ``POST .../rerank`` format (Jina, Cohere-compatible,
  Xinference, vLLM, SiliconFlow), ``base_url`` being the endpoint.

Every kept Document carries ``metadata["rerank_score"]`` (the reranker's own scale);
``metadata["score"]`` stays the retriever's 0..1 relevance, which the refusal gate used.

>>> reranker = build_reranker(settings, top_n=4)        # doctest: +SKIP
>>> reranker.compress_documents(docs, "七天无理由退货怎么申请")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, SecretStr

from rag_pipeline.errors import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderError,
)
from rag_pipeline.providers import Retryable, dashscope_call, with_retries

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

DEFAULT_DASHSCOPE_MODEL = "gte-rerank-v2"


class Reranker(BaseDocumentCompressor):
    """Orders documents by ``score(query, texts)``, keeps ``top_n``, drops those under
    ``min_score``. Subclasses only say how to score."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int = 4
    min_score: float | None = None

    def score(self, query: str, texts: list[str]) -> list[float]:
        raise NotImplementedError

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:  # the refusal gate let nothing through: no call to the model
            return []
        scores = self.score(query, [doc.page_content for doc in documents])
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        kept = []
        for i in order[: self.top_n]:
            if self.min_score is not None and scores[i] < self.min_score:
                break
            doc = documents[i]
            kept.append(
                Document(
                    doc.page_content,
                    id=doc.id,
                    metadata={**doc.metadata, "rerank_score": round(float(scores[i]), 4)},
                )
            )
        return kept


def _scores_by_index(results: list[tuple[int, float]], n: int) -> list[float]:
    """Scores in input order; a document the service did not return ranks last."""
    scores = [float("-inf")] * n
    for index, value in results:
        if not 0 <= index < n:
            raise ProviderError(f"reranker returned index {index} for {n} documents")
        scores[index] = float(value)
    return scores


class DashScopeReranker(Reranker):
    """DashScope's rerank API (``dashscope.TextReRank``, the official SDK), with ``base_url``,
    retries on 429/5xx and a ``ProviderError`` on failure.

    >>> DashScopeReranker(api_key=SecretStr("sk-..."), top_n=4)   # doctest: +SKIP
    """

    api_key: SecretStr
    model: str = DEFAULT_DASHSCOPE_MODEL
    base_url: str | None = None
    max_retries: int = 2

    def score(self, query: str, texts: list[str]) -> list[float]:
        import dashscope

        response = dashscope_call(
            dashscope.TextReRank,
            "DashScope rerank",
            self.max_retries,
            self.base_url,
            model=self.model,
            query=query,
            documents=texts,
            top_n=len(texts),
            return_documents=False,
            api_key=self.api_key.get_secret_value(),
        )
        try:
            results = [
                (int(r["index"]), float(r["relevance_score"])) for r in response.output["results"]
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise ProviderError(f"DashScope rerank answered in an unknown format ({e})") from e
        return _scores_by_index(results, len(texts))


class CrossEncoderReranker(Reranker):
    """A LangChain ``BaseCrossEncoder`` (by default a sentence-transformers cross-encoder
    loaded from a local folder) scoring (query, chunk) pairs in batches.

    >>> CrossEncoderReranker.from_folder("/models/bge-reranker-v2-m3")   # doctest: +SKIP
    """

    model: Any  # langchain_community.cross_encoders.BaseCrossEncoder
    batch_size: int = 16

    @classmethod
    def from_folder(
        cls, folder: str, *, batch_size: int = 16, top_n: int = 4, min_score: float | None = None
    ) -> CrossEncoderReranker:
        if not Path(folder).is_dir():
            raise ConfigurationError(
                "rerank.model must be a local folder holding a cross-encoder model when the "
                f"rerank provider is huggingface (got {folder!r}); nothing is downloaded at run "
                "time: download it once (e.g. huggingface-cli download BAAI/bge-reranker-v2-m3 "
                "--local-dir ./models/bge-reranker-v2-m3) and point RAG_RERANK__MODEL there"
            )
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

        try:  # it imports sentence-transformers (the [hf] extra) when constructed
            model = HuggingFaceCrossEncoder(
                model_name=folder, model_kwargs={"device": "cpu", "local_files_only": True}
            )
        except ImportError as e:
            raise MissingExtraError("the huggingface reranker", "hf", str(e)) from e
        return cls(model=model, batch_size=batch_size, top_n=top_n, min_score=min_score)

    def score(self, query: str, texts: list[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            pairs = [(query, text) for text in texts[start : start + self.batch_size]]
            scores.extend(float(s) for s in self.model.score(pairs))
        return scores


class HTTPReranker(Reranker):
    """A rerank server's ``POST {"model", "query", "documents", "top_n"}`` endpoint, answering
    ``{"results": [{"index", "relevance_score"}]}`` (Jina, Cohere-compatible, Xinference, vLLM,
    SiliconFlow).

    >>> url = "http://127.0.0.1:9997/v1/rerank"
    >>> HTTPReranker(url=url, model="bge-reranker-v2-m3")  # doctest: +SKIP
    """

    url: str
    model: str | None = None
    api_key: SecretStr | None = None
    timeout: float = 30.0
    max_retries: int = 2

    def score(self, query: str, texts: list[str]) -> list[float]:
        import httpx

        body: dict[str, Any] = {"query": query, "documents": texts, "top_n": len(texts)}
        if self.model:
            body["model"] = self.model
        headers = (
            {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}
        )

        def once() -> httpx.Response:
            try:
                response = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
            except httpx.TransportError as e:
                raise Retryable(f"{type(e).__name__}: {e}") from e
            if response.status_code == 429 or response.status_code >= 500:
                raise Retryable(f"HTTP {response.status_code}")
            return response

        response = with_retries(once, self.max_retries, f"reranker at {self.url}")
        if response.status_code != 200:
            hint = " (check RAG_RERANK__API_KEY)" if response.status_code in (401, 403) else ""
            raise ProviderError(
                f"reranker at {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:300]}{hint}"
            )
        try:
            data = response.json()
            results = [(int(r["index"]), float(r["relevance_score"])) for r in data["results"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ProviderError(
                f"reranker at {self.url} answered in an unknown format ({e}); expected "
                '{"results": [{"index", "relevance_score"}]}'
            ) from e
        return _scores_by_index(results, len(texts))


def build_reranker(settings: Settings, top_n: int) -> Reranker | None:
    """The reranker ``settings.rerank`` describes, keeping ``top_n`` chunks; None when off."""
    cfg = settings.rerank
    if cfg.provider is None:
        return None
    if cfg.provider == "dashscope":
        if settings.dashscope_api_key is None:
            raise MissingAPIKeyError("DASHSCOPE_API_KEY", "the dashscope reranker")
        return DashScopeReranker(
            api_key=settings.dashscope_api_key,
            model=cfg.model or DEFAULT_DASHSCOPE_MODEL,
            base_url=cfg.base_url,
            max_retries=cfg.max_retries,
            top_n=top_n,
            min_score=cfg.min_score,
        )
    if cfg.provider == "huggingface":
        return CrossEncoderReranker.from_folder(
            cfg.model or "", batch_size=cfg.batch_size, top_n=top_n, min_score=cfg.min_score
        )
    if not cfg.base_url:
        raise ConfigurationError(
            "the http reranker needs rerank.base_url, the full endpoint URL, e.g. "
            "RAG_RERANK__BASE_URL=http://127.0.0.1:9997/v1/rerank"
        )
    return HTTPReranker(
        url=cfg.base_url,
        model=cfg.model,
        api_key=cfg.api_key,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        top_n=top_n,
        min_score=cfg.min_score,
    )
