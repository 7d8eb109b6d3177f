"""What a collection keeps beside its vectors (record manager, source manifest, keyword index),
on SQLite files in a tmp data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag_pipeline.bookkeeping import Bookkeeping, Counts, SourceManifest, record_manager
from rag_pipeline.config import Settings
from rag_pipeline.state_db import open_state

NS = "chroma/persistent/kb"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})


def _doc(id_: str, text: str, source: str) -> Document:
    return Document(id=id_, page_content=text, metadata={"source": source})


def _filled(settings: Settings, namespace: str = NS) -> Bookkeeping:
    state = Bookkeeping(settings, namespace)
    state.record(["a1", "a2", "b1"], ["a.md", "a.md", "b.md"])
    state.manifest.add_rows([("a.md", "/corpus"), ("b.md", "/corpus")])
    docs = [
        _doc("a1", "退货运费", "a.md"),
        _doc("a2", "退款时效", "a.md"),
        _doc("b1", "包邮", "b.md"),
    ]
    state.keyword.add(docs, ["a1", "a2", "b1"])
    return state


class FakeStore:
    """The two VectorBackend calls bookkeeping makes: ``get`` and ``delete``."""

    def __init__(self, docs: list[Document]) -> None:
        self.docs = {d.id: d for d in docs}
        self.deleted: list[str] = []

    def get(self, ids: list[str]) -> list[Document]:
        return [self.docs[i] for i in ids if i in self.docs]

    def delete(self, ids: list[str]) -> None:
        self.deleted.extend(ids)
        for i in ids:
            self.docs.pop(i, None)


def test_a_new_namespace_is_empty_and_lives_in_the_data_folder(settings: Settings) -> None:
    state = Bookkeeping(settings, NS)
    assert state.counts() == Counts(0, 0, 0)
    assert settings.state_db.is_file()
    assert settings.state_db.parent == settings.data_dir


def test_record_and_count(settings: Settings) -> None:
    state = _filled(settings)
    assert state.counts().to_dict() == {"records": 3, "sources": 2, "keyword_chunks": 3}
    assert sorted(state.records.list_keys(group_ids=["a.md"])) == ["a1", "a2"]


def test_namespaces_share_the_files_but_not_the_rows(settings: Settings) -> None:
    _filled(settings)
    other = Bookkeeping(settings, "chroma/persistent/other")
    assert other.counts() == Counts(0, 0, 0)
    assert Bookkeeping(settings, NS).counts() == Counts(3, 2, 3)  # reopened: persisted


def test_move_to_moves_everything_with_its_groups(settings: Settings) -> None:
    state = _filled(settings)
    moved = state.move_to("chroma/persistent/renamed")
    assert moved == Counts(3, 2, 3)
    assert state.namespace == "chroma/persistent/renamed"
    assert Bookkeeping(settings, NS).counts() == Counts(0, 0, 0)
    target = Bookkeeping(settings, "chroma/persistent/renamed")
    assert target.counts() == Counts(3, 2, 3)
    assert sorted(target.records.list_keys(group_ids=["b.md"])) == ["b1"]
    assert target.manifest.rows() == [("a.md", "/corpus"), ("b.md", "/corpus")]
    assert target.keyword.ids() == {"a1", "a2", "b1"}


def test_move_to_replaces_stale_rows_at_the_target(settings: Settings) -> None:
    stale = Bookkeeping(settings, "chroma/persistent/new")
    stale.record(["old"], ["old.md"])
    stale.manifest.add_rows([("old.md", "/elsewhere")])
    _filled(settings).move_to("chroma/persistent/new")
    target = Bookkeeping(settings, "chroma/persistent/new")
    assert "old" not in target.records.list_keys()
    assert [s for s, _ in target.manifest.rows()] == ["a.md", "b.md"]


def test_drop_removes_every_row_of_the_namespace_only(settings: Settings) -> None:
    _filled(settings)
    keep = _filled(settings, "chroma/persistent/keep")
    assert Bookkeeping(settings, NS).drop() == Counts(3, 2, 3)
    assert Bookkeeping(settings, NS).counts() == Counts(0, 0, 0)
    assert keep.counts() == Counts(3, 2, 3)
    assert Bookkeeping(settings, NS).drop() == Counts(0, 0, 0)  # nothing left to drop


def test_copy_to_keeps_groups_including_keys_of_no_source(settings: Settings) -> None:
    state = _filled(settings)
    state.record(["loose"], [None])
    target = Bookkeeping(settings, "milvus/m.db/kb")
    assert state.copy_to(target) == 4
    assert sorted(target.records.list_keys()) == ["a1", "a2", "b1", "loose"]
    assert sorted(target.records.list_keys(group_ids=["a.md"])) == ["a1", "a2"]
    assert state.counts().records == 4  # a copy: the source keeps its keys


def test_forget_records_empties_records_and_manifest_not_the_keyword_index(
    settings: Settings,
) -> None:
    state = _filled(settings)
    assert state.forget_records() == 3
    assert state.counts() == Counts(0, 0, 3)


def test_delete_sources_removes_chunks_everywhere(settings: Settings) -> None:
    state = _filled(settings)
    store = FakeStore([_doc("a1", "x", "a.md"), _doc("a2", "y", "a.md"), _doc("b1", "z", "b.md")])
    assert state.delete_sources(store, ["a.md"]) == 2
    assert sorted(store.deleted) == ["a1", "a2"]
    assert state.records.list_keys() == ["b1"]
    assert state.keyword.ids() == {"b1"}
    assert state.manifest.rows() == [("b.md", "/corpus")]


def test_sync_keyword_index_follows_the_records(settings: Settings) -> None:
    state = Bookkeeping(settings, NS)
    state.record(["a1", "b1"], ["a.md", "b.md"])
    state.keyword.add([_doc("gone", "旧的", "c.md")], ["gone"])
    store = FakeStore([_doc("a1", "退货运费", "a.md"), _doc("b1", "包邮", "b.md")])
    state.sync_keyword_index(store)
    assert state.keyword.ids() == {"a1", "b1"}  # missing ones read from the store, stale gone
    hits = state.keyword.load().search("运费", 5)
    assert [h.document.id for h in hits] == ["a1"]


def test_source_manifest_under_a_root_and_remove(tmp_path: Path) -> None:
    manifest = SourceManifest(open_state(tmp_path / "deep" / "state.sqlite"), NS)
    manifest.add_rows([("a.md", "/one"), ("b.md", "/one"), ("c.md", "/two")])
    manifest.add_rows([("b.md", "/two")])  # re-ingested from another root: replaced
    assert manifest.under(Path("/one")) == {"a.md"}
    assert manifest.under(Path("/two")) == {"b.md", "c.md"}
    assert manifest.remove(["a.md", "missing.md"]) == 1
    assert manifest.clear() == 2 and manifest.rows() == []


def test_record_manager_creates_its_tables(settings: Settings) -> None:
    manager = record_manager(settings, NS)
    manager.update(["k"], group_ids=["s"])
    assert record_manager(settings, NS).list_keys() == ["k"]
    assert record_manager(settings, "another").list_keys() == []
