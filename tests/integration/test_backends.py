"""One contract, every store: the same tests over Chroma (persistent, in-memory, a real
``chroma run`` server), milvus-lite and a real Milvus standalone server, each against real data
in tmp_path (the servers' collections: fresh names).

Each backend goes through ingest (incremental, exact replacement and pruning, ids as computed),
answering with and without metadata and content filters, ``rag info``, the embedding
fingerprint guard and ``rag collections``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.indexing.api import _get_document_with_hash

from rag_pipeline.assistant import Assistant
from rag_pipeline.bookkeeping import Bookkeeping, SourceManifest, record_manager
from rag_pipeline.config import Settings
from rag_pipeline.embeddings import HashingEmbeddings, build_embedding_model
from rag_pipeline.errors import ConfigurationError, EmbeddingMismatchError
from rag_pipeline.indexing import ingest
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.loading import discover, load_file
from rag_pipeline.splitting import split_documents
from rag_pipeline.state_db import state_engine
from rag_pipeline.stores import VectorBackend, connect, open_store
from rag_pipeline.stores.milvus import is_server_uri
from rag_pipeline.testing.chroma import ChromaServer
from rag_pipeline.testing.milvus_standalone import MilvusServer
from tests.helpers import SMALL_CORPUS, counting_model, run_cli, use_env, write_corpus

BACKENDS = ["chroma-persistent", "chroma-memory", "chroma-http", "milvus-lite", "milvus-server"]
SPLIT = {"chunk_size": 80, "chunk_overlap": 0}
CORPUS = {
    **SMALL_CORPUS,
    # Wildcards of SQL LIKE in the text: a content filter must match them literally.
    "promo.txt": "会员活动：全场商品享受50%折扣，优惠码 VIP_2024 限时有效，运费另计。",
}


@pytest.fixture(scope="module")
def server(chroma_server: ChromaServer) -> ChromaServer:
    return chroma_server  # the plugin's, shared by the session: tests use fresh collections


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Fake embeddings, the extractive model, no relevance threshold, one backend."""
    unique = f"c_{uuid.uuid4().hex[:10]}"  # in-process / shared-server stores: fresh names
    store: dict[str, Any]
    if request.param == "chroma-persistent":
        store = {"mode": "persistent"}
    elif request.param == "chroma-memory":
        store = {"mode": "memory", "collection": unique}
    elif request.param == "chroma-http":
        server: ChromaServer = request.getfixturevalue("server")
        store = {"mode": "http", "host": server.host, "port": server.port, "collection": unique}
    elif request.param == "milvus-server":
        pytest.importorskip("pymilvus")
        milvus: MilvusServer = request.getfixturevalue("milvus_server")  # the session's
        store = {"backend": "milvus", "uri": milvus.url, "collection": unique}
    else:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        store = {"backend": "milvus", "uri": str(tmp_path / "milvus.db")}
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "cache": False},
        store=store,
        split=SPLIT,
        retriever={"score_threshold": None},
        llm={"provider": "extractive"},
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus", CORPUS)


def with_retriever(settings: Settings, **changes: Any) -> Settings:
    retriever = settings.retriever.model_copy(update=changes)
    return settings.model_copy(update={"retriever": retriever})


def expected_ids(corpus: Path, settings: Settings) -> dict[str, set[str]]:
    """Chunk ids per source as ingest must compute them: LangChain's sha256 of each chunk."""
    ids: dict[str, set[str]] = {}
    for file in discover([corpus]).files:
        for chunk in split_documents(load_file(file), settings.split):
            chunk.metadata["root"] = corpus.name  # the folder's label (the first of its name)
            hashed = _get_document_with_hash(chunk, key_encoder="sha256")
            ids.setdefault(file.source, set()).add(str(hashed.id))
    return ids


