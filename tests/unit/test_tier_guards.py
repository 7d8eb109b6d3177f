"""The unit tier's guards (tests/unit/conftest.py) are on: network, processes and the real
model are refused, while what the unit tests do rely on keeps working."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pipeline.embeddings import LocalE5Embeddings
from tests.unit.conftest import UnitTierViolation


def test_tcp_connections_are_refused() -> None:
    with pytest.raises(UnitTierViolation, match="network"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(UnitTierViolation, match="network"):
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(UnitTierViolation, match="network"):
            sock.connect_ex(("127.0.0.1", 9))


def test_http_clients_are_refused() -> None:
    import httpx

    with pytest.raises(UnitTierViolation):
        httpx.get("http://127.0.0.1:9/", timeout=1)


def test_unix_sockets_still_work(tmp_path: Path) -> None:
    left, right = socket.socketpair()  # what asyncio's event loop uses
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen(1)
        client.connect(path)


def test_processes_are_refused() -> None:
    with pytest.raises(UnitTierViolation, match="processes"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_the_real_model_is_refused_but_may_be_constructed() -> None:
    model = LocalE5Embeddings(threads=1)  # loads nothing yet
    with pytest.raises(UnitTierViolation, match="fake"):
        model.embed_query("你好")


def test_in_memory_chroma_works_under_the_guards(tmp_path: Path) -> None:
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.stores import open_store
    from tests.helpers import memory_settings

    settings = memory_settings(tmp_path)
    store = open_store(settings, build_embedding_model(settings), create=True)
    assert store.count() == 0
    store.drop()
