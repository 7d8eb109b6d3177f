"""The Milvus backend: a milvus-lite database file or a Milvus server, behind ``VectorBackend``.

``settings.store.uri`` chooses where: a path ending in ``.db`` (default ``DATA_DIR/milvus.db``)
is a milvus-lite database, served in-process by the ``milvus-lite`` package; ``http(s)://``
is a Milvus server (``settings.store.token`` = ``user:password`` or an API key).

The collection has three fixed fields (``pk`` = our string ids, ``text``, ``vector``) and a
dynamic field that holds each chunk's metadata as JSON, so chunks with different metadata keys
share one collection. The embedding fingerprint is a collection property (``rag_fingerprint``).
Chunks are upserted, never blindly inserted: a Milvus server keeps duplicate primary keys.
Content filters (``where_document``) become ``text like "%...%"`` with ``%``, ``_`` and backslash
escaped, so the filter text is matched literally.

>>> from rag_pipeline.config import Settings
>>> settings = Settings(embeddings={"provider": "fake"}, store={"backend": "milvus"})
>>> backend = MilvusBackend(settings, None)                    # doctest: +SKIP
>>> milvus_filter({"source": "faq.csv", "page": 2}, {"$contains": "运费"})
'((source == "faq.csv") and (page == 2)) and (text like "%运费%")'

``backend.vector_store`` is a ``MilvusVectorStore``: a LangChain ``VectorStore`` written here over
pymilvus' public ``MilvusClient`` API (no ``langchain_milvus``). Nothing here imports
``pymilvus`` until a backend is built; without the ``milvus`` extra that raises
``MissingExtraError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore

from rag_pipeline.batching import batched
from rag_pipeline.errors import ConfigurationError, MissingExtraError, StoreUnavailableError
from rag_pipeline.stores.base import (
    FINGERPRINT_KEY,
    SCAN_BATCH,
    Hit,
    Record,
    VectorBackend,
    group_of,
    relevance_function,
)
from rag_pipeline.stores.filters import Where, WhereDocument, to_milvus, to_milvus_document

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from rag_pipeline.config import Settings

PK_FIELD = "pk"
TEXT_FIELD = "text"
VECTOR_FIELD = "vector"
RESERVED_FIELDS = frozenset({PK_FIELD, TEXT_FIELD, VECTOR_FIELD})
PK_MAX_LENGTH = 512  # our ids are sha256 hex (64 chars); LangChain's uuid ids are shorter
TEXT_MAX_LENGTH = 65_535  # bytes: Milvus' VARCHAR limit
METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
BATCH = 1000
SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")


def _missing(e: ImportError) -> MissingExtraError:
    return MissingExtraError("the Milvus backend", "milvus", str(e))


def is_server_uri(uri: str) -> bool:
    """Whether ``uri`` names a Milvus server (anything else is a milvus-lite file)."""
    scheme = urlsplit(uri).scheme.lower()
    return scheme in SERVER_SCHEMES


def redact_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part, fit for messages and record namespaces."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def milvus_filter(where: Where | None, where_document: WhereDocument | None) -> str:
    """Metadata and content filters as one Milvus expression ("" = no filter)."""
    return _and(to_milvus(where, RESERVED_FIELDS), to_milvus_document(where_document, TEXT_FIELD))


def _and(*expressions: str) -> str:
    present = [e for e in expressions if e]
    if len(present) <= 1:
        return present[0] if present else ""
    return " and ".join(f"({e})" for e in present)


# ---------------------------------------------------------------------------------------------
# Rows <-> Documents, and the one search call (shared by the vector store and the backend)
# ---------------------------------------------------------------------------------------------


def _clean_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata keys that would overwrite a schema field are stored as ``metadata_<key>``."""
    return {(f"metadata_{k}" if k in RESERVED_FIELDS else k): v for k, v in metadata.items()}


