"""The backend contract: what every vector store of this package offers the pipeline.

Every backend exposes the LangChain ``VectorStore`` (``.vector_store``) plus what the pipeline
needs around it: the embedding fingerprint recorded in the collection, counts, deletion, search
with scores normalised to one 0..1 relevance (cosine similarity clipped at 0) whatever the
index metric, metadata filters (``where``) and content filters (``where_document``) in the one
grammar of ``rag_pipeline.stores.filters``, and the collection housekeeping behind
``rag collections`` and ``rag migrate`` (list, peek, rename, raw reads and writes of vectors).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore

from rag_pipeline.stores.filters import Where, WhereDocument, check_where, matches

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

FINGERPRINT_KEY = "rag_fingerprint"
SCAN_BATCH = 500


def source_key(label: str, source: str) -> str:
    """The record-manager group and manifest key of one file: ``LABEL/SOURCE``."""
    return f"{label}/{source}"


def group_of(metadata: dict[str, object]) -> str | None:
    """The source key of a chunk from its metadata (``root`` label + ``source``); chunks of a
    collection written before roots existed have no ``root`` and are grouped by source."""
    source = metadata.get("source")
    if source is None:
        return None
    root = metadata.get("root")
    return source_key(str(root), str(source)) if root else str(source)


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


def relevance_function(space: str) -> Callable[[float], float]:
    """Map a backend distance to relevance in 0..1 (cosine similarity of unit vectors, >= 0).

    Chroma distances: cosine = 1 - cos, ip = 1 - dot, l2 = squared euclidean = 2 - 2 cos.
    """
    if space == "l2":
        return lambda d: max(0.0, min(1.0, 1.0 - d / 2.0))
    return lambda d: max(0.0, min(1.0, 1.0 - d))


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
        where: Where | None = None,
        *,
        with_vectors: bool = False,
        where_document: WhereDocument | None = None,
    ) -> list[Hit]:
        """Top-k chunks for a query vector, best first, relevance in 0..1.

        ``where`` filters on metadata, ``where_document`` on the chunk text (see
        ``rag_pipeline.stores.filters``); both apply before the top-k cut.
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

    def find_ids(self, where: Where) -> list[str]:
        """Ids of every chunk whose metadata matches ``where`` (the one filter grammar).

        Shared implementation: a scan evaluated with ``filters.matches``; a backend whose
        database filters natively overrides it."""
        checked = check_where(where)
        return [
            record.id
            for batch in self.scan()
            for record in batch
            if matches(record.metadata, checked)
        ]

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.vector_store.delete(ids=ids)

    def index_settings(self) -> dict[str, Any]:
        """The index parameters the collection was built with: ``space`` and, where the
        backend exposes them, ``max_neighbors``, ``ef_construction``, ``ef_search``. Empty
        when unknown."""
        return {}

    def set_ef_search(self, ef_search: int) -> None:  # noqa: B027 - optional hook
        """Change the search-time candidate list size in place (where it is stored)."""

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
