"""Sources are unique per ingested folder, data folders of the earlier layout are upgraded in
place, and one writer at a time holds a collection (real files, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.bookkeeping import Bookkeeping, SourceManifest
from rag_pipeline.config import Settings
from rag_pipeline.embeddings import build_embedding_model
from rag_pipeline.errors import CollectionLockedError
from rag_pipeline.indexing import ingest
from rag_pipeline.keyword_index import KeywordMirror
from rag_pipeline.loading import discover, load_file
from rag_pipeline.locking import collection_lock
from rag_pipeline.splitting import split_documents
from rag_pipeline.state_db import state_engine
from rag_pipeline.stores import open_store
from tests.helpers import STORE_CORPUS, fake_settings, run_cli, use_env, write_corpus
from tests.integration.processes import clean_env


def settings_in(tmp_path: Path, **ingest: Any) -> Settings:
    return fake_settings(
        tmp_path / "data",
        embeddings={"cache": False},
        split={"chunk_size": 80, "chunk_overlap": 0},
        ingest=ingest,
    )


STATE = """
import json, sys
from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.config import Settings
from rag_pipeline.stores import connect
settings = Settings(data_dir=sys.argv[1], embeddings={"provider": "fake"})
store = connect(settings)
assert store.exists()
ids = [r.id for batch in store.scan() for r in batch]
state = Bookkeeping(settings, store.namespace)
agree = set(state.records.list_keys()) == set(ids) == state.keyword.ids()
print(json.dumps({"sources": store.sources(), "ids": sorted(ids), "agree": agree,
                  "count": store.count()}))