def _restore_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``_clean_metadata``: ``metadata_text`` is read back as ``text``."""
    restored = {}
    for key, value in metadata.items():
        if key.startswith("metadata_") and key[len("metadata_") :] in RESERVED_FIELDS:
            key = key[len("metadata_") :]
        restored[key] = value
    return restored


def _fill_ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    """The given ids, with a fresh uuid4 wherever one is missing (as Chroma does)."""
    given = list(ids) if ids is not None else [None] * n
    if len(given) != n:
        raise ValueError(f"got {len(given)} ids for {n} texts")
    return [i if i else str(uuid.uuid4()) for i in given]


def _row(id_: str, text: str, metadata: dict[str, Any], vector: Sequence[float]) -> dict[str, Any]:
    """One collection row: the fixed fields, the metadata in the dynamic field."""
    return {
        **_clean_metadata(metadata),
        PK_FIELD: id_,
        TEXT_FIELD: text,
        VECTOR_FIELD: [float(v) for v in vector],
    }


def _document(id_: Any, entity: dict[str, Any]) -> Document:
    """A row (search hit entity or get/query row) as a Document with its id."""
    entity = dict(entity)
    text = entity.pop(TEXT_FIELD, "")
    for field in (PK_FIELD, VECTOR_FIELD, "$meta"):
        entity.pop(field, None)
    return Document(id=str(id_), page_content=text or "", metadata=_restore_metadata(entity))


def _upsert(client: MilvusClient, collection: str, rows: Sequence[dict[str, Any]]) -> None:
    # Upsert, never insert: a Milvus server keeps duplicate primary keys.
    for start in range(0, len(rows), BATCH):
        client.upsert(collection, list(rows[start : start + BATCH]))


def _get(client: MilvusClient, collection: str, ids: Sequence[str]) -> dict[str, Document]:
    """The stored chunks among ``ids``, by id (missing ids are absent)."""
    found: dict[str, Document] = {}
    for batch in batched(list(ids), BATCH):
        for row in client.get(collection, ids=list(batch), output_fields=[TEXT_FIELD, "$meta"]):
            row = dict(row)
            found[str(row[PK_FIELD])] = _document(row[PK_FIELD], row)
    return found


def search_params(metric: str, ef_search: int, k: int) -> dict[str, Any]:
    """The search request's parameters; HNSW needs ``ef >= k``, other indexes ignore ``ef``."""
    return {"metric_type": metric, "params": {"ef": max(ef_search, k)}}


def metric_relevance(metric: str) -> Callable[[float], float]:
    """Milvus score -> relevance in 0..1: COSINE/IP are similarities (higher = closer, clipped
    at 0), L2 a squared distance (``2 - 2 cos`` for unit vectors)."""
    if metric.upper() == "L2":
        return relevance_function("l2")
    return lambda score: max(0.0, min(1.0, score))


# Milvus before 2.4 matches only prefixes with LIKE ("ab%"): our content filters are "%ab%".
UNSUPPORTED_LIKE = "unsupported pattern"


def _content_filters_unsupported(client: MilvusClient) -> ConfigurationError:
    try:
        version = str(client.get_server_version())
    except Exception:  # the message matters more than the version
        version = "unknown"
    return ConfigurationError(
        f"content filters (RAG_RETRIEVER__WHERE_DOCUMENT, --where-document-contains) need "
        f"Milvus 2.4 or later, which matches text anywhere with LIKE; this server runs "
        f"{version}: upgrade it, or drop the content filter (metadata filters work)"
    )


def _search(
    client: MilvusClient,
    collection: str,
    vector: Sequence[float],
    k: int,
    expr: str,
    params: dict[str, Any],
    *,
    with_vectors: bool = False,
) -> list[tuple[Document, float, list[float] | None]]:
    """Top-k rows for ``vector``: (document, raw Milvus score, vector if asked), best first."""
    from pymilvus.exceptions import MilvusException

    output = [TEXT_FIELD, "$meta"] + ([VECTOR_FIELD] if with_vectors else [])
    try:
        result = client.search(
            collection,
            data=[list(vector)],
            anns_field=VECTOR_FIELD,
            limit=k,
            filter=expr,
            output_fields=output,
            search_params=params,
        )
    except MilvusException as e:
        if UNSUPPORTED_LIKE in str(e):
            raise _content_filters_unsupported(client) from e
        raise
    found = []
    for hit in result[0] if result else []:
        entity = dict(hit["entity"])
        vec = entity.pop(VECTOR_FIELD, None)
        document = _document(hit.get(PK_FIELD, hit.get("id")), entity)
        vector_out = [float(v) for v in vec] if with_vectors and vec is not None else None
        found.append((document, float(hit["distance"]), vector_out))
    return found


