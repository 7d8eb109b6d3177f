"""The keyword side of ``where_document``, and the argument handling of ``rag collections`` /
``rag migrate``."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag_pipeline.admin import target_settings
from rag_pipeline.bm25 import KeywordIndex
from rag_pipeline.cli import _settings, build_parser, main
from rag_pipeline.config import Settings, load_settings
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.retrieval import KeywordRetriever


def test_keyword_side_filters_on_content(tmp_path: Path) -> None:
    index = KeywordIndex(tmp_path / "keyword.sqlite", "ns")
    docs = [
        Document(page_content="退货运费由买家承担。", metadata={"source": "returns.md"}),
        Document(page_content="退货退款需要3个工作日，退货地址见订单。", metadata={"source": "r2"}),
        Document(page_content="订单满99元包邮，运费8元。", metadata={"source": "shipping.txt"}),
        Document(page_content="退货时请保留包装。", metadata={"source": "returns.md"}),
    ]
    index.add(docs, ["a", "b", "c", "d"])
    searcher = index.load()
    unfiltered = KeywordRetriever(searcher=searcher, k=2).invoke("退货")
    assert [d.id for d in unfiltered][0] == "b"  # the best BM25 hit has no 运费
    hits = KeywordRetriever(searcher=searcher, k=2, where_document={"$contains": "运费"}).invoke(
        "退货"
    )
    assert [d.id for d in hits] == ["a"]  # only chunks with 运费 that match the query
    hits = KeywordRetriever(
        searcher=searcher,
        k=5,
        filter={"source": "returns.md"},
        where_document={"$not_contains": "运费"},
    ).invoke("退货")
    assert [d.id for d in hits] == ["d"]


def test_where_document_from_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    args = parser.parse_args(["ask", "q", "--where-document-contains", "运费"])
    assert _settings(args).retriever.where_document == {"$contains": "运费"}
    args = parser.parse_args(
        ["ask", "q", "--where-document-contains", "运费", "--where-document-contains", "8元"]
    )
    assert _settings(args).retriever.where_document == {
        "$and": [{"$contains": "运费"}, {"$contains": "8元"}]
    }
    assert _settings(parser.parse_args(["ask", "q"])).retriever.where_document == {}

    monkeypatch.setenv("RAG_RETRIEVER__WHERE_DOCUMENT", '{"$not_contains": "退货"}')
    assert load_settings().retriever.where_document == {"$not_contains": "退货"}
    monkeypatch.setenv("RAG_RETRIEVER__WHERE_DOCUMENT", '{"$like": "退货"}')
    with pytest.raises(ConfigurationError, match="RAG_RETRIEVER__WHERE_DOCUMENT.*'[$]like'"):
        load_settings()  # checked with the other settings, before anything is opened


def test_delete_needs_yes_and_touches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collections", "delete"]) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "'rag'" in err
    assert not Path(".rag").exists()


def test_collections_parser() -> None:
    parser = build_parser()
    assert parser.parse_args(["collections", "peek"]).n == 5
    assert parser.parse_args(["collections", "peek", "12", "--json"]).n == 12
    args = parser.parse_args(["collections", "rename", "new_name", "--collection", "old_name"])
    assert (args.action, args.new_name, args.collection) == ("rename", "new_name", "old_name")
    with pytest.raises(SystemExit):
        parser.parse_args(["collections"])


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