"""


def state_elsewhere(settings: Settings) -> tuple[dict[str, int], set[str]]:
    """``state_of`` read by a fresh process: an embedded Chroma client keeps per-process state
    that does not follow another process's writes (Chroma's embedded mode is one process's)."""
    done = subprocess.run(
        [sys.executable, "-c", STATE, str(settings.data_dir)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["agree"] and found["count"] == len(found["ids"]) == len(set(found["ids"]))
    return found["sources"], set(found["ids"])


def state_of(settings: Settings) -> tuple[dict[str, int], set[str]]:
    """Chunks per source key, after checking store, records and keyword index agree."""
    store = open_store(settings, build_embedding_model(settings), create=False)
    try:
        ids = {r.id for batch in store.scan() for r in batch}
        state = Bookkeeping(settings, store.namespace)
        assert set(state.records.list_keys()) == ids == state.keyword.ids()
        assert store.count() == len(ids)  # no duplicates
        return store.sources(), ids
    finally:
        store.close()


def test_two_folders_with_the_same_file_names_coexist(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    kb_a = write_corpus(tmp_path / "a" / "kb", STORE_CORPUS)
    kb_b = write_corpus(
        tmp_path / "b" / "kb", {**STORE_CORPUS, "returns.md": "# 退货\n\n不支持退货。"}
    )
    first = ingest([kb_a], settings)
    second = ingest([kb_b], settings)
    assert second.chunks_deleted == 0 and second.chunks_added > 0
    sources, _ = state_of(settings)
    names = sorted(STORE_CORPUS)
    assert set(sources) == {f"kb/{n}" for n in names} | {f"kb-2/{n}" for n in names}
    assert sum(sources.values()) == first.chunks_added + second.chunks_added
    # Running the first folder again changes nothing, and does not flip the second one.
    again = ingest([kb_a], settings)
    assert (again.chunks_added, again.chunks_deleted) == (0, 0)
    assert state_of(settings)[0] == sources
    # Pruning is per folder: a file deleted from kb_b leaves kb_a's copy alone.
    (kb_b / "payment.md").unlink()
    pruned = ingest([kb_b], settings)
    after, _ = state_of(settings)
    assert pruned.chunks_deleted == sources["kb-2/payment.md"]
    assert "kb/payment.md" in after and "kb-2/payment.md" not in after
    roots = Bookkeeping(
        settings, open_store(settings, build_embedding_model(settings), create=False).namespace
    ).roots()
    assert roots == {"kb": str(kb_a.resolve()), "kb-2": str(kb_b.resolve())}


def test_delete_docs_by_source_needs_the_folder_when_two_hold_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_in(tmp_path)
    ingest([write_corpus(tmp_path / "a" / "kb", STORE_CORPUS)], settings)
    ingest([write_corpus(tmp_path / "b" / "kb", STORE_CORPUS)], settings)
    use_env(monkeypatch, settings)
    code, _, err = run_cli(capsys, "collections", "delete-docs", "--source", "payment.md")
    assert code == 2 and "kb/payment.md" in err and "kb-2/payment.md" in err
    code, out, err = run_cli(
        capsys, "collections", "delete-docs", "--source", "kb-2/payment.md", "--json"
    )
    assert code == 0, err
    sources, _ = state_of(settings)
    assert "kb/payment.md" in sources and "kb-2/payment.md" not in sources


def legacy_ingest(folder: Path, settings: Settings) -> set[str]:
    """What the earlier layout wrote: chunks without a root label, grouped by bare source,
    the manifest keyed by bare source, no roots table rows."""
    from langchain_core.indexing import index

    model = build_embedding_model(settings)
    store = open_store(settings, model, create=True)
    state = Bookkeeping(settings, store.namespace)
    found = discover([folder])
    docs = [c for f in found.files for c in split_documents(load_file(f), settings.split)]
    index(
        docs,
        state.records,
        KeywordMirror(store.vector_store, state.keyword),
        cleanup="incremental",
        source_id_key="source",
        key_encoder="sha256",
    )
    SourceManifest(state_engine(settings), store.namespace).add_rows(
        (f.source, str(f.root)) for f in found.files
    )
    ids = {r.id for batch in store.scan() for r in batch}
    store.close()
    return ids


def test_a_data_folder_of_the_earlier_layout_is_upgraded_once(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    old_ids = legacy_ingest(corpus, settings)
    (corpus / "payment.md").unlink()  # deleted before the upgrade: still pruned
    report = ingest([corpus], settings)
    assert len(report.notes) == 1 and "3 sources" in report.notes[0]
    sources, ids = state_of(settings)
    assert set(sources) == {"kb/returns.md", "kb/shipping.txt"}
    assert not ids & old_ids  # every chunk rewritten once, with its root label
    again = ingest([corpus], settings)
    assert again.notes == [] and (again.chunks_added, again.chunks_deleted) == (0, 0)


def test_a_second_writer_fails_at_once_with_a_clear_error(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    ingest([corpus], settings)
    store = open_store(settings, build_embedding_model(settings), create=False)
    with collection_lock(settings, store.namespace, what="a test"):
        with pytest.raises(CollectionLockedError) as info:
            ingest([corpus], settings)
    message = str(info.value)
    assert "ingest" in message and "RAG_INGEST__LOCK_TIMEOUT" in message and "process" in message
    ingest([corpus], settings)  # released: the next writer goes on


HOLD_LOCK = """
import sys, time
from pathlib import Path
from rag_pipeline.config import Settings
from rag_pipeline.locking import collection_lock
settings = Settings(data_dir=Path(sys.argv[1]))
with collection_lock(settings, sys.argv[2], what="holder"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(settings: Settings, namespace: str, seconds: float, cwd: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(settings.data_dir), namespace, str(seconds)],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_the_lock_is_per_process_waits_and_dies_with_its_holder(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    ingest([corpus], settings)
    store = open_store(settings, build_embedding_model(settings), create=False)
    namespace = store.namespace
    store.close()

    holder = hold(settings, namespace, 60, tmp_path)
    try:
        with pytest.raises(CollectionLockedError, match=f"process {holder.pid}"):
            ingest([corpus], settings)
    finally:
        holder.kill()  # like kill -9: the operating system releases the lock
        holder.wait()
    assert ingest([corpus], settings).chunks_added == 0

    # A waiting writer goes on once the holder is done.
    holder = hold(settings, namespace, 1.5, tmp_path)
    waiting = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"lock_timeout": 60})}
    )
    report = ingest([corpus], waiting)
    assert holder.wait() == 0 and report.files_ingested == len(STORE_CORPUS)


def test_the_cli_exits_5_when_the_collection_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_in(tmp_path)
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    ingest([corpus], settings)
    use_env(monkeypatch, settings)
    store = open_store(settings, build_embedding_model(settings), create=False)
    holder = hold(settings, store.namespace, 60, tmp_path)
    try:
        for argv in (
            ["ingest", str(corpus)],
            ["collections", "delete", "--yes"],
            ["collections", "rename", "other_name"],
            ["ingest", str(corpus), "--rebuild"],
        ):
            code, _, err = run_cli(capsys, *argv)
            assert code == 5 and "is writing" in err and "Traceback" not in err, argv
        # Readers take no lock.
        code, out, err = run_cli(capsys, "search", "退款", "--threshold", "0", "--json")
        assert code == 0 and json.loads(out), err
    finally:
        holder.kill()
        holder.wait()


EXTRA = 60


def test_readers_never_wait_for_a_writer(tmp_path: Path) -> None:
    """4 `rag search` processes while an ingest process rewrites part of the corpus (its
    embeddings answered slowly by the stub): every search succeeds, and several ran while the
    writer held the lock."""
    from tests.integration.test_crash_safety import SlowStub, environment

    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    with SlowStub(embedding_dim=16) as stub:
        env = environment(stub, tmp_path / "data")
        done = subprocess.run(
            [sys.executable, "-m", "rag_pipeline.cli", "ingest", str(corpus)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        for n in range(EXTRA):
            (corpus / f"extra{n}.md").write_text(
                f"# 补充{n}\n\n第{n}条补充说明：退款三天到账。", encoding="utf-8"
            )
        stub.pause = 0.4
        writer = subprocess.Popen(
            [sys.executable, "-m", "rag_pipeline.cli", "ingest", str(corpus), "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not stub.embedding_requests()[3:] and writer.poll() is None:
            time.sleep(0.01)  # the writer holds the lock and is embedding
        search = [
            sys.executable,
            "-m",
            "rag_pipeline.cli",
            "search",
            "退款多久到账",
            "--threshold",
            "0",
            "--json",
        ]
        overlapped = 0
        for _ in range(2):  # two readers at a time (2 cores): 4 searches in all
            running = writer.poll() is None
            readers = [
                subprocess.Popen(
                    search,
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            for reader in readers:
                out, err = reader.communicate(timeout=120)
                assert reader.returncode == 0, err
                assert json.loads(out)
            overlapped += 2 * (running and writer.poll() is None)
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert json.loads(out)["files_ingested"] == len(STORE_CORPUS) + EXTRA
    assert overlapped >= 2  # the writer was busy for part of them at least


def test_two_ingest_processes_on_one_folder_end_as_one_sequential_run(tmp_path: Path) -> None:
    files = {
        f"t{n:03d}.md": f"# 条目{n}\n\n第{n}条：订单{n}的退款在{n % 6 + 1}个工作日内到账。"
        for n in range(120)
    }
    corpus = write_corpus(tmp_path / "kb", files)
    reference = settings_in(tmp_path / "reference")
    ingest([corpus], reference)
    expected, expected_ids = state_of(reference)

    settings = settings_in(tmp_path)

    def start(timeout: str) -> subprocess.Popen[str]:
        env = clean_env(
            RAG_DATA_DIR=str(settings.data_dir),
            RAG_EMBEDDINGS__PROVIDER="fake",
            RAG_EMBEDDINGS__CACHE="false",
            RAG_SPLIT__CHUNK_SIZE="80",
            RAG_SPLIT__CHUNK_OVERLAP="0",
            RAG_INGEST__LOCK_TIMEOUT=timeout,
        )
        return subprocess.Popen(
            [sys.executable, "-m", "rag_pipeline.cli", "ingest", str(corpus)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Without waiting: whichever comes second (if they overlap) fails with the lock error.
    first, second = start("0"), start("0")
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in (first, second)]
    assert {code for code, _ in results} <= {0, 5} and 0 in {code for code, _ in results}
    for code, err in results:
        if code == 5:
            assert "is writing" in err and "Traceback" not in err
    assert state_elsewhere(settings) == (expected, expected_ids)

    # Waiting: both succeed, one after the other, and the result is the same.
    for n in range(0, 120, 2):
        (corpus / f"t{n:03d}.md").write_text(f"# 条目{n}\n\n已更新：第{n}条。", encoding="utf-8")
    ingest([corpus], reference)
    expected, expected_ids = state_of(reference)
    first, second = start("300"), start("300")
    assert [p.wait(timeout=600) for p in (first, second)] == [0, 0]
    assert state_elsewhere(settings) == (expected, expected_ids)
