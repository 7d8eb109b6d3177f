"""The testing kit's Milvus server: the session's ``milvus_server`` fixture, a server with
users on (the token path of a cluster or Zilliz Cloud), and the failures a user sees when a
server does not start. Extra servers reuse the session's unpacked binaries."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from rag_pipeline.assistant import Assistant
from rag_pipeline.config import Settings
from rag_pipeline.errors import StoreUnavailableError
from rag_pipeline.indexing import ingest
from rag_pipeline.stores import connect
from rag_pipeline.testing import assert_answers, assert_refused, milvus_standalone
from rag_pipeline.testing.milvus_standalone import MilvusServer
from tests.helpers import SMALL_CORPUS, write_corpus

pytest.importorskip("pymilvus")


def group_is_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # signal 0: only asks whether the group still has a process
    except ProcessLookupError:
        return True
    return False


def settings_on(server: MilvusServer, tmp_path: Path) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake", "cache": False},
        retriever={"score_threshold": None},
        llm={"provider": "extractive"},
    )
    return server.settings(base)


def test_every_port_is_its_own(milvus_server: MilvusServer) -> None:
    from pymilvus import MilvusClient

    ports = milvus_server.ports
    assert ports["proxy_port"] == milvus_server.port
    assert len(set(ports.values())) == len(ports)  # no two the same, none a default
    # The proxy, the health port and the embedded etcd listen where the kit told them to
    # (etcd would be on 2379/2380 if its own config file were ignored).
    for name in ("proxy_port", "metrics_port", "etcd_port", "etcd_peer_port"):
        with socket.create_connection((milvus_server.host, ports[name]), timeout=2):
            pass
    client = MilvusClient(uri=milvus_server.url)
    try:
        assert str(client.get_server_version()).startswith("v2.3.")
    finally:
        client.close()


@pytest.fixture
def rag_corpus(tmp_path: Path) -> Path:
    return write_corpus(
        tmp_path / "docs", {"shipping.md": "# 配送\n\n订单满99元包邮，不满99元收取运费8元。"}
    )


@pytest.mark.parametrize("rag_store", ["milvus_server"])
def test_rag_store_on_the_server(
    assistant: Assistant, rag_settings: Settings, milvus_server: MilvusServer
) -> None:
    assert rag_settings.store.backend == "milvus"
    assert rag_settings.store.uri == milvus_server.url
    assert_answers(assistant.ask("不满99元运费多少"), contains="8元", cites="shipping.md")
    assert_refused(assistant.ask("明天天气怎么样"))


def test_a_token_server_and_cleanup_after_a_failure(
    milvus_server: MilvusServer, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "corpus", SMALL_CORPUS)
    with pytest.raises(KeyError, match="the test's own failure"):
        with milvus_standalone.milvus_server(
            tmp_path / "auth", authorization=True, binaries=milvus_server.binaries
        ) as server:
            pid = server.process.pid if server.process else -1
            root = server.root
            settings = settings_on(server, tmp_path)
            assert settings.store.token is not None
            assert settings.store.token.get_secret_value() == "root:Milvus"
            assert ingest([corpus], settings).chunks_added > 0
            assert Assistant.from_settings(settings).ask("运费怎么算").sources

            anonymous = settings.model_copy(
                update={"store": settings.store.model_copy(update={"token": None})}
            )
            wrong = settings.model_copy(
                update={
                    "store": settings.store.model_copy(update={"token": SecretStr("root:wr0ng-pw")})
                }
            )
            for refused in (anonymous, wrong):
                with pytest.raises(StoreUnavailableError) as info:
                    connect(refused).count()
                assert "RAG_STORE__TOKEN" in str(info.value)
                assert "wr0ng-pw" not in str(info.value)
            raise KeyError("the test's own failure")
    # Stopped with everything of its process group, its folder gone, even so.
    assert group_is_gone(pid)
    assert root is not None and not root.exists()


def test_a_server_that_does_not_answer_in_time_names_its_log(
    milvus_server: MilvusServer, tmp_path: Path
) -> None:
    server = MilvusServer(tmp_path, binaries=milvus_server.binaries)
    try:
        with pytest.raises(TimeoutError) as info:
            server.start(timeout=0.3)  # it needs a few seconds
        message = str(info.value)
        assert "did not answer within" in message and str(server.log_path) in message
        assert server.process is None  # start() stopped it
        assert "milvus run standalone" in server.log_path.read_text(encoding="utf-8")
    finally:
        server.remove()


def test_a_taken_port_fails_before_launching(milvus_server: MilvusServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MilvusServer(tmp_path, port=port, binaries=milvus_server.binaries)
        try:
            with pytest.raises(RuntimeError, match=f"proxy_port={port}"):
                server.start()
            assert server.process is None
        finally:
            server.remove()
