"""Crash safety: an ingest process killed with SIGKILL at several points of its progress, then
run again, leaves exactly what one uninterrupted run leaves; files deleted after a kill are
pruned; a lost record-manager file is found and repaired by `rag verify --repair`.

An ingest to be killed runs in a subprocess against the OpenAI-compatible stub on 127.0.0.1,
which answers each embedding request after a short pause, so the test can kill it by progress
(the number of embedding requests served), not by wall time; the uninterrupted reference runs
are in this process.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.config import Settings
from rag_pipeline.embeddings import build_embedding_model
from rag_pipeline.indexing import IngestReport, ingest
from rag_pipeline.stores import open_store
from rag_pipeline.testing.model_api import ModelServer, RecordedRequest
from rag_pipeline.verify import verify
from tests.helpers import write_corpus
from tests.integration.processes import clean_env

FILES = 40
BATCH = 2  # texts per embedding request: many requests, many points to kill at
KILL_AT = (3, 17, 35)  # embedding requests served before each kill: early, middle, late


class SlowStub(ModelServer):
    """The stub, answering every request after ``pause`` seconds."""

    pause = 0.03

    def _record(self, request: RecordedRequest) -> None:
        super()._record(request)
        time.sleep(self.pause)


def corpus_files() -> dict[str, str]:
    return {
        f"d{n % 4}/doc{n:03d}.md": (
            f"# 主题{n}\n\n第{n}号说明：订单{n}在付款后{n % 7 + 1}天内发货。\n\n"
            f"## 售后{n}\n\n收到商品{n}后有问题，请在{n % 5 + 3}天内联系客服处理。"
        )
        for n in range(FILES)
    }


@pytest.fixture
def stub() -> Iterator[SlowStub]:
    with SlowStub(embedding_dim=16) as running:
        yield running


def environment(stub: ModelServer, data_dir: Path) -> dict[str, str]:
    return clean_env(
        RAG_DATA_DIR=str(data_dir),
        RAG_EMBEDDINGS__PROVIDER="openai",
        RAG_EMBEDDINGS__MODEL="text-embedding-v4",
        RAG_EMBEDDINGS__BATCH_SIZE=str(BATCH),
        RAG_EMBEDDINGS__DIMENSIONS="16",
        RAG_EMBEDDINGS__MAX_RETRIES="0",
        RAG_SPLIT__CHUNK_SIZE="60",
        RAG_SPLIT__CHUNK_OVERLAP="0",
        OPENAI_BASE_URL=stub.base_url,
        OPENAI_API_KEY=stub.api_key,
    )


def settings_for(stub: ModelServer, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        embeddings={
            "provider": "openai",
            "model": "text-embedding-v4",
            "batch_size": BATCH,
            "dimensions": 16,
        },
        split={"chunk_size": 60, "chunk_overlap": 0},
        openai_base_url=stub.base_url,
        openai_api_key=stub.api_key,
    )


def start_ingest(corpus: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rag_pipeline.cli", "ingest", str(corpus), "--json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ingest_here(corpus: Path, stub: SlowStub, data_dir: Path) -> IngestReport:
    """An uninterrupted ingest in this process (where no kill is needed: no process start)."""
    paused, stub.pause = stub.pause, 0  # only a run to be killed needs slowing down
    try:
        report = ingest([corpus], settings_for(stub, data_dir))
    finally:
        stub.pause = paused
    assert not report.files_failed, report.files_failed
    return report


def texts_embedded(stub: ModelServer) -> int:
    total = 0
    for request in stub.embedding_requests():
        given = request.body["input"]
        total += len(given) if isinstance(given, list) else 1
    return total


def snapshot(settings: Settings) -> set[str]:
    """The stored chunk ids, after checking that nothing disagrees or repeats."""
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        ids = [r.id for batch in store.scan() for r in batch]
        assert len(ids) == len(set(ids)) == store.count()  # no duplicates
        state = Bookkeeping(settings, store.namespace)
        assert set(state.records.list_keys()) == set(ids) == state.keyword.ids()
        return set(ids)
    finally:
        store.close()


def cached_vectors(data_dir: Path) -> int:
    cache = data_dir / "embedding-cache"
    return sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0


def test_kill_9_at_three_points_then_rerun_equals_one_clean_run(
    stub: SlowStub, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "kb", corpus_files())
    reference_dir = tmp_path / "reference"
    ingest_here(corpus, stub, reference_dir)
    reference = snapshot(settings_for(stub, reference_dir))
    total = texts_embedded(stub)
    assert total == len(reference)

    killed = 0
    for point in KILL_AT:
        # A fresh folder for each point (this process's Chroma client keeps per-folder state
        # that another process's writes would leave stale).
        data_dir = tmp_path / f"data-{point}"
        env = environment(stub, data_dir)
        stub.reset()
        process = start_ingest(corpus, env, tmp_path)
        while len(stub.embedding_requests()) < point and process.poll() is None:
            time.sleep(0.005)
        if process.poll() is None:
            process.kill()  # SIGKILL: no cleanup of any kind runs
            killed += 1
        process.communicate(timeout=60)
        cached = cached_vectors(data_dir)
        stub.reset()
        ingest_here(corpus, stub, data_dir)
        assert snapshot(settings_for(stub, data_dir)) == reference, point
        # Nothing embedded twice: what the killed run cached is not asked for again.
        assert texts_embedded(stub) <= total - cached + BATCH, point
    assert killed == len(KILL_AT)


def test_files_deleted_after_a_kill_are_pruned(stub: SlowStub, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "kb", corpus_files())
    data_dir = tmp_path / "data"
    env = environment(stub, data_dir)
    process = start_ingest(corpus, env, tmp_path)
    while len(stub.embedding_requests()) < 40 and process.poll() is None:
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=60)
    settings = settings_for(stub, data_dir)
    stored = Bookkeeping(settings, "chroma/persistent/rag").manifest.rows()
    assert stored, "the killed run committed no file group: kill later"
    # Delete files the killed run had already stored, and some it had not reached.
    doomed = [key.split("/", 1)[1] for key, _ in stored[:3]] + ["d3/doc039.md"]
    for name in doomed:
        (corpus / name).unlink()
    ingest_here(corpus, stub, data_dir)
    ids = snapshot(settings)
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        sources = {key.split("/", 1)[1] for key in store.sources()}
    finally:
        store.close()
    assert sources == {n for n in corpus_files() if n not in doomed}
    assert len(ids) == sum(1 for _ in ids)


def test_a_lost_record_manager_file_is_found_and_repaired(stub: SlowStub, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "kb", corpus_files())
    data_dir = tmp_path / "data"
    ingest_here(corpus, stub, data_dir)
    settings = settings_for(stub, data_dir)
    reference = snapshot(settings)
    with sqlite3.connect(settings.state_db) as db:  # the records, sources and roots are lost
        for table in ("upsertion_record", "rag_sources", "rag_roots", "rag_layout"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608
    for name in ("d0/doc000.md", "d1/doc001.md"):
        (corpus / name).unlink()

    found = verify(settings)
    assert not found.ok
    kinds = {p.kind: p.count for p in found.problems}
    assert kinds["chunks without a record"] == len(reference)

    # The folder's path was lost with the records: nothing is deleted on a guess, the chunks
    # are recorded and the report says to ingest the folder again.
    first = verify(settings, repair=True)
    assert snapshot(settings) == reference
    assert any(p.needs and "rag ingest FOLDER" in p.needs for p in first.problems)
    stub.reset()
    ingest_here(corpus, stub, data_dir)
    assert texts_embedded(stub) == 0  # the chunks of the remaining files were taken over
    second = verify(settings, repair=True)
    assert second.ok, second.to_dict()
    after = snapshot(settings)
    assert after < reference
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        assert {key.split("/", 1)[1] for key in store.sources()} == set(corpus_files()) - {
            "d0/doc000.md",
            "d1/doc001.md",
        }
    finally:
        store.close()
    assert verify(settings).problems == []
    stub.reset()
    again = ingest_here(corpus, stub, data_dir)  # incremental again: nothing to embed or delete
    assert (again.chunks_added, again.chunks_deleted) == (0, 0)
    assert texts_embedded(stub) == 0
