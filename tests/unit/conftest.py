"""The unit tier: no network, no subprocess, no real embedding model.

Each guard fails the offending test loudly instead of letting it pass slowly or flakily; a test
that needs one of these belongs in ``tests/integration/``.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest


class UnitTierViolation(AssertionError):
    """A unit test tried to reach the network, start a process or load the real model."""


def _is_local_socket(sock: socket.socket) -> bool:
    return sock.family == socket.AF_UNIX


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connect to a non-AF_UNIX address raises (loopback included: a unit test talks to
    no server, not even a local stub)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if _is_local_socket(self):
            return real_connect(self, address)
        raise UnitTierViolation(f"unit tests must not open network connections: {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if _is_local_socket(self):
            return real_connect_ex(self, address)
        raise UnitTierViolation(f"unit tests must not open network connections: {address!r}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise UnitTierViolation(f"unit tests must not open network connections: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture(autouse=True)
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a child process raises: subprocess tests live in tests/integration/."""

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise UnitTierViolation(f"unit tests must not start processes: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture(autouse=True)
def no_real_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the real local model raises; unit tests use ``provider="fake"``
    (``HashingEmbeddings``). Constructing ``LocalE5Embeddings`` stays allowed: it loads
    nothing until the first embed call."""
    from rag_pipeline.embeddings import LocalE5Embeddings

    def refuse(self: LocalE5Embeddings) -> Any:
        raise UnitTierViolation(
            "unit tests must not load the real local model: use embeddings provider 'fake'"
        )

    monkeypatch.setattr(LocalE5Embeddings, "_e5", refuse)
