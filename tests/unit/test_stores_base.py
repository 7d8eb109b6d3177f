"""The backend contract's shared parts: one relevance scale, records, default methods."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.documents import Document

from rag_pipeline.config import Settings
from rag_pipeline.stores.base import Hit, Record, VectorBackend, relevance_function


@pytest.mark.parametrize("space", ["cosine", "ip"])
def test_cosine_and_ip_distances_are_one_minus_similarity(space: str) -> None:
    relevance = relevance_function(space)
    assert relevance(0.0) == 1.0
    assert relevance(0.25) == pytest.approx(0.75)
    assert relevance(1.0) == 0.0
    assert relevance(1.6) == 0.0  # opposite vectors: clipped at 0
    assert relevance(-0.01) == 1.0  # rounding below 0 distance: clipped at 1


def test_squared_l2_maps_to_the_same_cosine() -> None:
    relevance = relevance_function("l2")
    for cos in (1.0, 0.9, 0.5, 0.0):
        squared_l2 = 2 - 2 * cos  # unit vectors
        assert relevance(squared_l2) == pytest.approx(cos)
    assert relevance(4.0) == 0.0 and relevance(-1e-9) == 1.0
    cosine = relevance_function("cosine")
    assert relevance(2 - 2 * 0.8) == pytest.approx(cosine(1 - 0.8))  # one scale for every metric


def test_a_record_gives_a_document_with_its_own_metadata() -> None:
    record = Record("id1", "文本", {"source": "a.md"}, [0.1, 0.2])
    doc = record.document()
    assert (doc.id, doc.page_content, doc.metadata) == ("id1", "文本", {"source": "a.md"})
    doc.metadata["score"] = 0.9
    assert record.metadata == {"source": "a.md"}  # a copy


class Minimal(VectorBackend):
    """The abstract methods only, to check what the base class provides."""

    def __init__(self) -> None:
        self.name, self.namespace, self.location = "kb", "x/kb", "somewhere"
        self.vector_store = DeletingStore()  # type: ignore[assignment]

    def count(self) -> int:
        return 7

    def stored_fingerprint(self) -> str | None:
        return "fake:m:8"

    def drop(self) -> None: ...

    def exists(self) -> bool:
        return True

    def create(self, settings: Settings, fingerprint: str) -> None: ...

    def attach(self) -> None: ...

    def search(self, vector: list[float], k: int, where: Any = None, **kw: Any) -> list[Hit]:
        return []

    def get(self, ids: list[str]) -> list[Document]:
        return []

    def sources(self) -> dict[str, int]:
        return {}

    def list_collections(self) -> list[str]:
        return []

    def peek(self, n: int) -> list[Document]:
        return []

    def rename(self, new_name: str) -> None: ...

    def scan(self, batch_size: int = 500) -> Iterator[list[Record]]:
        yield []

    def write(self, records: Sequence[Record]) -> None: ...


class DeletingStore:
    def __init__(self) -> None:
        self.deleted: list[list[str]] = []

    def delete(self, ids: list[str]) -> None:
        self.deleted.append(ids)


def test_the_contract_is_abstract() -> None:
    with pytest.raises(TypeError):
        VectorBackend()  # type: ignore[abstract]


def test_default_delete_skips_an_empty_list() -> None:
    backend = Minimal()
    backend.delete([])
    backend.delete(["a", "b"])
    assert backend.vector_store.deleted == [["a", "b"]]  # type: ignore[attr-defined]


def test_default_describe_flush_and_close() -> None:
    backend = Minimal()
    assert backend.describe() == {"location": "somewhere", "count": 7, "fingerprint": "fake:m:8"}
    assert backend.flush() is None and backend.close() is None


def test_hit_carries_relevance_and_an_optional_vector() -> None:
    hit = Hit(Document(page_content="x"), 0.5)
    assert hit.vector is None and math.isclose(hit.relevance, 0.5)
