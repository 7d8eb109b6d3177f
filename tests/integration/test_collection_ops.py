"""Chunk-level collection operations on real stores: `collections get`, `delete-docs` by id,
metadata filter and source (store, keyword index and record manager stay consistent), user
metadata from sidecars and front matter, and the one filter grammar on `ask` / `search`, where
the keyword side of hybrid search must keep exactly what the vector side keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.bm25 import tokenize
from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.config import Settings
from rag_pipeline.embeddings import build_embedding_model
from rag_pipeline.indexing import ingest
from rag_pipeline.retrieval import build_retriever, load_keyword_index
from rag_pipeline.stores import open_store
from tests.helpers import run_cli, use_env, write_corpus

SPLIT = {"chunk_size": 80, "chunk_overlap": 0}
CORPUS = {
    "returns.md": (
        "---\nteam: 售后\nversion: 3\n---\n"
        "# 退货政策\n\n签收后7天内可申请无理由退货，商品需保持完好。\n\n"
        "## 退款时效\n\n退款将在仓库验收后3个工作日内原路退回。"
    ),
    "shipping.txt": "配送说明：订单满99元包邮，不满99元收取运费8元，偏远地区另计。",
    "shipping.txt.meta.json": json.dumps({"team": "物流", "version": 1}),
    "faq.csv": (
        "question,answer\n怎么修改收货地址,在订单发货前可以在我的订单中修改收货地址。\n"
        "支持哪些支付方式,支持微信支付、支付宝和银行卡。\n"
    ),
}


@pytest.fixture(params=["chroma", "milvus-lite"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    store: dict[str, Any] = {"mode": "persistent"}
    if request.param == "milvus-lite":
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
def corpus(tmp_path: Path, settings: Settings) -> Path:
    folder = write_corpus(tmp_path / "corpus", CORPUS)
    report = ingest([folder], settings)
    assert report.files_ingested == 3 and not report.files_failed, report
    assert report.files_skipped == []  # the sidecar is read with its file, not skipped
    return folder


def consistent(settings: Settings) -> set[str]:
    """The chunk ids, after checking store, keyword index and records hold the same ones."""
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        stored = {r.id for batch in store.scan() for r in batch}
        state = Bookkeeping(settings, store.namespace)
        assert set(state.records.list_keys()) == stored
        assert state.keyword.ids() == stored
        return stored
    finally:
        store.close()


def test_user_metadata_reaches_every_chunk_and_is_filterable(
    settings: Settings, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    use_env(monkeypatch, settings)
    code, out, err = run_cli(capsys, "collections", "peek", "50", "--json")
    assert code == 0, err
    chunks = json.loads(out)
    by_source: dict[str, set[Any]] = {}
    for chunk in chunks:
        meta = chunk["metadata"]
        by_source.setdefault(meta["source"], set()).add((meta.get("team"), meta.get("version")))
        assert "front_matter" not in meta and "---" not in chunk["text"]
    assert by_source == {
        "returns.md": {("售后", 3)},
        "shipping.txt": {("物流", 1)},
        "faq.csv": {(None, None)},
    }

    code, out, err = run_cli(
        capsys, "search", "退货 运费", "--threshold", "0", "--filter", '{"team": "售后"}', "--json"
    )
    assert code == 0, err
    assert {s["source"] for s in json.loads(out)} == {"returns.md"}
    code, out, err = run_cli(
        capsys,
        "search",
        "退货 运费",
        "--threshold",
        "0",
        "--filter",
        '{"version": {"$in": [1, 3]}}',
        "--json",
    )
    assert {s["source"] for s in json.loads(out)} == {"returns.md", "shipping.txt"}


def test_a_changed_sidecar_replaces_the_chunks_of_its_file(
    settings: Settings, corpus: Path
) -> None:
    before = consistent(settings)
    (corpus / "shipping.txt.meta.json").write_text('{"team": "仓储"}', encoding="utf-8")
    report = ingest([corpus], settings)
    assert report.chunks_added >= 1 and report.chunks_deleted == report.chunks_added
    after = consistent(settings)
    assert len(after) == len(before) and after != before


@pytest.mark.parametrize(
    ("sidecar", "why"),
    [
        ('{"source": "x"}', "set by rag_pipeline itself"),
        ('{"tags": ["a", "b"]}', "string, number or boolean"),
        ("[1, 2]", "one JSON object"),
        ("{not json", "cannot read shipping.txt.meta.json"),
    ],
)
def test_bad_user_metadata_fails_that_file_only(
    settings: Settings, tmp_path: Path, sidecar: str, why: str
) -> None:
    folder = write_corpus(tmp_path / "bad", {**CORPUS, "shipping.txt.meta.json": sidecar})
    report = ingest([folder], settings)
    assert report.files_ingested == 2
    (failure,) = report.files_failed
    assert failure["path"] == "shipping.txt" and why in failure["reason"]


def test_get_and_delete_docs_keep_everything_consistent(
    settings: Settings, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    use_env(monkeypatch, settings)
    ids = sorted(consistent(settings))
    code, out, err = run_cli(capsys, "collections", "get", ids[0], "nope", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert [c["id"] for c in got["chunks"]] == [ids[0]] and got["missing"] == ["nope"]

    code, out, err = run_cli(
        capsys, "--json", "collections", "delete-docs", "--ids", ids[0], "nope"
    )
    assert code == 0, err
    assert json.loads(out)["deleted"] == 1 and json.loads(out)["missing"] == ["nope"]
    assert consistent(settings) == set(ids) - {ids[0]}

    code, out, err = run_cli(
        capsys, "collections", "delete-docs", "--where", '{"doc_type": "faq"}', "--json"
    )
    assert code == 0, err
    left = consistent(settings)
    assert json.loads(out)["deleted"] >= 1 and json.loads(out)["count"] == len(left)

    code, out, err = run_cli(capsys, "collections", "delete-docs", "--source", "shipping.txt")
    assert code == 0, err
    remaining = consistent(settings)
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        assert set(store.sources()) <= {"corpus/returns.md"}
    finally:
        store.close()
    assert remaining < left

    code, out, err = run_cli(capsys, "collections", "delete-docs", "--source", "nothing.md")
    assert code == 2 and "rag info" in err and "Traceback" not in err

    # The files are still there: ingesting the folder again brings their chunks back.
    ingest([corpus], settings)
    assert consistent(settings) == set(ids)


FILTERS: list[dict[str, Any]] = [
    {"team": "售后"},
    {"team": {"$ne": "售后"}},
    {"version": {"$gte": 2}},
    {"version": {"$lt": 3}},
    {"source": {"$in": ["faq.csv", "shipping.txt"]}},
    {"source": {"$nin": ["faq.csv"]}},
    {"$or": [{"doc_type": "faq"}, {"team": "物流"}]},
    {"$and": [{"team": "售后"}, {"version": 3}]},
    {"team": {"$nin": ["物流"]}},
    {"$or": [{"team": {"$ne": "物流"}}, {"version": {"$gt": 100}}]},
]


@pytest.mark.parametrize("where", FILTERS, ids=[json.dumps(f, ensure_ascii=False) for f in FILTERS])
def test_keyword_side_honours_exactly_the_store_filters(
    settings: Settings, corpus: Path, where: dict[str, Any]
) -> None:
    """For every operator, the chunks the keyword index may return are exactly the chunks the
    vector store's own filter returns (a chunk without the key matches only $ne / $nin)."""
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        total = store.count()
        allowed = set(store.find_ids(where)) if settings.store.backend == "chroma" else None
        vector = build_embedding_model(settings).embeddings.embed_query("退货 运费 地址 支付")
        dense = {h.document.id for h in store.search(vector, total, where)}
        if allowed is not None:
            assert dense == allowed
        keyword = load_keyword_index(settings, store)
        # Every term of the corpus: each chunk scores, so the filter alone decides what comes back.
        everything = " ".join(
            {
                t
                for batch in store.scan()
                for r in batch
                for t in tokenize(r.document().page_content)
            }
        )
        kept = {h.document.id for h in keyword.search(everything, total, where)}
        assert kept == dense, (where, kept ^ dense)
        hybrid = build_retriever(
            settings.model_copy(
                update={
                    "retriever": settings.retriever.model_copy(update={"filter": where, "k": total})
                }
            ),
            store,
            build_embedding_model(settings).embeddings,
            keyword,
        )
        assert {d.id for d in hybrid.invoke("退货 运费 地址 支付")} <= dense
    finally:
        store.close()