# ---------------------------------------------------------------------------------------------
# The LangChain vector store, over pymilvus' public MilvusClient API
# ---------------------------------------------------------------------------------------------


class MilvusVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over one collection of this package's Milvus schema
    (``pk``, ``text``, ``vector`` and a dynamic field for metadata).

    - ``add_texts`` / ``add_documents`` embed and *upsert*: re-adding an id replaces the chunk
      (a Milvus server keeps duplicate primary keys on insert). Ids come from ``ids=``, else
      from ``Document.id``, else fresh uuid4 strings.
    - Found documents carry their id in ``Document.id``; metadata keys named like a schema
      field (``pk``, ``text``, ``vector``) round-trip through ``metadata_<key>``.
    - ``similarity_search_with_score`` returns Milvus' raw score (COSINE/IP similarity, L2
      squared distance); ``similarity_search_with_relevance_scores`` maps it through
      ``relevance`` (by default ``metric_relevance(metric)``, 0..1, higher = closer).
    - ``filter`` is a metadata filter in ``rag_pipeline.stores.filters``' grammar (or a raw
      Milvus expression as a string), ``where_document`` a content filter.
    - The async methods run the sync ones in an executor (LangChain's default).

    The collection must exist (``MilvusBackend.create`` builds it); ``from_texts`` is not
    offered. The store does not own ``client``: close it yourself.

    >>> from pymilvus import MilvusClient                            # doctest: +SKIP
    >>> store = MilvusVectorStore(MilvusClient("kb.db"), "rag_docs", emb)  # doctest: +SKIP
    >>> ids = store.add_texts(["七天无理由退货"], [{"source": "a.md"}])  # doctest: +SKIP
    >>> store.similarity_search("退货", k=1, filter={"source": "a.md"})  # doctest: +SKIP
    """

    def __init__(
        self,
        client: MilvusClient,
        collection_name: str,
        embedding: Embeddings,
        *,
        metric: str = "COSINE",
        relevance: Callable[[float], float] | None = None,
        ef_search: int = 400,
    ) -> None:
        self.client = client
        self.collection_name = collection_name
        self._embedding = embedding
        self.metric = metric.upper()
        self.relevance = relevance if relevance is not None else metric_relevance(self.metric)
        self.ef_search = ef_search

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writing -----------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int = BATCH,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert ``texts``, ``batch_size`` at a time; returns their ids (given, else
        fresh uuid4 strings)."""
        _no_extra(kwargs, "add_texts")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        filled = _fill_ids(ids, len(texts))
        metas = metadatas if metadatas is not None else [{}] * len(texts)
        # One batch at a time: at most batch_size vectors in memory.
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            vectors = self._embedding.embed_documents(texts[start:end])
            rows = [
                _row(i, t, m or {}, v)
                for i, t, m, v in zip(
                    filled[start:end], texts[start:end], metas[start:end], vectors, strict=True
                )
            ]
            _upsert(self.client, self.collection_name, rows)
        return filled

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Upsert ``documents``; ``ids=`` wins over ``Document.id`` (missing ones get uuid4)."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [doc.id for doc in documents]
        return self.add_texts(
            [doc.page_content for doc in documents],
            [doc.metadata for doc in documents],
            ids=ids,
            **kwargs,
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete chunks by id (unknown ids are ignored). ``ids=None`` is refused rather than
        read as "everything": dropping a collection is ``MilvusBackend.drop``."""
        _no_extra(kwargs, "delete")
        if ids is None:
            raise ValueError("MilvusVectorStore.delete needs ids=[...]")
        for batch in batched(list(ids), BATCH):
            self.client.delete(self.collection_name, ids=list(batch))
        return True

    # -- reading -----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored chunks among ``ids``, in the order asked, each once; missing ids are
        skipped."""
        found = _get(self.client, self.collection_name, ids)
        return [found.pop(i) for i in ids if i in found]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Where | str | None = None,
        where_document: WhereDocument | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _no_extra(kwargs, "similarity_search")
        return [
            doc for doc, _ in self.similarity_search_with_score(query, k, filter, where_document)
        ]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Where | str | None = None,
        where_document: WhereDocument | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _no_extra(kwargs, "similarity_search_by_vector")
        return [doc for doc, _, _ in self._search_vector(embedding, k, filter, where_document)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Where | str | None = None,
        where_document: WhereDocument | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents with Milvus' raw score (COSINE/IP: similarity, L2: squared distance)."""
        _no_extra(kwargs, "similarity_search_with_score")
        vector = self._embedding.embed_query(query)
        return [
            (doc, score) for doc, score, _ in self._search_vector(vector, k, filter, where_document)
        ]

    def similarity_search_with_relevance_scores(
        self,
        query: str,
        k: int = 4,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents with relevance in 0..1 (the constructor's ``relevance`` mapping), those
        below ``score_threshold`` dropped."""
        scored = [
            (doc, self.relevance(score))
            for doc, score in self.similarity_search_with_score(query, k, **kwargs)
        ]
        if score_threshold is None:
            return scored
        return [(doc, r) for doc, r in scored if r >= score_threshold]

    async def asimilarity_search_with_relevance_scores(
        self,
        query: str,
        k: int = 4,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        return await run_in_executor(
            None,
            self.similarity_search_with_relevance_scores,
            query,
            k,
            score_threshold,
            **kwargs,
        )

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Where | str | None = None,
        where_document: WhereDocument | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _no_extra(kwargs, "max_marginal_relevance_search")
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter, where_document
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Where | str | None = None,
        where_document: WhereDocument | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``fetch_k`` nearest chunks, ``k`` of them picked by maximal marginal relevance."""
        from rag_pipeline.stores.mmr import maximal_marginal_relevance

        _no_extra(kwargs, "max_marginal_relevance_search_by_vector")
        found = self._search_vector(
            embedding, max(fetch_k, k), filter, where_document, with_vectors=True
        )
        order = maximal_marginal_relevance(
            embedding, [vec or [] for _, _, vec in found], lambda_mult=lambda_mult, k=k
        )
        return [found[i][0] for i in order]

    @classmethod
    def from_texts(
        cls: type[MilvusVectorStore],
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> MilvusVectorStore:
        raise NotImplementedError(
            "MilvusVectorStore works on an existing collection: create it with "
            "open_store(settings, model, create=True) (or MilvusBackend.create), then use "
            "backend.vector_store or MilvusVectorStore(client, name, embedding).add_texts(...)"
        )

    # -- helpers -----------------------------------------------------------------------------

    def _search_vector(
        self,
        vector: Sequence[float],
        k: int,
        filter: Where | str | None,
        where_document: WhereDocument | None,
        *,
        with_vectors: bool = False,
    ) -> list[tuple[Document, float, list[float] | None]]:
        if isinstance(filter, str):  # a raw Milvus expression
            expr = _and(filter, milvus_filter(None, where_document))
        else:
            expr = milvus_filter(filter, where_document)
        return _search(
            self.client,
            self.collection_name,
            vector,
            k,
            expr,
            search_params(self.metric, self.ef_search, k),
            with_vectors=with_vectors,
        )


def _no_extra(kwargs: dict[str, Any], method: str) -> None:
    # Unknown keywords (e.g. langchain_milvus' ``expr``) fail loudly instead of being ignored.
    if kwargs:
        raise TypeError(f"MilvusVectorStore.{method}() got unexpected arguments {sorted(kwargs)}")


def _faiss_available() -> bool:
    """Whether milvus-lite can build HNSW indexes here (it needs faiss-cpu)."""
    try:
        from milvus_lite.index.factory import is_faiss_available
    except ImportError:  # pragma: no cover - older milvus-lite: assume the native build
        return True
    return bool(is_faiss_available())


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class MilvusBackend(VectorBackend):
    """One Milvus collection: milvus-lite (``uri`` = a ``.db`` path) or a server (``http(s)://``).

    Each backend object has its own ``MilvusClient`` (pymilvus shares the connection between
    clients of the same address). A milvus-lite database is served by a gRPC server thread in
    this process, shared by every client of the same path and stopped at exit; it holds a lock
    on the database folder, so another *process* cannot open it meanwhile (``release_lite``
    hands it over).
    """

    def __init__(self, settings: Settings, embedding_function: Embeddings | None) -> None:
        cfg = settings.store
        uri = cfg.uri or str(settings.data_dir / "milvus.db")
        self.name = cfg.collection
        self.space = cfg.space
        self.lite = not is_server_uri(uri)
        self._token = cfg.token.get_secret_value() if cfg.token is not None else ""
        if self.lite:
            path = Path(uri).expanduser()
            if path.suffix != ".db":
                raise ConfigurationError(
                    f"RAG_STORE__URI={uri!r}: a milvus-lite database path must end in .db "
                    "(or give a Milvus server as http://host:19530)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self.uri = str(path)
            self.location = str(path)
        else:
            self.uri = uri
            self.location = redact_uri(uri)
        self.namespace = self._namespace(self.name)
        self._embedding_function = embedding_function
        self._loaded = False  # whether this backend made sure the collection is loaded
        self._ef_search = cfg.ef_search
        self._metric = METRICS[cfg.space]  # replaced by the index's metric once attached
        self.vector_store = None  # type: ignore[assignment]
        self.client: Any = self._connect()

    # -- connection --------------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            from pymilvus import MilvusClient

            if self.lite:
                import milvus_lite  # noqa: F401  (pymilvus needs it for .db paths)
        except ImportError as e:
            raise _missing(e) from e
        try:
            return MilvusClient(uri=self.uri, token=self._token)
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            if self._token:
                detail = detail.replace(self._token, "***")
            if self.lite:
                raise StoreUnavailableError(
                    f"cannot open the milvus-lite database {self.location} ({detail}). "
                    "milvus-lite allows one process at a time: stop the other process using it "
                    "(another `rag` command, a notebook) or set RAG_STORE__URI to another file"
                ) from e
            raise StoreUnavailableError(
                f"cannot reach the Milvus server at {self.location} ({detail}): start it, or "
                "fix RAG_STORE__URI / RAG_STORE__TOKEN"
            ) from e

    def close(self) -> None:
        """Close this backend's client, which ``vector_store`` shares (the milvus-lite server
        itself stays up: see ``release_lite``)."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> MilvusBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- VectorBackend -----------------------------------------------------------------------

    def _namespace(self, name: str) -> str:
        return f"milvus/{self.location}/{name}"

    def _ready(self) -> None:
        """Load the collection once (a server answers queries on loaded collections only)."""
        if not self._loaded:
            self.client.load_collection(self.name)
            self._loaded = True

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.name))

    def create(self, settings: Settings, fingerprint: str) -> None:
        from pymilvus import DataType

        cfg = settings.store
        dimension = int(fingerprint.rsplit(":", 1)[1])
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field(PK_FIELD, DataType.VARCHAR, is_primary=True, max_length=PK_MAX_LENGTH)
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=TEXT_MAX_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
        self.client.create_collection(
            self.name,
            schema=schema,
            consistency_level="Strong",  # a count or search right after ingest sees everything
            properties={FINGERPRINT_KEY: fingerprint, "created_by": "rag_pipeline"},
        )
        self._metric = METRICS[cfg.space]
        index = self.client.prepare_index_params()
        if self.lite and not _faiss_available():
            # milvus-lite without faiss-cpu: AUTOINDEX = exact brute force.
            index.add_index(VECTOR_FIELD, index_type="AUTOINDEX", metric_type=self._metric)
        else:
            index.add_index(
                VECTOR_FIELD,
                index_type="HNSW",
                metric_type=self._metric,
                params={"M": cfg.max_neighbors, "efConstruction": cfg.ef_construction},
            )
        self.client.create_index(self.name, index)
        self.client.load_collection(self.name)
        self._loaded = True

    def attach(self) -> None:
        if self._embedding_function is None:
            raise ConfigurationError("the Milvus backend needs an embedding function")
        described = self.client.describe_collection(self.name)
        fields = {f["name"] for f in described.get("fields", [])}
        if not RESERVED_FIELDS <= fields or not described.get("enable_dynamic_field", False):
            raise ConfigurationError(
                f"Milvus collection {self.name!r} at {self.location} was not created by "
                f"rag_pipeline (fields {sorted(fields)}); choose another RAG_STORE__COLLECTION"
            )
        index = self._vector_index()
        if index is not None:
            self._metric = str(index.get("metric_type", self._metric)).upper()
        self._ready()  # a reopened milvus-lite collection starts released
        self.vector_store = MilvusVectorStore(
            self.client,
            self.name,
            self._embedding_function,
            metric=self._metric,
            relevance=self._relevance,
            ef_search=self._ef_search,
        )

    def count(self) -> int:
        self._ready()
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stored_fingerprint(self) -> str | None:
        properties = self.client.describe_collection(self.name).get("properties") or {}
        value = properties.get(FINGERPRINT_KEY)
        return str(value) if value is not None else None

    def flush(self) -> None:
        """Seal what was written, on milvus-lite only. milvus-lite searches unsealed (growing)
        data by brute force: at 10k chunks about 250 ms a query before a flush, about 35 ms
        after it. A server seals and indexes segments itself, its write-ahead log already
        makes the rows durable, and a flush there is slow (3 s on an idle 2.3 standalone) and
        rate-limited (quotaAndLimits.flushRate), so ingest does not ask for one."""
        if self.lite and self.exists():
            self.client.flush(self.name)

    def drop(self) -> None:
        if self.client.has_collection(self.name):
            self.client.drop_collection(self.name)  # also clears pymilvus' schema cache
        self._loaded = False

    def search(
        self,
        vector: list[float],
        k: int,
        where: Where | None = None,
        *,
        with_vectors: bool = False,
        where_document: WhereDocument | None = None,
    ) -> list[Hit]:
        self._ready()
        found = _search(
            self.client,
            self.name,
            vector,
            k,
            milvus_filter(where, where_document),
            search_params(self._metric, self._ef_search, k),
            with_vectors=with_vectors,
        )
        return [Hit(document, self._relevance(score), vec) for document, score, vec in found]

    def get(self, ids: list[str]) -> list[Document]:
        self._ready()
        by_id = _get(self.client, self.name, ids)
        return [by_id[i] for i in ids if i in by_id]

    def sources(self) -> dict[str, int]:
        self._ready()
        counts: dict[str, int] = {}
        for row in self._scan(["source", "root"]):
            source = group_of(dict(row)) or "?"
            counts[source] = counts.get(source, 0) + 1
        return dict(sorted(counts.items()))

    def delete(self, ids: list[str]) -> None:
        if not ids:
            return
        if self.vector_store is not None:
            # Through the attached store: during ingest it is the KeywordMirror, which removes
            # the chunks from the keyword index as well (pruned files must leave both).
            self.vector_store.delete(ids=ids)
            return
        for batch in batched(ids, BATCH):
            self.client.delete(self.name, ids=list(batch))

    def list_collections(self) -> list[str]:
        return sorted(str(name) for name in self.client.list_collections())

    def peek(self, n: int) -> list[Document]:
        if n <= 0:
            return []
        self._ready()
        rows = self.client.query(self.name, filter="", output_fields=[TEXT_FIELD, "$meta"], limit=n)
        return [_document(row[PK_FIELD], dict(row)) for row in rows]

    def rename(self, new_name: str) -> None:
        self.client.rename_collection(self.name, new_name)
        self.vector_store = None  # type: ignore[assignment]
        self.name = new_name
        self.namespace = self._namespace(new_name)

    def scan(self, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        self._ready()
        ids = [str(row[PK_FIELD]) for row in self._scan([PK_FIELD])]
        for batch in batched(ids, batch_size):
            rows = self.client.get(
                self.name, ids=list(batch), output_fields=[TEXT_FIELD, VECTOR_FIELD, "$meta"]
            )
            by_id = {str(row[PK_FIELD]): dict(row) for row in rows}
            records = []
            for id_ in batch:
                row = by_id.get(id_)
                if row is None:  # deleted meanwhile
                    continue
                vector = [float(v) for v in row[VECTOR_FIELD]]
                document = _document(id_, row)
                records.append(Record(id_, document.page_content, document.metadata, vector))
            yield records

    def write(self, records: Sequence[Record]) -> None:
        self._ready()
        _upsert(self.client, self.name, [_row(r.id, r.text, r.metadata, r.vector) for r in records])

    def index_settings(self) -> dict[str, Any]:
        index = self._vector_index() or {}
        found: dict[str, Any] = {}
        metric = str(index.get("metric_type", "")).upper()
        spaces = {value: key for key, value in METRICS.items()}
        if metric in spaces:
            found["space"] = spaces[metric]
        for key, name in (("M", "max_neighbors"), ("efConstruction", "ef_construction")):
            if key in index:
                found[name] = int(index[key])
        return found  # ef is a search-time parameter here: always the configured one

    # -- helpers -----------------------------------------------------------------------------

    def _relevance(self, score: float) -> float:
        """The 0..1 relevance of a Milvus score under the index's metric."""
        return metric_relevance(self._metric)(score)

    def _vector_index(self) -> dict[str, Any] | None:
        names = self.client.list_indexes(self.name, field_name=VECTOR_FIELD)
        if not names:
            return None
        return dict(self.client.describe_index(self.name, names[0]))

    def _scan(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row's ``fields`` (plus ``pk``)."""
        if self.lite:
            # milvus-lite has no result-window limit; its query iterator logs a warning.
            yield from self.client.query(self.name, filter="", output_fields=fields)
            return
        iterator = self.client.query_iterator(
            self.name, batch_size=BATCH, filter="", output_fields=fields
        )
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()


def release_lite(path: str | Path) -> None:
    """Stop this process's milvus-lite server for ``path`` and release its lock, so that another
    process can open the database. Clients still connected to it stop working; a path this
    process never opened is left alone.

    >>> release_lite("data/milvus.db")                                    # doctest: +SKIP
    """
    manager = _lite_server_manager()
    if manager is not None:
        manager.release_server(str(Path(path).expanduser()))


def _lite_server_manager() -> Any | None:
    """milvus-lite's per-process registry of in-process servers (None without milvus-lite).

    The one place this module goes past pymilvus' client API, on purpose and only here: pymilvus
    starts a milvus-lite server per ``.db`` path through this registry and stops it only at exit.
    ``MilvusClient.close()`` just drops the gRPC connection (checked with pymilvus 3.0 /
    milvus-lite 3.2: the lock stays held after every client of the path is closed), and neither
    package offers another way to release the database folder. milvus-lite 3 exports the
    registry as ``milvus_lite.server_manager_instance`` (in ``__all__``, "pymilvus
    integration"); 2.x has it only in ``milvus_lite.server_manager``. If a release renames it,
    this is the function to change.
    """
    try:
        import milvus_lite
    except ImportError:
        return None
    manager = getattr(milvus_lite, "server_manager_instance", None)
    if manager is None:  # milvus-lite 2.x: not exported at the top level
        try:
            from milvus_lite import server_manager
        except ImportError:
            return None
        manager = getattr(server_manager, "server_manager_instance", None)
    return manager
