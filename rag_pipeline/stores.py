"""Settings + Embeddings -> a vector store, behind one small interface per backend.

Every backend exposes the LangChain ``VectorStore`` (``.vector_store``) plus what the pipeline
needs around it: the embedding fingerprint recorded in the collection, counts, deletion, search
with scores normalised to one 0..1 relevance (cosine similarity clipped at 0) whatever the
index metric, and a record-manager namespace.

>>> from rag_pipeline.config import Settings
>>> from rag_pipeline.embeddings import build_embedding_model
>>> settings = Settings(embeddings={"provider": "fake"}, store={"mode": "memory"})
>>> store = open_store(settings, build_embedding_model(settings), create=True)
>>> store.count()
0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from rag_pipeline.errors import ConfigurationError, EmbeddingMismatchError, EmptyIndexError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel

FINGERPRINT_KEY = "rag_fingerprint"
Filter = dict[str, Any]


@dataclass
class Hit:
    """One search result: the chunk, its relevance (0..1) and, on request, its vector."""

    document: Document
    relevance: float
    vector: list[float] | None = None


def relevance_function(space: str) -> Callable[[float], float]:
    """Map a backend distance to relevance in 0..1 (cosine similarity of unit vectors, >= 0).

    Chroma distances: cosine = 1 - cos, ip = 1 - dot, l2 = squared euclidean = 2 - 2 cos.
    """
    if space == "l2":
        return lambda d: max(0.0, min(1.0, 1.0 - d / 2.0))
    return lambda d: max(0.0, min(1.0, 1.0 - d))


def ingest_first_message(where: str) -> str:
    return (
        f"nothing has been ingested into {where} yet: run `python scripts/ingest.py` "
        "(or `rag ingest PATH`) first"
    )


class VectorBackend(ABC):
    """One collection in one vector database, opened for this package's use."""

    vector_store: VectorStore
    namespace: str  # record-manager namespace: one per backend + location + collection
    location: str  # shown to users: where the data lives

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def stored_fingerprint(self) -> str | None: ...

    @abstractmethod
    def drop(self) -> None:
        """Delete the collection and everything in it."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the collection exists (and remember it for the other calls)."""

    @abstractmethod
    def create(self, settings: Settings, fingerprint: str) -> None:
        """Create the collection, recording the embedding fingerprint in it."""

    @abstractmethod
    def attach(self) -> None:
        """Build ``vector_store`` on the existing collection."""

    @abstractmethod
    def search(
        self,
        vector: list[float],
        k: int,
        where: Filter | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k chunks for a query vector, best first, relevance in 0..1."""

    @abstractmethod
    def get(self, ids: list[str]) -> list[Document]: ...

    @abstractmethod
    def sources(self) -> dict[str, int]:
        """Chunk count per ``source``."""

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.vector_store.delete(ids=ids)

    def describe(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "count": self.count(),
            "fingerprint": self.stored_fingerprint(),
        }


def chroma_where(filter_: Filter | None) -> Filter | None:
    """Our flat {key: value} filter in Chroma's ``where`` syntax."""
    if not filter_:
        return None
    if any(key.startswith("$") for key in filter_):
        return filter_  # already a Chroma expression
    clauses = [{key: value} for key, value in filter_.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class ChromaBackend(VectorBackend):
    """A Chroma collection (persistent folder, in-memory, or a ``chroma run`` server)."""

    def __init__(self, settings: Settings, embedding_function: Embeddings | None) -> None:
        from langchain_chroma import Chroma

        cfg = settings.store
        self.client = _chroma_client(settings)
        self.name = cfg.collection
        self.space = cfg.space
        if cfg.mode == "http":
            scheme = "https" if cfg.ssl else "http"
            self.location = f"{scheme}://{cfg.host}:{cfg.port} ({cfg.tenant}/{cfg.database})"
        elif cfg.mode == "persistent":
            self.location = str(settings.chroma_dir)
        else:
            self.location = "memory"
        self.namespace = f"chroma/{cfg.mode}/{self.location}/{self.name}"
        self._embedding_function = embedding_function
        self._relevance = relevance_function(cfg.space)
        self._chroma_cls = Chroma
        self._collection: Any = None
        self.vector_store = None  # type: ignore[assignment]

    def exists(self) -> bool:
        from chromadb.errors import NotFoundError

        try:
            self._collection = self.client.get_collection(self.name, embedding_function=None)
        except NotFoundError:
            return False
        return True

    def create(self, settings: Settings, fingerprint: str) -> None:
        cfg = settings.store
        hnsw = {
            "space": cfg.space,
            "ef_search": cfg.ef_search,
            "ef_construction": cfg.ef_construction,
            "max_neighbors": cfg.max_neighbors,
        }
        self._collection = self.client.create_collection(
            self.name,
            configuration={"hnsw": hnsw},  # type: ignore[typeddict-item]
            metadata={FINGERPRINT_KEY: fingerprint, "created_by": "rag_pipeline"},
            embedding_function=None,
        )

    def attach(self) -> None:
        self.vector_store = self._chroma_cls(
            client=self.client,
            collection_name=self.name,
            embedding_function=self._embedding_function,
            relevance_score_fn=self._relevance,
            create_collection_if_not_exists=False,
        )

    def count(self) -> int:
        return int(self._collection.count())

    def stored_fingerprint(self) -> str | None:
        value = (self._collection.metadata or {}).get(FINGERPRINT_KEY)
        return str(value) if value is not None else None

    def drop(self) -> None:
        from chromadb.errors import NotFoundError

        try:
            self.client.delete_collection(self.name)
        except NotFoundError:
            pass
        self._collection = None

    def search(
        self,
        vector: list[float],
        k: int,
        where: Filter | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if with_vectors else [])
        result = self._collection.query(
            query_embeddings=[vector], n_results=k, where=chroma_where(where), include=include
        )
        vectors = result["embeddings"][0] if with_vectors else [None] * len(result["ids"][0])
        return [
            Hit(
                Document(id=id_, page_content=text, metadata=dict(meta or {})),
                self._relevance(distance),
                [float(v) for v in vec] if vec is not None else None,
            )
            for id_, text, meta, distance, vec in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                vectors,
                strict=True,
            )
        ]

    def get(self, ids: list[str]) -> list[Document]:
        if not ids:
            return []
        got = self._collection.get(ids=ids, include=["documents", "metadatas"])
        by_id = {
            id_: Document(id=id_, page_content=text, metadata=dict(meta or {}))
            for id_, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [by_id[i] for i in ids if i in by_id]

    def sources(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        offset, page = 0, 5000
        while True:
            got = self._collection.get(include=["metadatas"], limit=page, offset=offset)
            for meta in got["metadatas"]:
                source = str((meta or {}).get("source", "?"))
                counts[source] = counts.get(source, 0) + 1
            if len(got["ids"]) < page:
                return dict(sorted(counts.items()))
            offset += page


def _chroma_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    cfg = settings.store
    # Telemetry off: the package must never reach the network on its own.
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if cfg.mode == "persistent":
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    if cfg.mode == "memory":
        return chromadb.EphemeralClient(settings=chroma_settings)
    headers = dict(cfg.headers)
    if cfg.auth_token is not None:
        headers["Authorization"] = f"Bearer {cfg.auth_token.get_secret_value()}"
    try:
        return chromadb.HttpClient(
            host=cfg.host,
            port=cfg.port,
            ssl=cfg.ssl,
            headers=headers or None,
            settings=chroma_settings,
            tenant=cfg.tenant,
            database=cfg.database,
        )
    except Exception as e:  # chromadb raises ValueError / httpx errors for an unreachable server
        scheme = "https" if cfg.ssl else "http"
        raise ConfigurationError(
            f"cannot reach the Chroma server at {scheme}://{cfg.host}:{cfg.port} "
            f"({type(e).__name__}): start one with `chroma run --path DIR --port {cfg.port}` "
            "or fix RAG_STORE__HOST / RAG_STORE__PORT"
        ) from e


def _backend(settings: Settings, embedding_function: Embeddings | None) -> Any:
    if settings.store.backend == "milvus":
        from rag_pipeline.milvus import MilvusBackend

        return MilvusBackend(settings, embedding_function)
    if settings.store.mode not in ("persistent", "memory", "http"):  # pragma: no cover
        raise ConfigurationError(f"unknown Chroma mode {settings.store.mode!r}")
    return ChromaBackend(settings, embedding_function)


def open_store(
    settings: Settings,
    model: EmbeddingModel,
    *,
    create: bool,
    embedding_function: Embeddings | None = None,
    rebuild: bool = False,
) -> VectorBackend:
    """Open the configured collection, checking that it was built with ``model``.

    ``create``: make the collection when missing (ingest); otherwise a missing or empty
    collection is an EmptyIndexError telling the user to ingest first (ask).
    ``embedding_function`` defaults to ``model.embeddings`` (ingest passes the cached one).
    ``rebuild``: drop the collection first (even one built with another model).
    """
    backend = _backend(settings, embedding_function or model.embeddings)
    if rebuild and backend.exists():
        backend.drop()  # whatever model built it: --rebuild is the way out of a mismatch
    if backend.exists():
        stored = backend.stored_fingerprint()
        configured = model.fingerprint if model.dimension is not None else None
        if (
            stored is not None
            and configured is None
            and not stored.startswith(f"{model.provider}:{model.model}:")
        ):
            configured = model.fingerprint
        if stored is not None and configured is not None and stored != configured:
            raise EmbeddingMismatchError(settings.store.collection, stored, configured)
        if stored is not None and model.dimension is None:
            model.dimension = int(stored.rsplit(":", 1)[1])
    elif create:
        model.resolve_dimension()
        backend.create(settings, model.fingerprint)
    else:
        raise EmptyIndexError(
            ingest_first_message(f"collection {settings.store.collection!r} at {backend.location}")
        )
    backend.attach()
    return backend
