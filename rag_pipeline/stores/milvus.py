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

Nothing here imports ``pymilvus`` or ``langchain_milvus`` until a backend is built; without the
``milvus`` extra that raises ``MissingExtraError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag_pipeline.batching import batched
from rag_pipeline.errors import ConfigurationError, MissingExtraError, StoreUnavailableError
from rag_pipeline.stores.base import (
    FINGERPRINT_KEY,
    SCAN_BATCH,
    Hit,
    Record,
    VectorBackend,
    relevance_function,
)
from rag_pipeline.stores.filters import Where, WhereDocument, to_milvus, to_milvus_document

if TYPE_CHECKING:
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
# The LangChain vector store: langchain_milvus.Milvus with upserts and our relevance
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
    return [i if i else str(uuid.uuid4()) for i in given]


@cache
def milvus_store_class() -> type:
    """``langchain_milvus.Milvus`` adapted to this package (built on first use).

    - ``add_documents(docs, ids=...)`` upserts: re-adding an id replaces the chunk instead of
      storing a duplicate (a Milvus server does not deduplicate primary keys on insert);
    - ids come from ``ids=``, else from ``Document.id``, else fresh uuid4 strings (upstream
      switches to ``auto_id``, which our string primary key cannot take);
    - found documents carry their id in ``Document.id`` (not ``metadata["pk"]``), and
      ``get_by_ids`` works;
    - ``delete(ids=...)`` lets pymilvus quote the ids;
    - relevance scores use the backend's 0..1 mapping (``_rag_relevance``).
    The async methods behave the same through pymilvus' async client.
    """
    try:
        from langchain_milvus import Milvus
    except ImportError as e:
        raise _missing(e) from e

    class RagMilvus(Milvus):  # type: ignore[misc]
        _rag_relevance: Callable[[float], float] | None = None

        def _select_relevance_score_fn(self) -> Callable[[float], float]:
            if self._rag_relevance is not None:
                return self._rag_relevance
            return super()._select_relevance_score_fn()  # type: ignore[no-any-return]

        def add_embeddings(
            self,
            texts: list[str],
            embeddings: list[list[float]] | list[list[list[float]]],
            metadatas: list[dict] | None = None,
            timeout: float | None = None,
            batch_size: int = BATCH,
            *,
            ids: list[str] | None = None,
            **kwargs: Any,
        ) -> list[str]:
            if self.auto_id or not ids or self._is_multi_embedding:
                return super().add_embeddings(  # type: ignore[no-any-return]
                    texts,
                    embeddings,
                    metadatas,
                    timeout,
                    batch_size,
                    ids=ids,
                    **kwargs,
                )
            column = cast("list[list[float]]", list(embeddings))
            rows = self._prepare_insert_list(
                texts=list(texts),
                embeddings=[column],  # field-wise: one column per vector field
                metadatas=[_clean_metadata(m) for m in metadatas] if metadatas else None,
                ids=list(ids),
                force_ids=True,
            )
            for start in range(0, len(rows), batch_size):
                self.client.upsert(
                    self.collection_name,
                    rows[start : start + batch_size],
                    timeout=self.timeout or timeout,
                    **kwargs,
                )
            return list(ids)

        def delete(
            self, ids: list[str] | None = None, expr: str | None = None, **kwargs: Any
        ) -> bool | None:
            if not ids:
                return super().delete(ids=ids, expr=expr, **kwargs)  # type: ignore[no-any-return]
            for batch in batched(ids, BATCH):
                self.client.delete(self.collection_name, ids=list(batch), **kwargs)
            return True

        def add_texts(
            self,
            texts: Any,
            metadatas: list[dict] | None = None,
            timeout: float | None = None,
            batch_size: int = BATCH,
            *,
            ids: list[str] | None = None,
            **kwargs: Any,
        ) -> list[str]:
            texts = list(texts)
            if not self.auto_id:
                ids = _fill_ids(ids, len(texts))
            return super().add_texts(  # type: ignore[no-any-return]
                texts, metadatas, timeout, batch_size, ids=ids, **kwargs
            )

        def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
            if kwargs.get("ids") is None:
                kwargs["ids"] = [doc.id for doc in documents]
            return self.add_texts(
                [doc.page_content for doc in documents],
                [doc.metadata for doc in documents],
                **kwargs,
            )

        def _parse_document(self, data: dict) -> Document:
            id_ = data.pop(self._primary_field, None)
            document = super()._parse_document(data)
            document.metadata = _restore_metadata(document.metadata)
            document.id = str(id_) if id_ is not None else None
            return document  # type: ignore[no-any-return]

        def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
            found: list[Document] = []
            for batch in batched(list(ids), BATCH):
                rows = self.client.get(
                    self.collection_name, ids=list(batch), output_fields=[TEXT_FIELD, "$meta"]
                )
                found.extend(self._parse_document(dict(row)) for row in rows)
            return found

        async def aadd_texts(
            self,
            texts: Any,
            metadatas: list[dict] | None = None,
            timeout: float | None = None,
            batch_size: int = BATCH,
            *,
            ids: list[str] | None = None,
            **kwargs: Any,
        ) -> list[str]:
            texts = list(texts)
            if not self.auto_id:
                ids = _fill_ids(ids, len(texts))
            return await super().aadd_texts(  # type: ignore[no-any-return]
                texts, metadatas, timeout, batch_size, ids=ids, **kwargs
            )

        async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
            if kwargs.get("ids") is None:
                kwargs["ids"] = [doc.id for doc in documents]
            return await self.aadd_texts(
                [doc.page_content for doc in documents],
                [doc.metadata for doc in documents],
                **kwargs,
            )

        async def aadd_embeddings(
            self,
            texts: list[str],
            embeddings: list[list[float]] | list[list[list[float]]],
            metadatas: list[dict] | None = None,
            timeout: float | None = None,
            batch_size: int = BATCH,
            *,
            ids: list[str] | None = None,
            **kwargs: Any,
        ) -> list[str]:
            if self.auto_id or not ids or self._is_multi_embedding:
                return await super().aadd_embeddings(  # type: ignore[no-any-return]
                    texts, embeddings, metadatas, timeout, batch_size, ids=ids, **kwargs
                )
            column = cast("list[list[float]]", list(embeddings))
            rows = self._prepare_insert_list(
                texts=list(texts),
                embeddings=[column],
                metadatas=[_clean_metadata(m) for m in metadatas] if metadatas else None,
                ids=list(ids),
                force_ids=True,
            )
            for start in range(0, len(rows), batch_size):
                await self.aclient.upsert(
                    self.collection_name,
                    rows[start : start + batch_size],
                    timeout=self.timeout or timeout,
                    **kwargs,
                )
            return list(ids)

        async def adelete(
            self, ids: list[str] | None = None, expr: str | None = None, **kwargs: Any
        ) -> bool | None:
            if not ids:
                return await super().adelete(  # type: ignore[no-any-return]
                    ids=ids, expr=expr, **kwargs
                )
            for batch in batched(ids, BATCH):
                await self.aclient.delete(self.collection_name, ids=list(batch), **kwargs)
            return True

        async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
            found: list[Document] = []
            for batch in batched(list(ids), BATCH):
                rows = await self.aclient.get(
                    self.collection_name, ids=list(batch), output_fields=[TEXT_FIELD, "$meta"]
                )
                found.extend(self._parse_document(dict(row)) for row in rows)
            return found

    return RagMilvus


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
        """Close this backend's clients (the milvus-lite server itself stays up: see
        ``release_lite``)."""
        store: Any = self.vector_store
        if store is not None:
            store.client.close()
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
        store = milvus_store_class()(
            embedding_function=self._embedding_function,
            collection_name=self.name,
            connection_args={"uri": self.uri, "token": self._token},
            consistency_level="Strong",
            search_params={"metric_type": self._metric, "params": self._search_params(4)},
            primary_field=PK_FIELD,
            text_field=TEXT_FIELD,
            vector_field=VECTOR_FIELD,
            enable_dynamic_field=True,
            auto_id=False,
        )  # also loads the collection (a reopened milvus-lite collection starts released)
        store._rag_relevance = self._relevance
        self.vector_store = store

    def count(self) -> int:
        self._ready()
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stored_fingerprint(self) -> str | None:
        properties = self.client.describe_collection(self.name).get("properties") or {}
        value = properties.get(FINGERPRINT_KEY)
        return str(value) if value is not None else None

    def flush(self) -> None:
        """Seal what was written. milvus-lite searches unsealed (growing) data by brute force:
        at 10k chunks about 250 ms a query before a flush, about 35 ms after it."""
        if self.exists():
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
        output = [TEXT_FIELD, "$meta"] + ([VECTOR_FIELD] if with_vectors else [])
        result = self.client.search(
            self.name,
            data=[vector],
            anns_field=VECTOR_FIELD,
            limit=k,
            filter=milvus_filter(where, where_document),
            output_fields=output,
            search_params={"metric_type": self._metric, "params": self._search_params(k)},
        )
        hits = []
        for hit in result[0] if result else []:
            entity = dict(hit["entity"])
            vec = entity.pop(VECTOR_FIELD, None)
            document = self._document(hit.get(PK_FIELD, getattr(hit, "id", None)), entity)
            hits.append(
                Hit(
                    document,
                    self._relevance(float(hit["distance"])),
                    [float(v) for v in vec] if with_vectors and vec is not None else None,
                )
            )
        return hits

    def get(self, ids: list[str]) -> list[Document]:
        self._ready()
        by_id: dict[str, Document] = {}
        for batch in batched(ids, BATCH):
            for row in self.client.get(
                self.name, ids=list(batch), output_fields=[TEXT_FIELD, "$meta"]
            ):
                row = dict(row)
                by_id[row[PK_FIELD]] = self._document(row[PK_FIELD], row)
        return [by_id[i] for i in ids if i in by_id]

    def sources(self) -> dict[str, int]:
        self._ready()
        counts: dict[str, int] = {}
        for row in self._scan(["source"]):
            value = row.get("source")
            source = "?" if value is None else str(value)
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
        return [self._document(row[PK_FIELD], dict(row)) for row in rows]

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
                document = self._document(id_, row)
                records.append(Record(id_, document.page_content, document.metadata, vector))
            yield records

    def write(self, records: Sequence[Record]) -> None:
        self._ready()
        rows = [
            {
                **_clean_metadata(r.metadata),
                PK_FIELD: r.id,
                TEXT_FIELD: r.text,
                VECTOR_FIELD: list(r.vector),
            }
            for r in records
        ]
        for start in range(0, len(rows), BATCH):
            self.client.upsert(self.name, rows[start : start + BATCH])

    # -- helpers -----------------------------------------------------------------------------

    def _relevance(self, score: float) -> float:
        """Milvus COSINE/IP return a similarity (higher = closer), L2 a squared distance."""
        if self._metric == "L2":
            return relevance_function("l2")(score)
        return max(0.0, min(1.0, score))

    def _search_params(self, k: int) -> dict[str, Any]:
        return {"ef": max(self._ef_search, k)}  # HNSW needs ef >= k; others ignore it

    def _vector_index(self) -> dict[str, Any] | None:
        names = self.client.list_indexes(self.name, field_name=VECTOR_FIELD)
        if not names:
            return None
        return dict(self.client.describe_index(self.name, names[0]))

    def _document(self, id_: Any, entity: dict[str, Any]) -> Document:
        entity = dict(entity)
        text = entity.pop(TEXT_FIELD, "")
        entity.pop(PK_FIELD, None)
        entity.pop(VECTOR_FIELD, None)
        entity.pop("$meta", None)
        return Document(id=str(id_), page_content=text or "", metadata=_restore_metadata(entity))

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
    process can open the database. Clients still connected to it stop working."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(str(Path(path).expanduser()))
