"""Chroma in client/server mode: a real ``chroma run`` subprocess on a free local port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import HashingEmbeddings, build_embedding_model
from rag_pipeline.errors import StoreUnavailableError
from rag_pipeline.indexing import ingest
from rag_pipeline.retrieval import build_retriever
from rag_pipeline.stores import VectorBackend, open_store
from rag_pipeline.stores.chroma import ChromaBackend
from rag_pipeline.testing.chroma import ChromaServer, chroma_server, free_port

CORPUS = {
    "returns.md": (
        "# 退货政策\n\n## 七天无理由退货\n\n签收后7天内可申请无理由退货，商品需保持完好。\n\n"
        "## 退款时效\n\n退款将在仓库验收后3个工作日内原路退回。"
    ),
    "shipping.txt": "配送说明：订单满99元包邮，不满99元收取运费8元，偏远地区另计。",
    "payment.md": "# 支付方式\n\n支持微信支付、支付宝、银联卡和花呗分期。",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server") / "chroma") as running:
        yield running


def http_settings(data_dir: Path, port: int, host: str = "127.0.0.1") -> Settings:
    return Settings(
        data_dir=data_dir,
        embeddings={"provider": "fake"},
        store={"mode": "http", "host": host, "port": port, "collection": "http_docs"},
        split={"chunk_size": 60, "chunk_overlap": 0},
    )


def reopen(settings: Settings) -> VectorBackend:
    return open_store(settings, build_embedding_model(settings), create=False)


def test_ingest_survives_a_server_restart(server: ChromaServer, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in CORPUS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    settings = http_settings(tmp_path / "data", server.port, server.host)

    first = ingest([corpus], settings)
    n = first.chunks_added
    assert first.files_failed == [] and n >= len(CORPUS)
    store = reopen(settings)
    assert isinstance(store, ChromaBackend)
    assert store.location.startswith(f"http://{server.host}:{server.port}")
    assert store.count() == n
    assert set(store.sources()) == {f"corpus/{name}" for name in CORPUS}

    again = ingest([corpus], settings)
    assert again.chunks_added == again.chunks_deleted == 0
    assert again.chunks_unchanged == n

    server.restart()

    store = reopen(settings)
    assert store.count() == n
    embeddings = HashingEmbeddings(256)
    target = store.search(embeddings.embed_query("退款时效"), 1)[0].document
    docs = build_retriever(settings, store, embeddings).invoke(target.page_content)
    assert docs[0].id == target.id
    assert docs[0].metadata["score"] == pytest.approx(1.0, abs=1e-3)
    # The record manager still matches the server's data: nothing to re-embed.
    assert ingest([corpus], settings).chunks_unchanged == n


def test_telemetry_is_off(server: ChromaServer, tmp_path: Path) -> None:
    assert server.process is not None
    environ = Path(f"/proc/{server.process.pid}/environ")
    if environ.exists():
        variables = environ.read_bytes().split(b"\0")
        assert b"ANONYMIZED_TELEMETRY=False" in variables
    settings = http_settings(tmp_path / "data", server.port, server.host)
    store = open_store(settings, build_embedding_model(settings), create=True)
    assert isinstance(store, ChromaBackend)
    assert store.client.get_settings().anonymized_telemetry is False


def test_unreachable_server_is_a_store_unavailable_error(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    settings = http_settings(tmp_path / "data", port)
    with pytest.raises(StoreUnavailableError) as info:
        open_store(settings, build_embedding_model(settings), create=True)
    message = str(info.value)
    assert "chroma run" in message
    assert str(port) in message


def test_server_helper_failures_are_diagnosable(server: ChromaServer, tmp_path: Path) -> None:
    # A server that dies on start: the error carries the tail of its log.
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("x", encoding="utf-8")
    broken = ChromaServer(not_a_folder)
    with pytest.raises(RuntimeError, match="exited with code") as info:
        broken.start(timeout=30)
    assert str(broken.log_path) in str(info.value)
    assert "chroma" in str(info.value).lower()
    assert broken.process is None
    # A port somebody else serves would answer our heartbeats: refused up front.
    with pytest.raises(RuntimeError, match="in use"):
        ChromaServer(tmp_path / "other", port=server.port).start(timeout=30)
