"""Settings + Embeddings -> a vector store, behind one small interface per backend.

Every backend exposes the LangChain ``VectorStore`` (``.vector_store``) plus what the pipeline
needs around it: the embedding fingerprint recorded in the collection, counts, deletion, search
with scores normalised to one 0..1 relevance (cosine similarity clipped at 0) whatever the
index metric, metadata filters (``where``) and content filters (``where_document``), a
record-manager namespace, and the collection housekeeping behind ``rag collections`` and
``rag migrate`` (list, peek, rename, raw reads and writes of stored vectors).

>>> from rag_pipeline.config import Settings
>>> from rag_pipeline.embeddings import build_embedding_model
>>> settings = Settings(embeddings={"provider": "fake"}, store={"mode": "memory"})
>>> store = open_store(settings, build_embedding_model(settings), create=True)
>>> store.count()
0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
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
DocumentFilter = dict[str, Any]
SCAN_BATCH = 500


@dataclass
class Hit:
    """One search result: the chunk, its relevance (0..1) and, on request, its vector."""

    document: Document
    relevance: float
    vector: list[float] | None = None


@dataclass
class Record:
    """One stored chunk with its vector: what ``scan`` reads and ``write`` stores verbatim
    (a copy between stores without calling the embedding model)."""

    id: str
    text: str
    metadata: dict[str, Any]
    vector: list[float]

    def document(self) -> Document:
        return Document(id=self.id, page_content=self.text, metadata=dict(self.metadata))


# ---------------------------------------------------------------------------------------------
# Content filters: Chroma's ``where_document`` syntax, checked once, translated per backend
# ---------------------------------------------------------------------------------------------

_TEXT_OPERATORS = ("$contains", "$not_contains")
_DOCUMENT_FILTER_HELP = (
    'expected {"$contains": "TEXT"}, {"$not_contains": "TEXT"}, or {"$and": [...]} / '
    '{"$or": [...]} of those, e.g. RAG_RETRIEVER__WHERE_DOCUMENT=\'{"$contains": "运费"}\''
)


def document_filter(where_document: DocumentFilter | None) -> DocumentFilter | None:
    """Check a content filter (None or ``{}`` = no filter) and return it unchanged.

    The syntax is Chroma's ``where_document``: ``$contains`` / ``$not_contains`` a substring
    (case-sensitive), combined with ``$and`` / ``$or`` lists.

    >>> document_filter({"$contains": "运费"})
    {'$contains': '运费'}
    >>> document_filter({"$like": "x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rag_pipeline.errors.ConfigurationError: where_document {'$like': 'x'}: expected ...
    """
    if not where_document:
        return None
    _check_document_filter(where_document, where_document)
    return where_document


def _check_document_filter(part: Any, whole: DocumentFilter) -> None:
    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(f"where_document {whole!r}: {why}{_DOCUMENT_FILTER_HELP}")

    if not isinstance(part, dict) or len(part) != 1:
        raise bad("each filter is a dict with exactly one operator; ")
    ((op, operand),) = part.items()
    if op in _TEXT_OPERATORS:
        if not isinstance(operand, str) or not operand:
            raise bad(f"{op} needs a non-empty text; ")
    elif op in ("$and", "$or"):
        if not isinstance(operand, list) or not operand:
            raise bad(f"{op} needs a non-empty list of filters; ")
        for item in operand:
            _check_document_filter(item, whole)
    else:
        raise bad("")


def document_matches(text: str, where_document: DocumentFilter | None) -> bool:
    """Whether ``text`` passes a (checked) content filter, evaluated here in Python: used
    where no database does it (the keyword index).

    >>> document_matches("满99元包邮，运费8元", {"$and": [{"$contains": "运费"},
    ...                                               {"$not_contains": "退货"}]})
    True
    """
    if not where_document:
        return True
    ((op, operand),) = where_document.items()
    if op == "$contains":
        return str(operand) in text
    if op == "$not_contains":
        return str(operand) not in text
    if op == "$and":
        return all(document_matches(text, part) for part in operand)
    return any(document_matches(text, part) for part in operand)


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
    name: str  # the collection's name
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
        where_document: DocumentFilter | None = None,
    ) -> list[Hit]:
        """Top-k chunks for a query vector, best first, relevance in 0..1.

        ``where`` filters on metadata, ``where_document`` on the chunk text (see
        ``document_filter``); both apply before the top-k cut.
        """

    @abstractmethod
    def get(self, ids: list[str]) -> list[Document]: ...

    @abstractmethod
    def sources(self) -> dict[str, int]:
        """Chunk count per ``source``."""

    @abstractmethod
    def list_collections(self) -> list[str]:
        """Names of every collection at this backend's location (sorted)."""

    @abstractmethod
    def peek(self, n: int) -> list[Document]:
        """Up to ``n`` stored chunks (no particular order)."""

    @abstractmethod
    def rename(self, new_name: str) -> None:
        """Rename the collection; ``name`` and ``namespace`` follow it. The LangChain
        ``vector_store`` of the old name is dropped: ``attach()`` again to search."""

    @abstractmethod
    def scan(self, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        """Every stored chunk with its vector, ``batch_size`` at a time."""

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Store chunks with the given vectors (upsert by id), without embedding anything."""

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.vector_store.delete(ids=ids)

    def flush(self) -> None:  # noqa: B027 - optional hook, Chroma indexes on write
        """Make recent writes searchable through the vector index (called after ingest)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release this backend's clients (nothing to do for most backends)."""

    def describe(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "count": self.count(),
            "fingerprint": self.stored_fingerprint(),
        }


def chroma_where_document(where_document: DocumentFilter | None) -> DocumentFilter | None:
    """A (checked) content filter in Chroma's ``where_document`` syntax: ours is Chroma's."""
    return document_filter(where_document)


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
        self._mode = cfg.mode
        self.namespace = self._namespace(self.name)
        self._embedding_function = embedding_function
        self._relevance = relevance_function(cfg.space)
        self._chroma_cls = Chroma
        self._collection: Any = None
        self.vector_store = None  # type: ignore[assignment]

    def _namespace(self, name: str) -> str:
        # The records live in the same data folder as an embedded collection, so its path is
        # not part of the name (a relative and an absolute spelling are the same collection).
        if self._mode == "http":
            return f"chroma/http/{self.location}/{name}"
        return f"chroma/{self._mode}/{name}"

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
        where_document: DocumentFilter | None = None,
    ) -> list[Hit]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if with_vectors else [])
        result = self._collection.query(
            query_embeddings=[vector],
            n_results=k,
            where=chroma_where(where),
            where_document=chroma_where_document(where_document),
            include=include,
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

    def list_collections(self) -> list[str]:
        return sorted(c if isinstance(c, str) else c.name for c in self.client.list_collections())

    def peek(self, n: int) -> list[Document]:
        if n <= 0:
            return []
        got = self._collection.get(limit=n, include=["documents", "metadatas"])
        return [
            Document(id=id_, page_content=text or "", metadata=dict(meta or {}))
            for id_, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]

    def rename(self, new_name: str) -> None:
        self._collection.modify(name=new_name)
        self.name = new_name
        self.namespace = self._namespace(new_name)
        self.vector_store = None  # type: ignore[assignment]

    def scan(self, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        offset = 0
        while True:
            got = self._collection.get(
                include=["documents", "metadatas", "embeddings"], limit=batch_size, offset=offset
            )
            if not len(got["ids"]):
                return
            yield [
                Record(id_, text or "", dict(meta or {}), [float(v) for v in vector])
                for id_, text, meta, vector in zip(
                    got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
                )
            ]
            if len(got["ids"]) < batch_size:
                return
            offset += batch_size

    def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        limit = max(1, int(self.client.get_max_batch_size()))  # Chroma caps one request
        for start in range(0, len(records), limit):
            batch = records[start : start + limit]
            self._collection.upsert(
                ids=[r.id for r in batch],
                embeddings=[r.vector for r in batch],
                documents=[r.text for r in batch],
                metadatas=[r.metadata or None for r in batch],  # type: ignore[misc]
            )


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


def connect(settings: Settings, embedding_function: Embeddings | None = None) -> VectorBackend:
    """The configured backend, connected but not opened: call ``exists()`` (or ``create``)
    before using the collection, and ``close()`` when done. ``open_store`` is the checked way
    in for search and ingest; this one is for housekeeping that needs no embedding model
    (``rag collections``, ``rag migrate``)."""
    return _backend(settings, embedding_function)  # type: ignore[no-any-return]


def _backend(settings: Settings, embedding_function: Embeddings | None) -> Any:
    if settings.store.backend == "milvus":
        from rag_pipeline.milvus import MilvusBackend

        return MilvusBackend(settings, embedding_function)
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
