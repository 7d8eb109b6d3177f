"""Collection housekeeping (list, count, peek, rename, delete) on a Chroma folder in tmp_path,
and the settings of a migration target."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline import admin
from rag_pipeline.admin import target_settings
from rag_pipeline.bookkeeping import Bookkeeping, Counts
from rag_pipeline.config import Settings
from rag_pipeline.errors import ConfigurationError, EmptyIndexError
from rag_pipeline.indexing import ingest
from rag_pipeline.stores import connect
from tests.helpers import fake_settings, write_corpus


@pytest.fixture
def ingested(tmp_path: Path) -> tuple[Settings, int]:
    settings = fake_settings(tmp_path / "data", store={"collection": "kb_main"})
    report = ingest([write_corpus(tmp_path / "corpus")], settings)
    return settings, report.chunks_added


def _namespace(settings: Settings) -> str:
    backend = connect(settings)
    try:
        return backend.namespace
    finally:
        backend.close()


def test_count_and_peek(ingested: tuple[Settings, int]) -> None:
    settings, chunks = ingested
    counted = admin.count(settings)
    assert counted["count"] == chunks > 0
    assert (counted["backend"], counted["mode"], counted["collection"]) == (
        "chroma",
        "persistent",
        "kb_main",
    )
    peeked = admin.peek(settings, 2)
    assert len(peeked) == 2 and all(set(p) == {"id", "text", "metadata"} for p in peeked)
    assert all(p["text"] and p["metadata"]["source"] for p in peeked)
    assert admin.peek(settings, 0) == []
    with pytest.raises(ConfigurationError, match=">= 0"):
        admin.peek(settings, -1)


def test_list_marks_the_configured_collection(ingested: tuple[Settings, int]) -> None:
    settings, chunks = ingested
    listing = admin.list_collections(settings)
    assert listing["backend"] == "chroma" and "collection" not in listing
    (row,) = listing["collections"]
    assert row == {
        "name": "kb_main",
        "count": chunks,
        "fingerprint": "fake:hashed-char-ngrams:256",
        "current": True,
    }
    other = settings.model_copy(
        update={"store": settings.store.model_copy(update={"collection": "kb_x"})}
    )
    assert [r["current"] for r in admin.list_collections(other)["collections"]] == [False]


def test_a_missing_collection_names_itself_and_the_way_out(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path / "data", store={"collection": "kb_none"})
    with pytest.raises(EmptyIndexError, match="'kb_none'.*rag collections list"):
        admin.count(settings)
    assert admin.list_collections(settings)["collections"] == []


def test_rename_moves_the_bookkeeping(ingested: tuple[Settings, int]) -> None:
    settings, chunks = ingested
    old_namespace = _namespace(settings)
    before = Bookkeeping(settings, old_namespace).counts()
    renamed = admin.rename(settings, "kb_renamed")
    assert renamed["renamed_to"] == "kb_renamed" and renamed["count"] == chunks
    assert renamed["moved"] == before.to_dict() and before.records == chunks
    assert "RAG_STORE__COLLECTION=kb_renamed" in renamed["next"]
    assert Bookkeeping(settings, old_namespace).counts() == Counts(0, 0, 0)
    assert Bookkeeping(settings, renamed["namespace"]).counts() == before
    names = [r["name"] for r in admin.list_collections(settings)["collections"]]
    assert names == ["kb_renamed"]


def test_rename_refusals(ingested: tuple[Settings, int], tmp_path: Path) -> None:
    settings, _ = ingested
    with pytest.raises(ConfigurationError, match="already called"):
        admin.rename(settings, "kb_main")
    with pytest.raises(ConfigurationError, match="collection"):
        admin.rename(settings, "bad-name")
    second = fake_settings(settings.data_dir, store={"collection": "kb_second"})
    ingest([write_corpus(tmp_path / "c2", {"a.md": "另一个知识库的内容。"})], second)
    with pytest.raises(ConfigurationError, match="already exists.*delete it first"):
        admin.rename(settings, "kb_second")


def test_delete_needs_confirmation_then_removes_everything(ingested: tuple[Settings, int]) -> None:
    settings, chunks = ingested
    with pytest.raises(ConfigurationError, match="--yes"):
        admin.delete(settings, confirm=False)
    assert admin.count(settings)["count"] == chunks  # untouched
    deleted = admin.delete(settings, confirm=True)
    assert deleted["existed"] is True and deleted["deleted_chunks"] == chunks
    assert deleted["removed"]["records"] == chunks and deleted["removed"]["sources"] == 3
    assert Bookkeeping(settings, _namespace(settings)).counts() == Counts(0, 0, 0)
    with pytest.raises(EmptyIndexError, match="nothing recorded"):
        admin.delete(settings, confirm=True)  # a second time: nothing there


def test_target_settings(tmp_path: Path) -> None:
    source = Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "dimensions": 64},
        store={"collection": "kb_src", "space": "l2"},
    )
    milvus = target_settings(source, backend="milvus")
    assert (milvus.store.backend, milvus.store.uri, milvus.store.collection) == (
        "milvus",
        None,
        "kb_src",
    )
    assert milvus.store.space == "l2" and milvus.embeddings.dimensions == 64
    assert milvus.data_dir == source.data_dir and source.store.backend == "chroma"

    http = target_settings(source, mode="http", host="127.0.0.1", port=8123, collection="kb2")
    assert (http.store.mode, http.store.port, http.store.collection) == ("http", 8123, "kb2")

    spec = tmp_path / "target.toml"
    spec.write_text(
        'data_dir = "elsewhere"\n[store]\nbackend = "milvus"\nuri = "kb.db"\n'
        'collection = "from_file"\n[embeddings]\nprovider = "local"\n',
        encoding="utf-8",
    )
    from_file = target_settings(source, settings_file=spec)
    assert (from_file.store.backend, from_file.store.uri) == ("milvus", "kb.db")
    assert from_file.store.collection == "from_file" and from_file.data_dir == Path("elsewhere")
    assert from_file.embeddings.provider == "fake"  # vectors are copied: same model
    flagged = target_settings(source, settings_file=spec, collection="flagged", data_dir=tmp_path)
    assert (flagged.store.collection, flagged.data_dir) == ("flagged", tmp_path)

    with pytest.raises(ConfigurationError, match="collection"):
        target_settings(source, collection="x")
    with pytest.raises(ConfigurationError, match="--to-backend chroma"):
        target_settings(source, backend="milvus", mode="memory")
    with pytest.raises(ConfigurationError, match="--to-backend milvus"):
        target_settings(source, uri="kb.db")
    (tmp_path / "bad.toml").write_text("[store\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="bad.toml"):
        target_settings(source, settings_file=tmp_path / "bad.toml")
    with pytest.raises(ConfigurationError, match="bad.toml"):
        target_settings(source, settings_file=tmp_path / "missing" / "bad.toml")
