"""Incremental ingest against a real persistent Chroma folder, with calls counted."""

import os
from pathlib import Path

import pytest

from rag_pipeline.cli import main
from rag_pipeline.embeddings import build_embedding_model
from rag_pipeline.errors import EmbeddingMismatchError, EmptyIndexError
from rag_pipeline.indexing import ingest
from rag_pipeline.stores import open_store
from tests.helpers import counting_model, fake_settings, write_corpus


def _ids_by_source(settings, model) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    store = open_store(settings, model, create=False)
    got = store._collection.get(include=["metadatas"])  # type: ignore[attr-defined]
    by_source: dict[str, set[str]] = {}
    for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
        by_source.setdefault(meta["source"], set()).add(id_)
    assert len(got["ids"]) == len(set(got["ids"]))  # no duplicate ids, ever
    return by_source


def test_second_run_embeds_nothing_edit_and_delete_are_exact(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = fake_settings(tmp_path / "data", embeddings={"cache": False})
    model, counter = counting_model()

    first = ingest([corpus], settings, model=model)
    assert first.files_ingested == 3 and not first.files_failed
    assert first.chunks_added > 0 and counter.documents_embedded == first.chunks_added
    before = _ids_by_source(settings, model)
    assert set(before) == {"returns.md", "shipping.txt", "faq.csv"}

    counter.documents_embedded = 0
    second = ingest([corpus], settings, model=model)
    assert counter.documents_embedded == 0
    assert second.chunks_added == 0 and second.chunks_unchanged == first.chunks_added

    (corpus / "shipping.txt").write_text("配送说明\n\n订单满199元包邮。", encoding="utf-8")
    third = ingest([corpus], settings, model=model)
    after_edit = _ids_by_source(settings, model)
    assert counter.documents_embedded == len(after_edit["shipping.txt"]) == third.chunks_added
    assert third.chunks_deleted == len(before["shipping.txt"])
    assert after_edit["returns.md"] == before["returns.md"]
    assert after_edit["faq.csv"] == before["faq.csv"]

    (corpus / "returns.md").unlink()
    fourth = ingest([corpus], settings, model=model)
    after_delete = _ids_by_source(settings, model)
    assert "returns.md" not in after_delete
    assert fourth.chunks_deleted == len(before["returns.md"])
    assert after_delete["faq.csv"] == before["faq.csv"]


def test_single_file_ingest_never_prunes_others(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = fake_settings(tmp_path / "data")
    model, _ = counting_model()
    ingest([corpus], settings, model=model)
    report = ingest([corpus / "faq.csv"], settings, model=model)
    assert report.chunks_deleted == 0
    assert set(_ids_by_source(settings, model)) == {"returns.md", "shipping.txt", "faq.csv"}


def test_embedding_cache_saves_work_after_rebuild(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = fake_settings(tmp_path / "data")
    model, counter = counting_model()
    first = ingest([corpus], settings, model=model)
    counter.documents_embedded = 0
    rebuilt = ingest([corpus], settings, model=model, rebuild=True)
    assert rebuilt.chunks_added == first.chunks_added
    assert counter.documents_embedded == 0  # every vector came from the content-hash cache
    assert open_store(settings, model, create=False).count() == first.chunks_added


def test_bad_files_are_reported_and_the_rest_ingested(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(1000))
    (corpus / "random.docx").write_bytes(os.urandom(2000))
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "photo.jpg").write_bytes(b"\xff\xd8\xff")  # a truncated JPEG: read by OCR
    (corpus / "tool.exe").write_bytes(b"MZ\x90")
    data = tmp_path / "data"
    os.environ["RAG_EMBEDDINGS__PROVIDER"] = "fake"
    try:
        code = main(["ingest", str(corpus), "--data-dir", str(data), "--json"])
    finally:
        del os.environ["RAG_EMBEDDINGS__PROVIDER"]
    import json

    report = json.loads(capsys.readouterr().out)
    assert code == 3
    assert report["files_ingested"] == 3 and report["files_seen"] == 7
    failed = {f["path"]: f["reason"] for f in report["files_failed"]}
    assert set(failed) == {"broken.pdf", "random.docx", "empty.txt", "photo.jpg"}
    # Not an image with the [ocr] extra, the extra's name without it.
    assert (
        "not a readable image" in failed["photo.jpg"] or "rag-pipeline[ocr]" in failed["photo.jpg"]
    )
    assert "PDF" in failed["broken.pdf"] and "docx" in failed["random.docx"]
    assert "empty" in failed["empty.txt"]
    assert [s["path"] for s in report["files_skipped"]] == ["tool.exe"]


def test_fingerprint_guard_names_the_fix(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    ingest([corpus], fake_settings(tmp_path / "data", embeddings={"dimensions": 64}))
    other = fake_settings(tmp_path / "data", embeddings={"dimensions": 32})
    with pytest.raises(EmbeddingMismatchError) as e:
        ingest([corpus], other)
    assert "fake:hashed-char-ngrams:64" in str(e.value) and "--rebuild" in str(e.value)
    with pytest.raises(EmbeddingMismatchError):
        open_store(other, build_embedding_model(other), create=False)
    # the documented way out works
    assert ingest([corpus], other, rebuild=True).chunks_added > 0


def test_asking_an_empty_data_dir_says_ingest_first(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path / "nothing")
    with pytest.raises(EmptyIndexError, match="ingest"):
        open_store(settings, build_embedding_model(settings), create=False)


def test_memory_store_with_stale_records_reingests(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = fake_settings(
        tmp_path / "data", store={"mode": "memory", "collection": "mem_stale_test"}
    )
    model, _ = counting_model()
    first = ingest([corpus], settings, model=model)
    open_store(settings, model, create=False).drop()  # as if the process had restarted
    again = ingest([corpus], settings, model=model)
    assert again.chunks_added == first.chunks_added
