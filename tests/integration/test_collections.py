"""``rag migrate`` between real stores (Chroma persistent <-> milvus-lite, in tmp_path), and the
refusals of ``rag migrate`` / ``rag collections``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import rag_pipeline.embeddings  # noqa: E402
from rag_pipeline.admin import migrate, target_settings  # noqa: E402
from rag_pipeline.bookkeeping import SourceManifest, record_manager
from rag_pipeline.config import Settings  # noqa: E402
from rag_pipeline.errors import ConfigurationError, EmptyIndexError  # noqa: E402
from rag_pipeline.indexing import ingest  # noqa: E402
from rag_pipeline.keyword_index import KeywordIndex  # noqa: E402
from rag_pipeline.state_db import state_engine
from rag_pipeline.stores import Record, connect  # noqa: E402
from tests.helpers import (  # noqa: E402
    STORE_CORPUS,
    CountingEmbeddings,
    counting_model,
    run_cli,
    use_env,
    write_corpus,
)

SPLIT = {"chunk_size": 80, "chunk_overlap": 0}
CORPUS = {
    **STORE_CORPUS,
    "warranty.txt": "保修说明：家电类商品享受一年免费保修，人为损坏不在保修范围内。",
    "membership.md": (
        "# 会员权益\n\n金卡会员每月领取两张免运费券，生日当月享双倍积分。\n\n"
        "## 积分\n\n每消费1元累计1积分，100积分可抵扣1元，积分有效期两年。"
    ),
    "faq.csv": (
        "question,answer,alternatives\n"
        "怎么修改收货地址,在订单发货前可以在“我的订单”中修改收货地址。,地址填错了怎么办|能改地址吗\n"
        "支持哪些支付方式,支持微信支付、支付宝和银行卡。,可以用什么付款\n"
        "怎么联系人工客服,工作日9点到21点可在App内点击“联系客服”。,人工客服在哪\n"
    ),
}
QUESTIONS = [
    "七天无理由退货怎么申请",
    "退款多久到账",
    "运费怎么算",
    "偏远地区几天送达",
    "可以用花呗吗",
    "发票在哪里下载",
    "家电保修多久",
    "会员积分怎么抵扣",
    "地址填错了怎么办",
    "人工客服什么时候上班",
]


def chroma_settings(tmp_path: Path, collection: str = "kb_chroma") -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "cache": False},
        store={"backend": "chroma", "mode": "persistent", "collection": collection},
        split=SPLIT,
        retriever={"score_threshold": None},
        llm={"provider": "extractive"},
    )


def milvus_settings(tmp_path: Path, collection: str = "kb_milvus", **embeddings: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "cache": False, **embeddings},
        store={"backend": "milvus", "uri": str(tmp_path / "kb.db"), "collection": collection},
        split=SPLIT,
        retriever={"score_threshold": None},
        llm={"provider": "extractive"},
    )


def records(settings: Settings) -> dict[str, Record]:
    backend = connect(settings)
    try:
        assert backend.exists()
        return {r.id: r for batch in backend.scan(batch_size=7) for r in batch}
    finally:
        backend.close()


def top5(settings: Settings, embeddings: CountingEmbeddings) -> list[list[tuple[str, float]]]:
    backend = connect(settings)
    try:
        assert backend.exists()
        results = []
        for question in QUESTIONS:
            hits = backend.search(embeddings.inner.embed_query(question), 5)
            results.append([(str(h.document.id), round(h.relevance, 4)) for h in hits])
        return results
    finally:
        backend.close()


def assert_same_collection(a: Settings, b: Settings, embeddings: CountingEmbeddings) -> None:
    left, right = records(a), records(b)
    assert sorted(left) == sorted(right)
    for id_, record in left.items():
        other = right[id_]
        assert (other.text, other.metadata) == (record.text, record.metadata)
        assert {k: type(v) for k, v in other.metadata.items()} == {
            k: type(v) for k, v in record.metadata.items()
        }
        assert other.vector == pytest.approx(record.vector, abs=1e-6)
    assert top5(b, embeddings) == top5(a, embeddings)


def test_migrate_chroma_to_milvus_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus", CORPUS)
    model, counter = counting_model()
    # Every model the CLI builds is this counting one: migrate must not call it.
    monkeypatch.setattr(rag_pipeline.embeddings, "build_embedding_model", lambda _: model)
    source = chroma_settings(tmp_path)
    n = ingest([corpus], source, model=model).chunks_added
    assert n > 10
    counter.documents_embedded = counter.queries_embedded = 0

    use_env(monkeypatch, source)
    code, out, err = run_cli(
        capsys,
        "migrate",
        "--to-backend",
        "milvus",
        "--to-uri",
        str(tmp_path / "kb.db"),
        "--to-collection",
        "kb_milvus",
        "--batch-size",
        "7",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert counter.documents_embedded == counter.queries_embedded == 0
    assert report["chunks_copied"] == report["source"]["count"] == report["target"]["count"] == n
    assert report["batches"] == -(-n // 7)
    assert report["bookkeeping"] == {"records": n, "sources": len(CORPUS), "keyword_chunks": n}
    assert report["fingerprint"] == "fake:hashed-char-ngrams:256"
    target = milvus_settings(tmp_path)
    assert report["target"]["location"] == str(tmp_path / "kb.db")
    assert_same_collection(source, target, counter)

    backend = connect(target)
    backend.exists()
    assert backend.stored_fingerprint() == "fake:hashed-char-ngrams:256"
    namespace = backend.namespace
    backend.close()
    ids = set(records(source))
    manager = record_manager(target, namespace)
    assert set(manager.list_keys()) == ids
    assert set(manager.list_keys(group_ids=["corpus/shipping.txt"])) == {
        i for i, r in records(source).items() if r.metadata["source"] == "shipping.txt"
    }
    assert KeywordIndex(target.state_location, namespace).ids() == ids
    manifest = SourceManifest(state_engine(target), namespace)
    assert manifest.under(corpus.resolve()) == {f"corpus/{name}" for name in CORPUS}

    # Ingesting the same corpus into the target: incremental, nothing embedded.
    again = ingest([corpus], target, model=model)
    assert (again.chunks_added, again.chunks_deleted, again.chunks_unchanged) == (0, 0, n)
    assert counter.documents_embedded == 0

    # And back to Chroma, into another collection of the same folder.
    use_env(monkeypatch, target)
    code, out, err = run_cli(
        capsys, "migrate", "--to-backend", "chroma", "--to-collection", "kb_back", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["chunks_copied"] == n
    back = chroma_settings(tmp_path, "kb_back")
    assert_same_collection(source, back, counter)
    assert_same_collection(target, back, counter)
    again = ingest([corpus], back, model=model)
    assert (again.chunks_added, again.chunks_deleted, again.chunks_unchanged) == (0, 0, n)
    assert counter.documents_embedded == counter.queries_embedded == 0

    # The migrated manifest and record groups make pruning work on the target.
    gone = {i for i, r in records(back).items() if r.metadata["source"] == "warranty.txt"}
    (corpus / "warranty.txt").unlink()
    pruned = ingest([corpus], target, model=model)
    assert pruned.chunks_deleted == len(gone) > 0
    assert set(records(target)) == ids - gone


def test_migrate_refusals_and_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus", CORPUS)
    source = chroma_settings(tmp_path)
    target = milvus_settings(tmp_path)

    with pytest.raises(EmptyIndexError, match="rag ingest"):
        migrate(source, target)
    n = ingest([corpus], source).chunks_added

    with pytest.raises(ConfigurationError, match="same collection"):
        migrate(source, target_settings(source))
    assert migrate(source, target).chunks_copied == n
    with pytest.raises(ConfigurationError, match="already holds .* --replace"):
        migrate(source, target)
    report = migrate(source, target, replace=True)
    assert report.replaced and report.target["count"] == n
    assert report.bookkeeping["records"] == n  # stale records were not kept twice

    # A target built with other embeddings is refused unless replaced.
    other = milvus_settings(tmp_path, "kb_other", dimensions=64)
    ingest([corpus], other)
    to_other = target_settings(source, backend="milvus", uri=str(tmp_path / "kb.db"))
    to_other = target_settings(to_other, collection="kb_other")
    with pytest.raises(ConfigurationError, match="embeddings 'fake:hashed-char-ngrams:64'"):
        migrate(source, to_other)
    assert migrate(source, to_other, replace=True).fingerprint == "fake:hashed-char-ngrams:256"

    # The CLI: a settings file for the target, --to-* flags over it, exit 2 on refusals.
    target_file = tmp_path / "target.toml"
    target_file.write_text(
        f'data_dir = "{(tmp_path / "data2").as_posix()}"\n\n[store]\nbackend = "milvus"\n'
        f'uri = "{(tmp_path / "file.db").as_posix()}"\ncollection = "from_file"\n',
        encoding="utf-8",
    )
    use_env(monkeypatch, source)
    argv = ("migrate", "--to-settings", str(target_file), "--to-collection", "flagged")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "copied" in out and "flagged" in out and "nothing re-embedded" in out
    in_file = Settings(
        data_dir=tmp_path / "data2",
        embeddings={"provider": "fake"},
        store={"backend": "milvus", "uri": str(tmp_path / "file.db"), "collection": "flagged"},
        split=SPLIT,
    )
    assert ingest([corpus], in_file).chunks_added == 0
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "--replace" in err
    code, _, err = run_cli(capsys, "migrate", "--to-mode", "memory", "--to-uri", "x.db")
    assert code == 2 and "--to-backend milvus" in err


def test_collections_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus", CORPUS)
    first, second = chroma_settings(tmp_path, "first"), chroma_settings(tmp_path, "second")
    ingest([corpus], first)
    ingest([corpus], second)
    use_env(monkeypatch, first)

    code, _, err = run_cli(capsys, "collections", "rename", "second")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(capsys, "collections", "rename", "x")
    assert code == 2 and "collection" in err
    code, _, err = run_cli(capsys, "collections", "rename", "third", "--collection", "nope")
    assert code == 2 and "no collection 'nope'" in err
    code, _, err = run_cli(capsys, "collections", "peek", "-1")
    assert code == 2 and ">= 0" in err

    # A collection another tool made (a name we would not accept, no fingerprint) is listed.
    backend = connect(first)
    backend.client.create_collection("foreign-docs")  # type: ignore[attr-defined]
    backend.close()
    code, out, err = run_cli(capsys, "collections", "list", "--json")
    assert code == 0, err
    listed = {c["name"]: c for c in json.loads(out)["collections"]}
    assert listed["foreign-docs"] == {
        "name": "foreign-docs",
        "count": 0,
        "fingerprint": None,
        "current": False,
    }
    assert listed["first"]["current"] and listed["second"]["count"] == listed["first"]["count"]
    code, out, err = run_cli(capsys, "collections", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith(" * first") for line in lines)
    assert any(line.startswith("   second") for line in lines)
    assert any("foreign-docs" in line and "no embedding fingerprint" in line for line in lines)
    code, out, err = run_cli(capsys, "collections", "peek", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 4
