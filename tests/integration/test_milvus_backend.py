"""The Milvus backend against a real milvus-lite database in tmp_path, through ``ingest``;
the tests marked ``ON_BOTH`` also against the session's real Milvus server (a fresh collection
each; not all of them: a collection there takes about 3 s to create, index and load)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from rag_pipeline.bookkeeping import record_manager  # noqa: E402
from rag_pipeline.config import Settings  # noqa: E402
from rag_pipeline.embeddings import HashingEmbeddings, build_embedding_model  # noqa: E402
from rag_pipeline.errors import (  # noqa: E402
    EmbeddingMismatchError,
    EmptyIndexError,
)
from rag_pipeline.indexing import IngestReport, ingest  # noqa: E402
from rag_pipeline.retrieval import build_retriever  # noqa: E402
from rag_pipeline.stores import VectorBackend, open_store  # noqa: E402
from rag_pipeline.stores import milvus as milvus_module  # noqa: E402
from rag_pipeline.stores.milvus import (  # noqa: E402
    MilvusBackend,
    MilvusVectorStore,
    metric_relevance,
    release_lite,
)
from rag_pipeline.testing.milvus_standalone import MilvusServer  # noqa: E402
from tests.helpers import STORE_CORPUS  # noqa: E402
from tests.integration.processes import run_python  # noqa: E402

# STORE_CORPUS: every file splits the same way each run; see tests/helpers.py.
CORPUS = {
    **STORE_CORPUS,
    "notes/o'brien warranty.txt": (
        "保修说明：家电类商品享受一年免费保修，人为损坏不在保修范围内。"
    ),
    "faq.csv": (
        "question,answer,alternatives\n"
        "怎么修改收货地址,在订单发货前可以在“我的订单”中修改收货地址。,地址填错了怎么办|能改地址吗\n"
        "支持哪些支付方式,支持微信支付、支付宝和银行卡。,可以用什么付款\n"
    ),
}
SPLIT = {"chunk_size": 80, "chunk_overlap": 0}


ON_BOTH = pytest.mark.parametrize("target", ["lite", "server"], indirect=True)


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Where the collection lives: a milvus-lite file (default) or, for ``ON_BOTH`` tests,
    the session's Milvus server (``uri`` and ``collection`` settings)."""
    if getattr(request, "param", "lite") == "lite":
        return {"uri": str(tmp_path / "m.db"), "collection": "test_docs"}
    server: MilvusServer = request.getfixturevalue("milvus_server")
    return {"uri": server.url, "collection": f"test_{uuid.uuid4().hex[:12]}"}


def milvus_settings(
    tmp_path: Path, target: dict[str, str] | None = None, **embeddings: Any
) -> Settings:
    where = target or {"uri": str(tmp_path / "m.db"), "collection": "test_docs"}
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", **embeddings},
        store={"backend": "milvus", **where},
        split=SPLIT,
    )


def write_corpus(folder: Path) -> Path:
    for name, text in CORPUS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def reopen(settings: Settings) -> VectorBackend:
    return open_store(settings, build_embedding_model(settings), create=False)


def ids_by_source(store: VectorBackend) -> dict[str, set[str]]:
    """Every chunk id per source, found through a filtered search per source."""
    return {
        source: {
            hit.document.id
            for hit in store.search(
                HashingEmbeddings(256).embed_query(source), 100, {"source": source}
            )
        }
        for source in (key.split("/", 1)[1] for key in store.sources())
    }


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def ingested(tmp_path: Path, corpus: Path, target: dict[str, str]) -> tuple[Settings, IngestReport]:
    settings = milvus_settings(tmp_path, target)
    return settings, ingest([corpus], settings)


