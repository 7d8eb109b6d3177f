"""Ingest with odd files beside good ones: nothing crashes, nothing good is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rag_pipeline.indexing import ingest
from rag_pipeline.stores import open_store
from tests.helpers import counting_model, fake_settings, run_cli, use_env

GOOD = "配送说明：订单满99元包邮，不满99元收取运费8元。"


def _sources(settings, model) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Chunks per source path (the store keys sources by folder label + path)."""
    keyed = open_store(settings, model, create=False).sources()
    return {key.split("/", 1)[1]: count for key, count in keyed.items()}


def test_undecodable_name_is_ingested_beside_the_good_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text(GOOD, encoding="utf-8")
    with open(os.path.join(os.fsencode(corpus), b"\xff\xfe-faq.txt"), "wb") as f:
        f.write("退货说明：签收后7天内可申请无理由退货。".encode())
    settings = fake_settings(tmp_path / "data")
    model, _ = counting_model(32)
    report = ingest([corpus], settings, model=model)
    assert not report.files_failed and report.files_ingested == 2
    assert set(_sources(settings, model)) == {"good.txt", "%FF%FE-faq.txt"}
    again = ingest([corpus], settings, model=model)  # incremental on the escaped name too
    assert again.chunks_added == 0 and again.chunks_deleted == 0


def test_file_of_more_chunks_than_one_chroma_batch(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = 6000  # > 5,461, Chroma's maximum records per request
    (corpus / "long.txt").write_text("".join(f"行{i:05d}内容\n" for i in range(lines)), "utf-8")
    (corpus / "good.txt").write_text(GOOD, encoding="utf-8")
    settings = fake_settings(
        tmp_path / "data",
        embeddings={"cache": False},
        split={"chunk_size": 10, "chunk_overlap": 0},
    )
    model, counter = counting_model(8)
    report = ingest([corpus], settings, model=model)
    assert not report.files_failed
    stored = _sources(settings, model)
    assert stored["long.txt"] == lines and stored["good.txt"] >= 1
    total = sum(stored.values())
    assert report.chunks_added == counter.documents_embedded == total
    again = ingest([corpus], settings, model=model)
    assert again.chunks_unchanged == total and again.chunks_added == 0


def test_file_over_max_file_mb_is_reported_with_the_setting(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "big.txt").write_text(GOOD * 2000, encoding="utf-8")  # about 0.14 MB
    (corpus / "good.txt").write_text(GOOD, encoding="utf-8")
    settings = fake_settings(tmp_path / "data", ingest={"max_file_mb": 0.1})
    model, _ = counting_model(32)
    report = ingest([corpus], settings, model=model)
    (failed,) = report.files_failed
    assert failed["path"] == "big.txt" and "RAG_INGEST__MAX_FILE_MB" in failed["reason"]
    assert set(_sources(settings, model)) == {"good.txt"}


def test_symlink_out_of_the_corpus_needs_follow_symlinks(tmp_path: Path) -> None:
    corpus, outside = tmp_path / "corpus", tmp_path / "outside.txt"
    corpus.mkdir()
    (corpus / "good.txt").write_text(GOOD, encoding="utf-8")
    outside.write_text("外部文件：会员积分可以抵扣现金。", encoding="utf-8")
    (corpus / "linked.txt").symlink_to(outside)
    model, _ = counting_model(32)
    settings = fake_settings(tmp_path / "data")
    report = ingest([corpus], settings, model=model)
    assert [s["path"] for s in report.files_skipped] == ["linked.txt"]
    assert "RAG_INGEST__FOLLOW_SYMLINKS" in report.files_skipped[0]["reason"]
    assert set(_sources(settings, model)) == {"good.txt"}
    following = fake_settings(tmp_path / "data", ingest={"follow_symlinks": True})
    assert ingest([corpus], following, model=model).files_ingested == 2
    assert set(_sources(following, model)) == {"good.txt", "linked.txt"}


def test_random_bytes_and_bad_faq_row_are_reported_the_rest_ingested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text(GOOD, encoding="utf-8")
    (corpus / "symbols.txt").write_text("。\n\n、\n\n…\n\n—\n\n" * 50, encoding="utf-8")
    (corpus / "faq.csv").write_text(
        "question,answer\n运费多少,满99元包邮\n能退货吗,\n发票怎么开,在订单详情申请\n",
        encoding="utf-8",
    )
    settings = fake_settings(tmp_path / "data", split={"chunk_size": 20, "chunk_overlap": 0})
    use_env(monkeypatch, settings)
    code, out, _ = run_cli(capsys, "ingest", str(corpus), "--json")
    report = json.loads(out)
    assert code == 3
    failed = {f["path"]: f["reason"] for f in report["files_failed"]}
    assert set(failed) == {"faq.csv", "symbols.txt"}
    assert failed["symbols.txt"].startswith("no text")
    assert "row 2" in failed["faq.csv"] and "rest of the file was ingested" in failed["faq.csv"]
    assert report["files_ingested"] == 2  # good.txt and faq.csv without its bad row
    model, _ = counting_model()
    stored = _sources(settings, model)
    assert set(stored) == {"faq.csv", "good.txt"} and stored["faq.csv"] == 2


def test_missing_path_and_bad_limit_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch, fake_settings(tmp_path / "data"))
    missing = tmp_path / "no-such-folder"
    code, _, err = run_cli(capsys, "ingest", str(missing))
    assert code == 2 and "no such file or folder" in err and str(missing) in err
    assert not (tmp_path / "data").exists()  # nothing was opened or created
    code, _, err = run_cli(capsys, "eval", str(tmp_path), "--limit", "-1")
    assert code == 2 and "--limit -1" in err


def test_file_of_more_chunks_than_the_record_database_takes_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_pipeline import indexing

    # SQLite's real cap is 50,000 chunks per file; the same code path with a small one.
    monkeypatch.setattr(indexing, "max_file_chunks", lambda: 100)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "huge.txt").write_text("".join(f"行{i:05d}内容\n" for i in range(150)), "utf-8")
    for name in ("a.txt", "b.txt"):  # 60 + 60 chunks: two groups, never one of 120
        (corpus / name).write_text("".join(f"{name}{i:03d}\n" for i in range(60)), "utf-8")
    settings = fake_settings(tmp_path / "data", split={"chunk_size": 10, "chunk_overlap": 0})
    model, _ = counting_model(8)
    seen: list[int] = []  # files done at each group handed to index()
    report = ingest([corpus], settings, model=model, progress=lambda s, d, t: seen.append(d))
    (failed,) = report.files_failed
    assert failed["path"] == "huge.txt"
    assert "150 chunks" in failed["reason"] and "RAG_SPLIT__CHUNK_SIZE" in failed["reason"]
    assert _sources(settings, model) == {"a.txt": 60, "b.txt": 60}
    assert seen == [1, 3]  # a.txt alone, then b.txt: together they would pass the limit
