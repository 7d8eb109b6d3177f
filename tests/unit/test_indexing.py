"""Ingest into an in-memory collection with fake embeddings: the report, incremental re-runs,
pruning, failures and progress."""

from __future__ import annotations

from pathlib import Path

from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.config import Settings
from rag_pipeline.indexing import IngestReport, ingest
from rag_pipeline.stores import open_store
from tests.helpers import STORE_CORPUS, counting_model, memory_settings, write_corpus

SPLIT = {"chunk_size": 80, "chunk_overlap": 0}  # STORE_CORPUS splits the same way each run


def _settings(tmp_path: Path) -> Settings:
    return memory_settings(tmp_path / "data", split=SPLIT, embeddings={"cache": False})


def test_first_run_reports_every_file_and_chunk(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    model, counter = counting_model()
    report = ingest([write_corpus(tmp_path / "corpus", STORE_CORPUS)], settings, model=model)
    assert isinstance(report, IngestReport)
    assert (report.files_seen, report.files_ingested, report.files_failed) == (3, 3, [])
    assert report.chunks_added == counter.documents_embedded > 3
    assert report.chunks_unchanged == report.chunks_deleted == report.chunks_updated == 0
    assert set(report.to_dict()) == {
        "files_seen",
        "files_ingested",
        "files_failed",
        "files_skipped",
        "chunks_added",
        "chunks_updated",
        "chunks_deleted",
        "chunks_unchanged",
        "notes",
        "seconds",
    }
    store = open_store(settings, model, create=False)
    assert store.count() == report.chunks_added
    assert set(store.sources()) == {f"corpus/{name}" for name in STORE_CORPUS}
    state = Bookkeeping(settings, store.namespace)
    assert state.counts().to_dict() == {
        "records": report.chunks_added,
        "sources": 3,
        "keyword_chunks": report.chunks_added,
    }


def test_second_run_embeds_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    corpus = write_corpus(tmp_path / "corpus", STORE_CORPUS)
    model, counter = counting_model()
    first = ingest([corpus], settings, model=model)
    embedded = counter.documents_embedded
    second = ingest([corpus], settings, model=model)
    assert second.chunks_added == 0 and second.chunks_unchanged == first.chunks_added
    assert counter.documents_embedded == embedded


def test_an_edited_file_is_replaced_and_a_deleted_one_pruned(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    corpus = write_corpus(tmp_path / "corpus", STORE_CORPUS)
    model, counter = counting_model()
    ingest([corpus], settings, model=model)
    store = open_store(settings, model, create=False)
    shipping = store.sources()["corpus/shipping.txt"]  # folder label / path in it
    payment = store.sources()["corpus/payment.md"]
    text = (corpus / "shipping.txt").read_text(encoding="utf-8")
    (corpus / "shipping.txt").write_text(text.replace("元", "块"), encoding="utf-8")
    (corpus / "payment.md").unlink()
    before = counter.documents_embedded
    report = ingest([corpus], settings, model=model)
    assert report.chunks_added == shipping == counter.documents_embedded - before
    assert report.chunks_deleted == shipping + payment
    assert set(store.sources()) == {"corpus/returns.md", "corpus/shipping.txt"}


def test_single_files_never_prune_the_rest(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    corpus = write_corpus(tmp_path / "corpus", STORE_CORPUS)
    model, _ = counting_model()
    ingest([corpus], settings, model=model)
    report = ingest([corpus / "returns.md"], settings, model=model)
    assert report.files_seen == 1 and report.chunks_deleted == 0
    assert len(open_store(settings, model, create=False).sources()) == 3


def test_unreadable_files_are_reported_and_the_rest_ingested(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    corpus = write_corpus(tmp_path / "corpus", STORE_CORPUS)
    (corpus / "broken.docx").write_bytes(b"not a zip file")
    (corpus / "empty.md").write_text("   \n", encoding="utf-8")
    report = ingest([corpus], settings, model=counting_model()[0])
    failed = {f["path"]: f["reason"] for f in report.files_failed}
    assert set(failed) == {"broken.docx", "empty.md"} and all(failed.values())
    assert report.files_ingested == 3 and report.chunks_added > 0


def test_progress_is_reported_per_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    calls: list[tuple[str, int, int]] = []
    ingest(
        [write_corpus(tmp_path / "corpus", STORE_CORPUS)],
        settings,
        model=counting_model()[0],
        progress=lambda source, done, total: calls.append((source, done, total)),
    )
    assert calls and calls[-1][1:] == (3, 3)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)
    assert {source for source, _, _ in calls} <= set(STORE_CORPUS)


def test_rebuild_starts_from_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    corpus = write_corpus(tmp_path / "corpus", STORE_CORPUS)
    model, counter = counting_model()
    first = ingest([corpus], settings, model=model)
    again = ingest([corpus], settings, model=model, rebuild=True)
    assert again.chunks_added == first.chunks_added and again.chunks_unchanged == 0
    assert counter.documents_embedded == 2 * first.chunks_added
    assert open_store(settings, model, create=False).count() == first.chunks_added