def stored(settings: Settings) -> dict[str, dict[str, str]]:
    """Every stored chunk's text, by source and id (read through ``scan``)."""
    backend = connect(settings)
    try:
        assert backend.exists()
        by_source: dict[str, dict[str, str]] = {}
        seen = 0
        for batch in backend.scan(batch_size=4):  # several batches even for a small corpus
            for record in batch:
                assert len(record.vector) == 256
                by_source.setdefault(record.metadata["source"], {})[record.id] = record.text
                seen += 1
        assert seen == backend.count() == sum(len(v) for v in by_source.values())  # no dupes
        return by_source
    finally:
        backend.close()


def stored_ids(settings: Settings) -> dict[str, set[str]]:
    return {source: set(chunks) for source, chunks in stored(settings).items()}


def reopen(settings: Settings) -> VectorBackend:
    return open_store(settings, build_embedding_model(settings), create=False)


def test_incremental_ingest_is_exact(settings: Settings, corpus: Path) -> None:
    model, counter = counting_model()
    first = ingest([corpus], settings, model=model)
    expected = expected_ids(corpus, settings)
    total = sum(len(ids) for ids in expected.values())
    assert first.files_failed == [] and first.files_ingested == len(CORPUS)
    assert first.chunks_added == counter.documents_embedded == total
    assert stored_ids(settings) == expected
    assert any(len(ids) > 1 for ids in expected.values())

    counter.documents_embedded = 0
    second = ingest([corpus], settings, model=model)
    assert counter.documents_embedded == 0
    assert (second.chunks_added, second.chunks_deleted, second.chunks_unchanged) == (0, 0, total)

    shipping = corpus / "shipping.txt"
    shipping.write_text(shipping.read_text(encoding="utf-8").replace("元", "块"), "utf-8")
    (corpus / "returns.md").unlink()
    third = ingest([corpus], settings, model=model)
    after = expected_ids(corpus, settings)
    assert after["shipping.txt"].isdisjoint(expected["shipping.txt"])
    assert third.chunks_added == counter.documents_embedded == len(after["shipping.txt"])
    assert third.chunks_deleted == len(expected["shipping.txt"]) + len(expected["returns.md"])
    assert stored_ids(settings) == after
    assert {s: after[s] for s in ("faq.csv", "promo.txt")} == {
        s: expected[s] for s in ("faq.csv", "promo.txt")
    }
    # Record manager and keyword index hold exactly the stored chunks.
    store = reopen(settings)
    everything = set().union(*after.values())
    assert set(record_manager(settings, store.namespace).list_keys()) == everything
    assert KeywordIndex(settings.state_location, store.namespace).ids() == everything
    store.close()


def test_answers_respect_metadata_filters(settings: Settings, corpus: Path) -> None:
    ingest([corpus], settings)
    answer = Assistant.from_settings(settings).ask("运费怎么算")
    assert not answer.refused
    assert "shipping.txt" in {s.source for s in answer.sources}

    only_returns = with_retriever(settings, filter={"source": "returns.md"})
    answer = Assistant.from_settings(only_returns).ask("运费怎么算")
    assert not answer.refused and answer.context
    assert {s.source for s in answer.context} == {"returns.md"}
    assert {s.source for s in answer.sources} <= {"returns.md"}


def lacks_infix_like(settings: Settings) -> bool:
    """Whether the store is the embedded Milvus server: 2.3 (the [milvus-server] extra pins
    <2.4), whose LIKE matches prefixes only, so content filters are refused there."""
    return settings.store.backend == "milvus" and is_server_uri(settings.store.uri or "")


