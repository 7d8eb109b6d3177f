"""The Chroma backend: a persistent folder, an in-memory client, or a ``chroma run`` server.

>>> from rag_pipeline.config import Settings
>>> backend = ChromaBackend(Settings(store={"mode": "memory", "collection": "doc_example"}), None)
>>> backend.exists()
False
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag_pipeline.errors import CorruptDataError, StoreUnavailableError
from rag_pipeline.stores.base import (
    FINGERPRINT_KEY,
    SCAN_BATCH,
    Hit,
    Record,
    VectorBackend,
    group_of,
    relevance_function,
)
from rag_pipeline.stores.filters import Where, WhereDocument, to_chroma, to_chroma_document

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


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

    def index_settings(self) -> dict[str, Any]:
        with _quiet_configuration():
            configuration = self._collection.configuration or {}
        hnsw = dict(configuration.get("hnsw") or {})
        keys = ("space", "max_neighbors", "ef_construction", "ef_search")
        return {key: hnsw[key] for key in keys if hnsw.get(key) is not None}

    def set_ef_search(self, ef_search: int) -> None:
        with _quiet_configuration():
            self._collection.modify(configuration={"hnsw": {"ef_search": ef_search}})

    def count(self) -> int:
        return int(self._collection.count())

    def stored_fingerprint(self) -> str | None:
        value = (self._collection.metadata or {}).get(FINGERPRINT_KEY)
        return str(value) if value is not None else None

    def close(self) -> None:
        """Release this client's share of Chroma's per-folder system. The few folders used
        last stay open for the next client (see ``_keep_open``); the last client of any other
        folder frees its database and index files. An in-memory collection lives only as long
        as its system, so its client stays open."""
        if self._mode != "memory" and self.client is not None:
            self.client.close()
            self.client = None
            self._collection = None
            self.vector_store = None  # type: ignore[assignment]

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
        where: Where | None = None,
        *,
        with_vectors: bool = False,
        where_document: WhereDocument | None = None,
    ) -> list[Hit]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if with_vectors else [])
        result = self._collection.query(
            query_embeddings=[vector],
            n_results=k,
            where=to_chroma(where),
            where_document=to_chroma_document(where_document),
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

    def delete(self, ids: list[str]) -> None:
        # Through the collection, not the LangChain store: housekeeping opens no store.
        limit = max(1, int(self.client.get_max_batch_size()))
        for start in range(0, len(ids), limit):
            self._collection.delete(ids=ids[start : start + limit])

    def find_ids(self, where: Where) -> list[str]:
        found: list[str] = []
        offset, page = 0, 5000
        while True:
            got = self._collection.get(
                where=to_chroma(where), include=[], limit=page, offset=offset
            )
            found.extend(got["ids"])
            if len(got["ids"]) < page:
                return found
            offset += page

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
                source = group_of(dict(meta or {})) or "?"
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


@contextmanager
def _quiet_configuration() -> Iterator[None]:
    """Chroma warns about the stored configuration of collections made without an embedding
    function (ours: the vectors come from our Embeddings); there is nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "legacy embedding function", DeprecationWarning)
        yield


# Starting Chroma's engine on a folder takes 0.1-0.2 s, so the folders used last keep one
# client of ours open (the next ingest, assistant or verify on them starts at once); beyond
# that many, a folder's files close with its last client, so a process that works on many data
# folders keeps a bounded number open.
KEEP_OPEN_FOLDERS = 4
_kept_open: OrderedDict[str, Any] = OrderedDict()
_kept_open_lock = threading.Lock()


def _keep_open(path: str, new_client: Callable[[], Any]) -> None:
    with _kept_open_lock:
        if path in _kept_open:
            _kept_open.move_to_end(path)
            return
        _kept_open[path] = new_client()  # shares the folder's engine with the caller's client
        while len(_kept_open) > KEEP_OPEN_FOLDERS:
            _, oldest = _kept_open.popitem(last=False)
            oldest.close()


def _chroma_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    cfg = settings.store
    # Telemetry off: the package must never reach the network on its own.
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if cfg.mode == "persistent":
        from chromadb.errors import ChromaError

        from rag_pipeline.datafolder import ensure_data_dir

        ensure_data_dir(settings)
        import filelock

        try:
            settings.chroma_dir.mkdir(exist_ok=True)
            # Chroma creates its database schema on the first open and two processes doing
            # that at once can fail ("table collections already exists"): opens of one folder
            # take turns (a fraction of a second each).
            opening = filelock.FileLock(str(settings.data_dir / "chroma-open.lock"), timeout=60)
            path = str(settings.chroma_dir)

            def new_client() -> Any:
                return chromadb.PersistentClient(path=path, settings=chroma_settings)

            with opening:
                client = new_client()
                _keep_open(path, new_client)
                return client
        except (ChromaError, OSError, ValueError, AttributeError) as e:
            # A damaged file shows as a ChromaError in a fresh process; where this process
            # had the folder open before, Chroma's engine fails later (ValueError) and its
            # clean-up then raises AttributeError (chromadb 1.5).
            raise CorruptDataError(
                f"cannot open the Chroma folder {settings.chroma_dir} ({type(e).__name__}: "
                f"{e}): if a file in it was damaged, restore the folder from a backup, or move "
                "it away and rebuild with `rag ingest --rebuild FOLDER`"
            ) from e
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
        raise StoreUnavailableError(
            f"cannot reach the Chroma server at {scheme}://{cfg.host}:{cfg.port} "
            f"({type(e).__name__}): start one with `chroma run --path DIR --port {cfg.port}` "
            "or fix RAG_STORE__HOST / RAG_STORE__PORT"
        ) from e