@ON_BOTH
def test_first_ingest_stores_every_chunk(ingested: tuple[Settings, IngestReport]) -> None:
    settings, report = ingested
    assert report.files_failed == []
    assert report.files_ingested == len(CORPUS)
    n = report.chunks_added
    assert n > len(CORPUS)  # several files split into more than one chunk
    assert report.chunks_deleted == report.chunks_updated == report.chunks_unchanged == 0

    store = reopen(settings)
    assert isinstance(store, MilvusBackend)
    assert store.count() == n
    per_source = store.sources()
    assert set(per_source) == {f"corpus/{name}" for name in CORPUS}
    assert sum(per_source.values()) == n
    assert store.stored_fingerprint() == "fake:hashed-char-ngrams:256"
    assert store.namespace == f"milvus/{settings.store.uri}/{settings.store.collection}"
    # One record per chunk, under the backend's namespace.
    assert len(record_manager(settings, store.namespace).list_keys()) == n


def test_ingest_seals_what_it_wrote(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # milvus-lite brute-forces unsealed rows in the process that wrote them (p50 285 ms
    # against 19 ms at 10k chunks, bench-results/stores-milvus-10k-flushed.json), and its
    # describe_index reports them indexed anyway, so the flush calls themselves are checked.
    flushed: list[int] = []
    real_flush = MilvusBackend.flush

    def counting_flush(self: MilvusBackend) -> None:
        real_flush(self)
        flushed.append(self.count())

    monkeypatch.setattr(MilvusBackend, "flush", counting_flush)
    settings = milvus_settings(tmp_path)
    first = ingest([corpus], settings)
    assert flushed == [first.chunks_added] and first.chunks_added > 0
    ingest([corpus], settings)  # nothing changed: nothing to seal
    assert len(flushed) == 1


def test_reingest_adds_nothing(ingested: tuple[Settings, IngestReport], corpus: Path) -> None:
    settings, first = ingested
    again = ingest([corpus], settings)
    assert again.chunks_added == again.chunks_deleted == again.chunks_updated == 0
    assert again.chunks_unchanged == first.chunks_added
    assert reopen(settings).count() == first.chunks_added


def test_edited_file_replaces_exactly_its_chunks(
    ingested: tuple[Settings, IngestReport], corpus: Path
) -> None:
    settings, first = ingested
    n = first.chunks_added
    before = ids_by_source(reopen(settings))
    k = len(before["shipping.txt"])
    assert k >= 2

    path = corpus / "shipping.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("元", "块"), encoding="utf-8")
    report = ingest([corpus], settings)

    assert report.chunks_added == report.chunks_deleted == k
    assert report.chunks_unchanged == n - k
    store = reopen(settings)
    assert store.count() == n
    after = ids_by_source(store)
    assert after["shipping.txt"].isdisjoint(before["shipping.txt"])
    assert len(after["shipping.txt"]) == k
    assert {s: i for s, i in after.items() if s != "shipping.txt"} == {
        s: i for s, i in before.items() if s != "shipping.txt"
    }
    assert store.get(sorted(before["shipping.txt"])) == []
    assert all("块" in d.page_content for d in store.get(sorted(after["shipping.txt"])))


def test_deleted_file_removes_exactly_its_chunks(
    ingested: tuple[Settings, IngestReport], corpus: Path
) -> None:
    settings, first = ingested
    before = ids_by_source(reopen(settings))
    k = len(before["payment.md"])

    (corpus / "payment.md").unlink()
    report = ingest([corpus], settings)

    assert report.chunks_added == 0
    assert report.chunks_deleted == k
    store = reopen(settings)
    assert store.count() == first.chunks_added - k
    after = ids_by_source(store)
    assert "payment.md" not in after
    assert after == {s: i for s, i in before.items() if s != "payment.md"}


def test_retrieval_finds_a_chunk_first_with_score_near_one(
    ingested: tuple[Settings, IngestReport],
) -> None:
    settings, _ = ingested
    store = reopen(settings)
    embeddings = HashingEmbeddings(256)
    hits = store.search(embeddings.embed_query("退款时效"), 3)
    assert [h.relevance for h in hits] == sorted((h.relevance for h in hits), reverse=True)
    assert all(0.0 <= h.relevance <= 1.0 for h in hits)
    target = hits[0].document

    docs = build_retriever(settings, store, embeddings).invoke(target.page_content)
    assert docs[0].id == target.id
    assert docs[0].page_content == target.page_content
    assert docs[0].metadata["score"] == pytest.approx(1.0, abs=1e-3)
    assert docs[0].metadata["source"] == target.metadata["source"]


@ON_BOTH
def test_filters(ingested: tuple[Settings, IngestReport]) -> None:
    settings, _ = ingested
    store = reopen(settings)
    vector = HashingEmbeddings(256).embed_query("支付")
    per_source = store.sources()

    for source in ("faq.csv", "notes/o'brien warranty.txt"):
        hits = store.search(vector, 50, {"source": source})
        assert {h.document.metadata["source"] for h in hits} == {source}
        assert len(hits) == per_source[f"corpus/{source}"]

    # Several keys are ANDed; ints compare as ints.
    hits = store.search(vector, 50, {"source": "returns.md", "chunk_index": 0})
    assert [(h.document.metadata["source"], h.document.metadata["chunk_index"]) for h in hits] == [
        ("returns.md", 0)
    ]
    # Quotes and backslashes are data, not syntax.
    assert store.search(vector, 50, {"source": 'x" or source != "y\\'}) == []
    # A key no chunk has matches nothing (and is not an error).
    assert store.search(vector, 50, {"no_such_key": "x"}) == []
    # The retriever's configured filter reaches the store.
    faq = settings.model_copy(
        update={
            "retriever": settings.retriever.model_copy(
                update={"filter": {"source": "faq.csv"}, "score_threshold": None}
            )
        }
    )
    docs = build_retriever(faq, store, HashingEmbeddings(256)).invoke("支付")
    assert docs and {d.metadata["source"] for d in docs} == {"faq.csv"}


@ON_BOTH
def test_heterogeneous_metadata_round_trips_like_chroma(
    tmp_path: Path, ingested: tuple[Settings, IngestReport], corpus: Path
) -> None:
    """The same corpus in Chroma and in Milvus: same ids, texts and metadata (types included)."""
    settings, _ = ingested
    chroma = Settings(
        data_dir=tmp_path / "chroma-data", embeddings={"provider": "fake"}, split=SPLIT
    )
    ingest([corpus], chroma)
    stores = [reopen(settings), reopen(chroma)]
    keys = [
        sorted(record_manager(s, store.namespace).list_keys())
        for s, store in zip((settings, chroma), stores, strict=True)
    ]
    assert keys[0] == keys[1]
    milvus_docs, chroma_docs = (store.get(keys[0]) for store in stores)
    assert len(milvus_docs) == len(keys[0])
    for m, c in zip(milvus_docs, chroma_docs, strict=True):
        assert (m.id, m.page_content, m.metadata) == (c.id, c.page_content, c.metadata)
        assert {k: type(v) for k, v in m.metadata.items()} == {
            k: type(v) for k, v in c.metadata.items()
        }
    key_sets = {frozenset(d.metadata) for d in milvus_docs}
    assert len(key_sets) > 1  # FAQ rows and Markdown sections carry different keys


def test_other_embeddings_are_refused(
    ingested: tuple[Settings, IngestReport], corpus: Path, tmp_path: Path
) -> None:
    other = milvus_settings(tmp_path, dimensions=64)
    with pytest.raises(EmbeddingMismatchError) as info:
        reopen(other)
    assert info.value.stored == "fake:hashed-char-ngrams:256"
    assert info.value.configured == "fake:hashed-char-ngrams:64"
    with pytest.raises(EmbeddingMismatchError):
        ingest([corpus], other)


def test_rebuild_leaves_exactly_the_corpus(
    ingested: tuple[Settings, IngestReport], corpus: Path
) -> None:
    settings, first = ingested
    n = first.chunks_added
    report = ingest([corpus], settings, rebuild=True)
    assert report.chunks_added == n
    assert reopen(settings).count() == n
    assert ingest([corpus], settings).chunks_unchanged == n


def test_missing_collection_and_repeated_opening(tmp_path: Path, corpus: Path) -> None:
    settings = milvus_settings(tmp_path)
    with pytest.raises(EmptyIndexError):
        reopen(settings)
    n = ingest([corpus], settings).chunks_added
    for _ in range(3):
        store = reopen(settings)
        assert store.count() == n
        assert isinstance(store, MilvusBackend)
        store.close()
    # Default location: DATA_DIR/milvus.db.
    default = Settings(
        data_dir=tmp_path / "d2", embeddings={"provider": "fake"}, store={"backend": "milvus"}
    )
    with MilvusBackend(default, HashingEmbeddings(256)) as backend:
        assert backend.location == str(tmp_path / "d2" / "milvus.db")
        assert not backend.exists()


def test_module_imports_without_pymilvus() -> None:
    code = (
        "import sys, rag_pipeline.stores.milvus, rag_pipeline.stores; "
        "assert not [m for m in sys.modules if m.startswith(('pymilvus', 'langchain_milvus'))]"
    )
    done = run_python(["-c", code], timeout=120)
    assert done.returncode == 0, done.stderr


COUNT_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from rag_pipeline.config import Settings
from rag_pipeline.embeddings import build_embedding_model
from rag_pipeline.errors import StoreUnavailableError
from rag_pipeline.stores import open_store
tmp = Path(sys.argv[1])
store = {"backend": "milvus", "uri": str(tmp / "m.db"), "collection": "test_docs"}
settings = Settings(data_dir=tmp / "data", embeddings={"provider": "fake"}, store=store)
try:
    print(open_store(settings, build_embedding_model(settings), create=False).count())
except StoreUnavailableError as e:
    print("StoreUnavailableError:", e)
"""


def test_one_process_at_a_time(ingested: tuple[Settings, IngestReport], tmp_path: Path) -> None:
    """milvus-lite locks its database folder: another process gets a clear error until this
    one releases it."""
    _, first = ingested

    def count_elsewhere() -> str:
        done = run_python(["-c", COUNT_IN_ANOTHER_PROCESS, str(tmp_path)], timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    locked = count_elsewhere()
    assert locked.startswith("StoreUnavailableError:") and "one process at a time" in locked
    release_lite(tmp_path / "m.db")
    assert count_elsewhere() == str(first.chunks_added)


# -- MilvusVectorStore: the LangChain store over MilvusClient ----------------------------------


@pytest.fixture
def backend(tmp_path: Path, target: dict[str, str]) -> Iterator[MilvusBackend]:
    """An empty attached collection (256-dim hashing embeddings, cosine)."""
    settings = milvus_settings(tmp_path, target)
    with MilvusBackend(settings, HashingEmbeddings(256)) as opened:
        opened.create(settings, "fake:hashed-char-ngrams:256")
        opened.attach()
        yield opened


@pytest.fixture
def vstore(backend: MilvusBackend) -> MilvusVectorStore:
    assert isinstance(backend.vector_store, MilvusVectorStore)
    return backend.vector_store


@ON_BOTH  # a Milvus server keeps duplicate primary keys on insert: the reason for upsert
def test_store_upserts_instead_of_duplicating(
    backend: MilvusBackend, vstore: MilvusVectorStore
) -> None:
    assert vstore.add_texts(["运费说明", "退货政策"], ids=["a", "b"]) == ["a", "b"]
    assert vstore.add_documents([Document("运费已调整", id="a", metadata={"v": 2})]) == ["a"]
    assert backend.count() == 2
    (a,) = vstore.get_by_ids(["a"])
    assert (a.id, a.page_content, a.metadata) == ("a", "运费已调整", {"v": 2})


def test_store_ids_from_argument_document_or_uuid(vstore: MilvusVectorStore) -> None:
    docs = [Document("一", id="doc-1"), Document("二"), Document("三", id="doc-3")]
    ids = vstore.add_documents(docs)
    assert ids[0] == "doc-1" and ids[2] == "doc-3"
    assert str(uuid.UUID(ids[1])) == ids[1]  # a fresh uuid4 string for the one without an id
    # ids= wins over Document.id.
    assert vstore.add_documents([Document("四", id="ignored")], ids=["given"]) == ["given"]
    assert vstore.get_by_ids(["ignored"]) == []
    with pytest.raises(ValueError, match="ids"):
        vstore.add_texts(["x", "y"], ids=["only-one"])
    with pytest.raises(ValueError, match="metadatas"):
        vstore.add_texts(["x", "y"], [{}])


def test_store_get_by_ids_keeps_the_order_asked(vstore: MilvusVectorStore) -> None:
    vstore.add_texts(["甲", "乙", "丙"], ids=["a", "b", "c"])
    found = vstore.get_by_ids(["c", "missing", "a", "c"])
    assert [(d.id, d.page_content) for d in found] == [("c", "丙"), ("a", "甲")]
    assert vstore.get_by_ids([]) == []


def test_store_reserved_metadata_keys_round_trip(
    backend: MilvusBackend, vstore: MilvusVectorStore
) -> None:
    metadata = {"pk": "mine", "text": "说明", "vector": [1, 2], "source": "a.md"}
    vstore.add_texts(["正文"], [metadata], ids=["r"])
    (row,) = backend.client.get(backend.name, ids=["r"], output_fields=["*"])
    assert (row["pk"], row["text"], row["metadata_text"]) == ("r", "正文", "说明")
    (doc,) = vstore.get_by_ids(["r"])
    assert (doc.page_content, doc.metadata) == ("正文", metadata)
    (hit,) = vstore.similarity_search("正文", k=1)
    assert (hit.id, hit.metadata) == ("r", metadata)


def test_store_relevance_uses_the_mapping_it_was_given(
    backend: MilvusBackend, vstore: MilvusVectorStore
) -> None:
    vstore.add_texts(["七天无理由退货", "发票开具说明"], ids=["a", "b"])
    ((doc, score), (_, other)) = vstore.similarity_search_with_score("七天无理由退货", k=2)
    assert doc.id == "a" and score == pytest.approx(1.0, abs=1e-3) and other < score
    scored = vstore.similarity_search_with_relevance_scores("七天无理由退货", k=2)
    hits = backend.search(HashingEmbeddings(256).embed_query("七天无理由退货"), 2)
    assert [(d.id, pytest.approx(r)) for d, r in scored] == [
        (h.document.id, h.relevance) for h in hits
    ]
    above = vstore.similarity_search_with_relevance_scores(
        "七天无理由退货", k=2, score_threshold=0.99
    )
    assert [d.id for d, _ in above] == ["a"]

    halved = MilvusVectorStore(
        backend.client, backend.name, HashingEmbeddings(256), relevance=lambda s: s / 2
    )
    assert [r for _, r in halved.similarity_search_with_relevance_scores("七天无理由退货", 1)] == [
        pytest.approx(score / 2)
    ]


def test_metric_relevance_is_zero_to_one() -> None:
    cosine, l2 = metric_relevance("COSINE"), metric_relevance("L2")
    assert [cosine(s) for s in (-0.3, 0.4, 1.2)] == [0.0, 0.4, 1.0]
    assert [l2(d) for d in (0.0, 1.0, 2.0, 3.0)] == [1.0, 0.5, 0.0, 0.0]


def test_store_search_filters_and_vector_search(vstore: MilvusVectorStore) -> None:
    vstore.add_texts(
        ["运费 10 元", "运费 20 元", "退货 7 天"],
        [{"source": "a.md"}, {"source": "b.md"}, {"source": "a.md"}],
        ids=["1", "2", "3"],
    )
    assert {d.id for d in vstore.similarity_search("运费", k=5, filter={"source": "a.md"})} == {
        "1",
        "3",
    }
    assert [d.id for d in vstore.similarity_search("运费", k=5, filter='source == "b.md"')] == ["2"]
    content = vstore.similarity_search("运费", k=5, where_document={"$contains": "退货"})
    assert [d.id for d in content] == ["3"]
    vector = HashingEmbeddings(256).embed_query("运费 20 元")
    assert vstore.similarity_search_by_vector(vector, k=1)[0].id == "2"
    mmr = vstore.max_marginal_relevance_search("运费", k=2, fetch_k=3, lambda_mult=0.2)
    assert len({d.id for d in mmr}) == 2
    with pytest.raises(TypeError, match="expr"):
        vstore.similarity_search("运费", k=1, expr='source == "a.md"')


def test_store_writes_and_deletes_in_batches(
    backend: MilvusBackend, vstore: MilvusVectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    client = backend.client
    real_upsert, real_delete = client.upsert, client.delete

    def upsert(name: str, rows: list[dict[str, Any]], **kwargs: Any) -> Any:
        calls.append(("upsert", len(rows)))
        return real_upsert(name, rows, **kwargs)

    def delete(name: str, ids: list[str], **kwargs: Any) -> Any:
        calls.append(("delete", len(ids)))
        return real_delete(name, ids=ids, **kwargs)

    monkeypatch.setattr(client, "upsert", upsert)
    monkeypatch.setattr(client, "delete", delete)
    monkeypatch.setattr(milvus_module, "BATCH", 2)
    ids = vstore.add_texts([f"第{i}条" for i in range(5)], batch_size=2)
    assert calls == [("upsert", 2), ("upsert", 2), ("upsert", 1)]
    calls.clear()
    assert vstore.delete(ids=[*ids[:3], "never-stored"]) is True
    assert calls == [("delete", 2), ("delete", 2)]
    assert backend.count() == 2
    assert vstore.delete(ids=[]) is True
    with pytest.raises(ValueError, match="ids"):
        vstore.delete()


def test_store_from_texts_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="open_store"):
        MilvusVectorStore.from_texts(["x"], HashingEmbeddings(256))


async def test_store_async_methods(vstore: MilvusVectorStore) -> None:
    assert await vstore.aadd_texts(["运费说明"], ids=["a"]) == ["a"]
    assert [d.id for d in await vstore.aget_by_ids(["a"])] == ["a"]
    scored = await vstore.asimilarity_search_with_relevance_scores("运费说明", k=1)
    assert [(d.id, pytest.approx(r, abs=1e-3)) for d, r in scored] == [("a", 1.0)]
    assert await vstore.adelete(ids=["a"]) is True
    assert await vstore.asimilarity_search("运费说明", k=1) == []


def test_search_through_the_store_needs_no_langchain_milvus(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from rag_pipeline.config import Settings\n"
        "from rag_pipeline.embeddings import HashingEmbeddings\n"
        "from rag_pipeline.stores.milvus import MilvusBackend\n"
        "settings = Settings(data_dir=sys.argv[1], embeddings={'provider': 'fake'},\n"
        "                    store={'backend': 'milvus', 'uri': sys.argv[1] + '/m.db'})\n"
        "with MilvusBackend(settings, HashingEmbeddings(256)) as b:\n"
        "    b.create(settings, 'fake:hashed-char-ngrams:256')\n"
        "    b.attach()\n"
        "    b.vector_store.add_texts(['运费'], ids=['a'])\n"
        "    assert [d.id for d in b.vector_store.similarity_search('运费', k=1)] == ['a']\n"
        "assert 'langchain_milvus' not in sys.modules\n"
    )
    done = run_python(["-c", code, str(tmp_path)], timeout=120)
    assert done.returncode == 0, done.stderr


def test_release_lite_leaves_an_unopened_path_alone(tmp_path: Path) -> None:
    release_lite(tmp_path / "never-opened.db")  # no server for it: nothing to stop, no error