# Not on the Milvus 2.3 server: it has no infix LIKE (test_content_filters_need_milvus_2_4
# checks the error it gives instead).
@pytest.mark.parametrize("settings", [b for b in BACKENDS if b != "milvus-server"], indirect=True)
def test_content_filters(settings: Settings, corpus: Path) -> None:
    ingest([corpus], settings)
    texts = {i: t for chunks in stored(settings).values() for i, t in chunks.items()}
    store = reopen(settings)
    vector = HashingEmbeddings(256).embed_query("运费")

    def found(where_document: dict[str, Any], where: dict[str, Any] | None = None) -> set[str]:
        hits = store.search(vector, 100, where, where_document=where_document)
        return {str(h.document.id) for h in hits}

    def having(text: str) -> set[str]:
        return {i for i, t in texts.items() if text in t}

    assert having("运费") and having("运费") != set(texts)
    assert found({"$contains": "运费"}) == having("运费")
    assert found({"$not_contains": "运费"}) == set(texts) - having("运费")
    assert found({"$and": [{"$contains": "运费"}, {"$contains": "包邮"}]}) == (
        having("运费") & having("包邮")
    )
    assert found({"$or": [{"$contains": "退款"}, {"$contains": "支付"}]}) == (
        having("退款") | having("支付")
    )
    # LIKE wildcards and quotes are plain text.
    assert found({"$contains": "50%"}) == having("50%") != set()
    assert found({"$contains": "_"}) == having("_") != set()
    assert found({"$contains": '运费" or text like "%'}) == set()
    # With a metadata filter as well.
    promo = set(stored(settings)["promo.txt"])
    assert found({"$contains": "运费"}, {"source": "promo.txt"}) == having("运费") & promo != set()
    store.close()

    # Through the retriever (hybrid: the keyword side is filtered too) and the CLI.
    freight = with_retriever(settings, where_document={"$contains": "运费"})
    answer = Assistant.from_settings(freight).ask("怎么退货")
    assert answer.context and all("运费" in s.content for s in answer.context)
    for search_type in ("similarity", "mmr"):
        dense = with_retriever(freight, search_type=search_type)
        answer = Assistant.from_settings(dense).ask("怎么退货")
        assert answer.context and all("运费" in s.content for s in answer.context)


