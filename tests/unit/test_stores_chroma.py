"""The Chroma backend on an in-memory client (no network, no folder): the whole contract."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import HashingEmbeddings
from rag_pipeline.stores.base import Record
from rag_pipeline.stores.chroma import ChromaBackend

DIM = 64
EMB = HashingEmbeddings(DIM)
TEXTS = {
    "r1": ("签收后7天内可申请无理由退货。", {"source": "returns.md", "page": 1}),
    "r2": ("退货运费由买家承担，质量问题除外。", {"source": "returns.md", "page": 2}),
    "s1": ("订单满99元包邮，不满99元收取运费8元。", {"source": "shipping.txt"}),
    "p1": ("支持微信支付、支付宝和银行卡。", {"source": "payment.md"}),
}


def _settings(tmp_path: Path, space: str = "cosine") -> Settings:
    # In-memory clients of one process share their collections: a fresh name per test.
    name = f"t_{uuid.uuid4().hex[:16]}"
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "dimensions": DIM},
        store={"mode": "memory", "collection": name, "space": space},
    )


def _records() -> list[Record]:
    vectors = EMB.embed_documents([text for text, _ in TEXTS.values()])
    return [
        Record(id_, text, dict(meta), vector)
        for (id_, (text, meta)), vector in zip(TEXTS.items(), vectors, strict=True)
    ]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ChromaBackend]:
    settings = _settings(tmp_path)
    backend = ChromaBackend(settings, EMB)
    backend.create(settings, f"fake:hashed-char-ngrams:{DIM}")
    backend.write(_records())
    yield backend
    backend.drop()


def test_a_new_backend_has_no_collection_and_touches_no_folder(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    backend = ChromaBackend(settings, None)
    assert not backend.exists()
    assert backend.location == "memory"
    assert backend.namespace == f"chroma/memory/{settings.store.collection}"
    assert not (tmp_path / "data").exists()


def test_create_records_the_fingerprint(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    backend = ChromaBackend(settings, None)
    backend.create(settings, "fake:hashed-char-ngrams:64")
    again = ChromaBackend(settings, None)
    assert again.exists() and again.stored_fingerprint() == "fake:hashed-char-ngrams:64"
    assert again.count() == 0
    assert settings.store.collection in again.list_collections()
    again.drop()
    assert not ChromaBackend(settings, None).exists()
    again.drop()  # dropping a missing collection is fine


def test_search_finds_the_identical_text_with_relevance_one(backend: ChromaBackend) -> None:
    hits = backend.search(EMB.embed_query(TEXTS["s1"][0]), 2)
    assert hits[0].document.id == "s1" and hits[0].relevance == pytest.approx(1.0, abs=1e-4)
    assert hits[0].document.page_content == TEXTS["s1"][0]
    assert hits[0].document.metadata == {"source": "shipping.txt"}
    assert hits[0].vector is None
    assert 0.0 <= hits[1].relevance < hits[0].relevance


def test_search_with_vectors_returns_the_stored_ones(backend: ChromaBackend) -> None:
    (hit,) = backend.search(EMB.embed_query(TEXTS["p1"][0]), 1, with_vectors=True)
    assert hit.vector == pytest.approx(EMB.embed_documents([TEXTS["p1"][0]])[0], abs=1e-6)


def test_metadata_and_content_filters_apply_before_k(backend: ChromaBackend) -> None:
    query = EMB.embed_query("运费")
    hits = backend.search(query, 1, {"source": "returns.md"})
    assert [h.document.id for h in hits] in (["r1"], ["r2"])
    hits = backend.search(query, 4, {"page": {"$gte": 2}})
    assert [h.document.id for h in hits] == ["r2"]
    hits = backend.search(query, 4, where_document={"$contains": "运费"})
    assert {h.document.id for h in hits} == {"r2", "s1"}
    hits = backend.search(
        query, 4, {"source": "returns.md"}, where_document={"$not_contains": "运费"}
    )
    assert [h.document.id for h in hits] == ["r1"]


def test_get_sources_and_peek(backend: ChromaBackend) -> None:
    assert [d.id for d in backend.get(["p1", "missing", "r1"])] == ["p1", "r1"]
    assert backend.get([]) == []
    assert backend.sources() == {"payment.md": 1, "returns.md": 2, "shipping.txt": 1}
    assert backend.count() == 4
    assert len(backend.peek(3)) == 3 and backend.peek(0) == []


def test_write_upserts_by_id(backend: ChromaBackend) -> None:
    vector = EMB.embed_documents(["新的文本"])[0]
    backend.write([Record("p1", "新的文本", {"source": "payment.md"}, vector)])
    assert backend.count() == 4
    assert backend.get(["p1"])[0].page_content == "新的文本"
    backend.write([])  # nothing to do


def test_scan_reads_every_record_in_batches(backend: ChromaBackend) -> None:
    batches = list(backend.scan(batch_size=3))
    assert [len(b) for b in batches] == [3, 1]
    records = {r.id: r for batch in batches for r in batch}
    assert set(records) == set(TEXTS)
    original = {r.id: r for r in _records()}
    assert records["s1"].text == original["s1"].text
    assert records["s1"].vector == pytest.approx(original["s1"].vector, abs=1e-6)


def test_delete_and_the_langchain_vector_store(backend: ChromaBackend) -> None:
    backend.attach()
    docs = backend.vector_store.similarity_search("包邮", k=1)
    assert docs[0].id == "s1"
    backend.delete(["s1"])
    backend.delete([])
    assert backend.count() == 3 and backend.get(["s1"]) == []


def test_rename_moves_name_and_namespace(backend: ChromaBackend) -> None:
    old = backend.name
    new = f"{old}_renamed"
    backend.rename(new)
    assert backend.name == new and backend.namespace == f"chroma/memory/{new}"
    assert backend.vector_store is None  # attach again to search
    names = backend.list_collections()
    assert new in names and old not in names
    assert backend.count() == 4


def test_l2_space_gives_the_same_relevance_scale(tmp_path: Path) -> None:
    settings = _settings(tmp_path, space="l2")
    backend = ChromaBackend(settings, EMB)
    backend.create(settings, "fake:hashed-char-ngrams:64")
    backend.write(_records())
    try:
        hits = backend.search(EMB.embed_query(TEXTS["r1"][0]), 4)
        assert hits[0].document.id == "r1" and hits[0].relevance == pytest.approx(1.0, abs=1e-4)
        assert all(0.0 <= h.relevance <= 1.0 for h in hits)
    finally:
        backend.drop()


def test_describe(backend: ChromaBackend) -> None:
    assert backend.describe() == {
        "location": "memory",
        "count": 4,
        "fingerprint": f"fake:hashed-char-ngrams:{DIM}",
    }
