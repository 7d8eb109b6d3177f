"""Scale-out on real servers: ingest workers in separate processes with separate data folders
(two machines, no shared file) against one ``chroma run`` server and one PostgreSQL state
database; a service replica that follows their writes; a worker killed mid-group; and
``rag state migrate`` from SQLite to PostgreSQL and back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from rag_pipeline.stores import connect
from rag_pipeline.testing.chroma import ChromaServer
from tests.helpers import run_cli, use_env, write_corpus
from tests.integration.live_service import live_service
from tests.integration.processes import clean_env

TOPICS = ["退货", "运费", "发票", "会员积分", "优惠券", "配送", "售后维修", "账号安全"]


def corpus_text(worker: str, n: int, version: int = 1) -> str:
    topic = TOPICS[n % len(TOPICS)]
    lines = [f"# {topic}说明 {worker}{n:03d}"]
    for part in range(3):
        lines.append(
            f"{worker}{n:03d} 第{part + 1}节（版本{version}）：关于{topic}，"
            f"编号 {worker.upper()}-{n:03d}-{part} 的规则是第 {n * 7 + part} 条，"
            f"处理时限为 {n % 5 + 1} 个工作日。"
        )
    return "\n\n".join(lines)


def make_corpus(folder: Path, worker: str, count: int) -> Path:
    return write_corpus(
        folder, {f"{worker}{n:03d}.md": corpus_text(worker, n) for n in range(count)}
    )


def settings_for(data_dir: Path, server: Any, url: str, collection: str) -> Settings:
    """Settings of one machine: its own data folder, the shared store server (a Chroma server,
    or a Milvus server) and the shared state database ``url``."""
    if isinstance(server, ChromaServer):
        store = {"mode": "http", "host": server.host, "port": server.port}
    else:
        store = {"backend": "milvus", "uri": server.url}
    return Settings(
        data_dir=data_dir,
        embeddings={"provider": "fake"},
        store={**store, "collection": collection},
        split={"chunk_size": 80, "chunk_overlap": 0},
        retriever={"score_threshold": None},
        state={"url": url},
    )


def env_for(settings: Settings) -> dict[str, str]:
    assert settings.state.url is not None
    store = settings.store
    where = (
        {"RAG_STORE__BACKEND": "milvus", "RAG_STORE__URI": store.uri or ""}
        if store.backend == "milvus"
        else {
            "RAG_STORE__MODE": "http",
            "RAG_STORE__HOST": store.host,
            "RAG_STORE__PORT": str(store.port),
        }
    )
    return clean_env(
        **where,
        RAG_DATA_DIR=str(settings.data_dir),
        RAG_EMBEDDINGS__PROVIDER="fake",
        RAG_STORE__COLLECTION=store.collection,
        RAG_SPLIT__CHUNK_SIZE="80",
        RAG_SPLIT__CHUNK_OVERLAP="0",
        RAG_STATE__URL=settings.state.url.get_secret_value(),
        RAG_INGEST__LOCK_TIMEOUT="120",
    )


def start_ingest(settings: Settings, folder: Path, cwd: Path, **env: str) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "rag_pipeline.cli", "ingest", str(folder), "--json"],
        cwd=cwd,
        env={**env_for(settings), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def collection_state(settings: Settings) -> dict[str, Any]:
    """Store ids (with duplicates counted), record keys and keyword ids of the collection."""
    store = connect(settings)
    try:
        assert store.exists()
        ids = [r.id for batch in store.scan() for r in batch]
        count = store.count()
        namespace = store.namespace
    finally:
        store.close()
    state = Bookkeeping(settings, namespace)
    return {
        "ids": sorted(ids),
        "count": count,
        "records": sorted(state.records.list_keys()),
        "keyword": sorted(state.keyword.ids()),
        "sources": sorted(s for s, _ in state.manifest.rows()),
    }


@pytest.mark.parametrize("store_server", ["chroma_server", "milvus_server"])
def test_two_workers_on_two_machines_end_as_one_sequential_run(
    store_server: str,
    postgres_server: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    server = request.getfixturevalue(store_server)
    url = postgres_server.fresh_database()
    collection = f"c_{uuid.uuid4().hex[:10]}"
    machines = [tmp_path / "machine_a", tmp_path / "machine_b"]
    workers = [settings_for(m / "data", server, url, collection) for m in machines]
    folders = [
        make_corpus(machines[0] / "kb_a", "a", 14),
        make_corpus(machines[1] / "kb_b", "b", 14),
    ]

    running = [
        start_ingest(s, f, m / "cwd") for s, f, m in zip(workers, folders, machines, strict=True)
    ]
    first = [finish(p) for p in running]
    assert all(r["chunks_added"] > 0 and not r["files_failed"] for r in first)

    # Concurrent edits and deletes on both machines, and new files.
    for n in (1, 4, 9):
        (folders[0] / f"a{n:03d}.md").write_text(corpus_text("a", n, 2), encoding="utf-8")
    for n in (2, 3):
        (folders[0] / f"a{n:03d}.md").unlink()
    for n in (0, 5, 13):
        (folders[1] / f"b{n:03d}.md").unlink()
    (folders[1] / "b100.md").write_text(corpus_text("b", 100), encoding="utf-8")
    (folders[1] / "b007.md").write_text(corpus_text("b", 7, 3), encoding="utf-8")
    running = [
        start_ingest(s, f, m / "cwd") for s, f, m in zip(workers, folders, machines, strict=True)
    ]
    second = [finish(p) for p in running]
    assert second[0]["chunks_deleted"] > 0 and second[1]["chunks_deleted"] > 0

    # The reference: the final folders ingested one after the other, into a fresh state (in
    # this process: what the workers do concurrently is what is under test).
    reference_settings = settings_for(
        tmp_path / "reference" / "data",
        server,
        postgres_server.fresh_database(),
        f"r_{uuid.uuid4().hex[:10]}",
    )
    for folder in folders:
        assert not ingest([folder], reference_settings).files_failed

    got, want = collection_state(workers[0]), collection_state(reference_settings)
    assert got["ids"] == want["ids"] and got["count"] == want["count"]
    assert len(set(got["ids"])) == len(got["ids"])  # no duplicates
    assert got["records"] == got["keyword"] == got["ids"]
    assert got["sources"] == want["sources"]
    # The other machine sees exactly the same collection.
    assert collection_state(workers[1]) == got


def test_a_replica_started_before_the_ingest_answers_from_both_sides(
    chroma_server: ChromaServer, postgres_server: Any, tmp_path: Path
) -> None:
    url = postgres_server.fresh_database()
    collection = f"c_{uuid.uuid4().hex[:10]}"
    seed = settings_for(tmp_path / "seed" / "data", chroma_server, url, collection)
    finish(start_ingest(seed, make_corpus(tmp_path / "seed" / "kb_seed", "s", 3), tmp_path / "w"))
    replica = settings_for(tmp_path / "replica" / "data", chroma_server, url, collection)
    replica = replica.model_copy(
        update={"retriever": replica.retriever.model_copy(update={"search_type": "hybrid"})}
    )
    with live_service(replica) as service:
        question = "编号 A-006-1 的规则是第几条"
        before = httpx.post(service.url + "/v1/search", json={"query": question}, timeout=30)
        assert all(r["source"] != "a006.md" for r in before.json()["results"])

        worker = settings_for(tmp_path / "worker" / "data", chroma_server, url, collection)
        finish(
            start_ingest(worker, make_corpus(tmp_path / "worker" / "kb_a", "a", 8), tmp_path / "w2")
        )
        # The replica reads the change counter at most once a second and rebuilds its
        # snapshot in the background: a few requests later it answers from the new one.
        deadline = time.monotonic() + 30
        while True:
            found = httpx.post(service.url + "/v1/search", json={"query": question}, timeout=30)
            if found.json()["results"][0]["source"] == "a006.md" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        top = found.json()["results"][0]
        assert top["source"] == "a006.md", found.json()
        assert top["metadata"]["dense_relevance"] > 0 and top["metadata"]["keyword_coverage"] > 0
        answer = httpx.post(service.url + "/v1/ask", json={"question": question}, timeout=30)
        assert any(s["source"] == "a006.md" for s in answer.json()["sources"]), answer.json()


def test_a_worker_killed_mid_group_leaves_nothing_half_visible(
    chroma_server: ChromaServer, postgres_server: Any, model_server: Any, tmp_path: Path
) -> None:
    url = postgres_server.fresh_database()
    collection = f"c_{uuid.uuid4().hex[:10]}"
    settings = settings_for(tmp_path / "data", chroma_server, url, collection)
    folder = make_corpus(tmp_path / "kb_k", "k", 60)  # 60 files of 3 chunks: several groups
    # A remote model taking 0.2 s per batch of 8, so the kill lands inside a group.
    model_server.delay(0.2, kind="embeddings")
    remote = {
        "RAG_EMBEDDINGS__PROVIDER": "openai",
        "RAG_EMBEDDINGS__BASE_URL": model_server.base_url,
        "RAG_EMBEDDINGS__BATCH_SIZE": "8",
        "RAG_EMBEDDINGS__DIMENSIONS": "8",
        "OPENAI_API_KEY": model_server.api_key,
    }
    process = start_ingest(settings, folder, tmp_path / "cwd", **remote)
    state = Bookkeeping(settings, _namespace(settings))  # the namespace needs no collection
    deadline = time.monotonic() + 120
    while not state.records.list_keys(limit=1):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)

    # What a reader can see (the keyword snapshot) is whole files only, records alike.
    records = set(state.records.list_keys())
    keyword = state.keyword.ids()
    assert records == keyword and 0 < len(records)
    per_source: dict[str, int] = {}
    for source, _root in state.manifest.rows():
        per_source[source] = len(state.records.list_keys(group_ids=[source]))
    chunks_per_file = 3  # every file splits alike (heading + three sections, 80 characters)
    assert per_source and all(n == chunks_per_file for n in per_source.values()), per_source
    assert len(records) < 60 * chunks_per_file  # killed before the end

    model_server.delay(0, kind="embeddings")
    done = finish(start_ingest(settings, folder, tmp_path / "cwd", **remote))
    assert not done["files_failed"]
    final = collection_state(settings)
    assert final["records"] == final["keyword"] == final["ids"]
    assert len(final["ids"]) == 60 * chunks_per_file


def _namespace(settings: Settings) -> str:
    store = connect(settings)
    try:
        return store.namespace
    finally:
        store.close()


def test_state_migrate_to_postgresql_and_back_keeps_every_answer(
    postgres_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake"},
        split={"chunk_size": 80, "chunk_overlap": 0},
        retriever={"score_threshold": None},
    )
    folder = make_corpus(tmp_path / "kb", "m", 6)
    use_env(monkeypatch, settings)
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.3")  # fake embeddings score low
    assert run_cli(capsys, "ingest", str(folder))[0] == 0
    questions = ["编号 M-003-2 的规则是第几条", "会员积分说明", "处理时限"]

    def answers() -> list[Any]:
        out = []
        for q in questions:
            code, text, err = run_cli(capsys, "ask", "--json", q)
            assert code == 0, err
            found = json.loads(text)
            out.append((found["answer"], [s["source"] for s in found["sources"]]))
        return out

    before = answers()
    assert all(sources for _, sources in before)  # answered, not refused
    url = postgres_server.fresh_database()
    code, out, err = run_cli(capsys, "state", "migrate", "--to", url, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["verify_ok"] is True, err
    assert report["tables"]["upsertion_record"] == report["tables"]["keyword_docs"] > 0
    # Copying again into a database that holds rows is refused, with the way out named.
    code, _, err = run_cli(capsys, "state", "migrate", "--to", url)
    assert code == 2 and "--replace" in err and "***" not in err

    monkeypatch.setenv("RAG_STATE__URL", url)
    settings.state_db.rename(tmp_path / "moved-away.sqlite")  # answers now come from PostgreSQL
    assert answers() == before
    code, out, err = run_cli(capsys, "verify")
    assert code == 0 and "everything agrees" in out, err
    # A new document lands in PostgreSQL, and the way back carries it too.
    (folder / "m200.md").write_text(corpus_text("m", 200), encoding="utf-8")
    assert run_cli(capsys, "ingest", str(folder))[0] == 0
    back = tmp_path / "back" / "state.sqlite"
    code, out, err = run_cli(capsys, "state", "migrate", "--to", str(back))
    assert code == 0 and "agrees" in out, err
    monkeypatch.delenv("RAG_STATE__URL")
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    back.replace(settings.state_db)
    assert answers()[1:] == before[1:]
    code, out, err = run_cli(capsys, "ask", "--json", "编号 M-200-1 的规则是第几条")
    found = json.loads(out)
    assert code == 0 and found["sources"] and found["sources"][0]["source"] == "m200.md", out


def test_an_unreachable_state_database_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag_pipeline.testing.chroma import free_port

    settings = Settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})
    use_env(monkeypatch, settings)
    url = f"postgresql+psycopg://rag:s3cret-pw@127.0.0.1:{free_port()}/rag"
    monkeypatch.setenv("RAG_STATE__URL", url)
    code, out, err = run_cli(capsys, "ingest", str(make_corpus(tmp_path / "kb", "u", 1)))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "RAG_STATE__URL" in err and "s3cret-pw" not in err + out
    code, out, err = run_cli(capsys, "info")
    assert "s3cret-pw" not in err + out


def test_the_embedding_cache_in_the_state_database_is_shared_by_machines(
    postgres_server: Any, tmp_path: Path
) -> None:
    from sqlalchemy import func, select

    from rag_pipeline.state_db import cached_vectors, reading, state_engine
    from tests.helpers import counting_model

    url = postgres_server.fresh_database()
    folder = make_corpus(tmp_path / "kb_c", "c", 5)
    runs = []
    for machine in ("one", "two"):
        settings = Settings(
            data_dir=tmp_path / machine,  # an embedded store each: only the state is shared
            embeddings={"provider": "fake"},
            split={"chunk_size": 80, "chunk_overlap": 0},
            state={"url": url, "cache": "database"},
            store={"collection": f"c_{machine}"},
        )
        model, counter = counting_model()
        report = ingest([folder], settings, model=model)
        runs.append((report.chunks_added, counter.documents_embedded))
        assert not (settings.data_dir / "embedding-cache").exists()
    (added, embedded), (added_again, embedded_again) = runs
    assert added == embedded == added_again > 0
    assert embedded_again == 0  # every vector came from the other machine's cache
    with reading(state_engine(settings)) as conn:
        assert conn.execute(select(func.count()).select_from(cached_vectors)).scalar() == added