@pytest.mark.parametrize("settings", ["milvus-server"], indirect=True)
def test_content_filters_need_milvus_2_4(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    store = reopen(settings)
    vector = HashingEmbeddings(256).embed_query("运费")
    with pytest.raises(ConfigurationError, match=r"need Milvus 2\.4 or later.*runs v2\.3"):
        store.search(vector, 5, where_document={"$contains": "运费"})
    assert store.search(vector, 5, {"source": "promo.txt"})  # metadata filters still work
    store.close()
    for search_type in ("hybrid", "similarity", "mmr"):
        freight = with_retriever(
            settings, search_type=search_type, where_document={"$contains": "运费"}
        )
        with pytest.raises(ConfigurationError, match="RAG_RETRIEVER__WHERE_DOCUMENT"):
            Assistant.from_settings(freight).ask("怎么退货")
    use_env(monkeypatch, settings)
    code, _, err = run_cli(capsys, "ask", "怎么退货", "--where-document-contains", "运费")
    assert code == 2 and "Milvus 2.4" in err


def test_cli_info_ask_and_content_filter(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_env(monkeypatch, settings)
    code, out, err = run_cli(capsys, "ingest", str(corpus), "--json")
    assert code == 0, err
    added = json.loads(out)["chunks_added"]

    code, out, err = run_cli(capsys, "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["backend"] == settings.store.backend
    assert info["collection"] == settings.store.collection
    assert info["count"] == added
    assert info["fingerprint"] == "fake:hashed-char-ngrams:256"
    # Sources are keyed by the folder's label and the path inside it.
    assert set(info["sources"]) == {f"corpus/{name}" for name in CORPUS}
    assert info["roots"] == {"corpus": str(corpus.resolve())}

    question = ("ask", "怎么退货", "--json", "--show-context", "--threshold", "0")
    if lacks_infix_like(settings):  # content filters: test_content_filters_need_milvus_2_4
        code, out, err = run_cli(capsys, *question)
        assert code == 0, err
        assert json.loads(out)["context"]
        return
    code, out, err = run_cli(capsys, *question, "--where-document-contains", "运费")
    assert code == 0, err
    context = json.loads(out)["context"]
    assert context and all("运费" in c["content"] for c in context)
    code, out, err = run_cli(
        capsys, *question, "--where-document-contains", "运费", "--where-document-contains", "%"
    )
    assert code == 0, err
    assert {c["source"] for c in json.loads(out)["context"]} == {"promo.txt"}

    monkeypatch.setenv("RAG_RETRIEVER__WHERE_DOCUMENT", '{"$contains": "包邮"}')
    code, out, err = run_cli(capsys, *question)
    assert code == 0, err
    context = json.loads(out)["context"]
    assert context and all("包邮" in c["content"] for c in context)


def test_other_embeddings_are_refused(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    other = settings.model_copy(
        update={"embeddings": settings.embeddings.model_copy(update={"dimensions": 64})}
    )
    with pytest.raises(EmbeddingMismatchError) as info:
        reopen(other)
    assert info.value.stored == "fake:hashed-char-ngrams:256"
    assert info.value.configured == "fake:hashed-char-ngrams:64"
    with pytest.raises(EmbeddingMismatchError):
        ingest([corpus], other)

    use_env(monkeypatch, settings)
    monkeypatch.setenv("RAG_EMBEDDINGS__DIMENSIONS", "64")
    code, _, err = run_cli(capsys, "info", "--json")
    assert code == 2
    assert "fake:hashed-char-ngrams:256" in err and "--rebuild" in err


def test_collections_commands(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n = ingest([corpus], settings).chunks_added
    ids = set().union(*stored_ids(settings).values())
    name = settings.store.collection
    renamed = f"{name}_renamed"
    use_env(monkeypatch, settings)

    code, out, err = run_cli(capsys, "collections", "count", "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == n
    code, out, err = run_cli(capsys, "collections", "peek", "3", "--json")
    assert code == 0, err
    peeked = json.loads(out)
    assert len(peeked) == 3 and {p["id"] for p in peeked} <= ids
    assert all(p["text"] and p["metadata"]["source"] in CORPUS for p in peeked)
    code, out, err = run_cli(capsys, "collections", "list", "--json")
    assert code == 0, err
    listed = {c["name"]: c for c in json.loads(out)["collections"]}
    assert listed[name]["count"] == n and listed[name]["current"]
    assert listed[name]["fingerprint"] == "fake:hashed-char-ngrams:256"

    # Rename: the records, manifest and keyword rows follow the collection.
    old_namespace = reopen(settings).namespace
    code, out, err = run_cli(capsys, "collections", "rename", renamed, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["moved"] == {"records": n, "sources": len(CORPUS), "keyword_chunks": n}
    assert Bookkeeping(settings, old_namespace).counts().to_dict() == {
        "records": 0,
        "sources": 0,
        "keyword_chunks": 0,
    }
    code, _, err = run_cli(capsys, "collections", "count")
    assert code == 2 and "collections list" in err
    moved = settings.model_copy(
        update={"store": settings.store.model_copy(update={"collection": renamed})}
    )
    assert set().union(*stored_ids(moved).values()) == ids
    again = ingest([corpus], moved)
    assert (again.chunks_added, again.chunks_deleted, again.chunks_unchanged) == (0, 0, n)
    store = reopen(moved)
    assert store.namespace == report["namespace"]
    manifest = SourceManifest(state_engine(moved), store.namespace)
    assert manifest.under(corpus.resolve()) == {f"corpus/{name}" for name in CORPUS}
    assert Assistant.from_settings(moved).ask("运费怎么算").sources
    store.close()

    # Delete: refused without --yes, then everything goes.
    code, _, err = run_cli(capsys, "collections", "delete", "--collection", renamed)
    assert code == 2 and "--yes" in err
    assert reopen(moved).count() == n
    code, out, err = run_cli(
        capsys, "collections", "delete", "--yes", "--collection", renamed, "--json"
    )
    assert code == 0, err
    deleted = json.loads(out)
    assert deleted["existed"] and deleted["deleted_chunks"] == n
    assert deleted["removed"] == {"records": n, "sources": len(CORPUS), "keyword_chunks": n}
    code, out, err = run_cli(capsys, "collections", "list", "--json")
    assert code == 0, err
    assert renamed not in {c["name"] for c in json.loads(out)["collections"]}
    code, _, err = run_cli(capsys, "collections", "delete", "--yes", "--collection", renamed)
    assert code == 2 and "no collection" in err
