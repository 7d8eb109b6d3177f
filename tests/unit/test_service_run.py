"""``serve``: what it refuses before starting, and how it hands the app to uvicorn (uvicorn.run
replaced by a recorder: nothing listens)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.service.access_log import ACCESS_LOGGER
from rag_pipeline.service.run import FACTORY, embedded_store, serve
from tests.helpers import fake_settings


@pytest.fixture(autouse=True)
def access_logger_restored() -> Iterator[None]:
    """serve() points the access logger at stderr and stops it propagating: put it back, so
    later tests that capture the access lines still see them."""
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_one_worker_runs_the_app(
    tmp_path: Path, runs: list[tuple[Any, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = fake_settings(tmp_path / "data", serve={"port": 8123})
    assert serve(settings, host=None, port=None, workers=1) == 0
    ((app, options),) = runs
    assert isinstance(app, FastAPI)
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    assert options["access_log"] is False  # ours replaces it: uvicorn's logs query strings
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("rag serve: http://127.0.0.1:8123 ")
    assert "auth off" in out and "http://127.0.0.1:8123/v1" in out


def test_several_workers_need_a_store_server(
    tmp_path: Path, runs: list[tuple[Any, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for settings in (
        fake_settings(tmp_path / "data"),
        fake_settings(tmp_path / "data", store={"mode": "memory"}),
        fake_settings(tmp_path / "data", store={"backend": "milvus", "uri": "x/milvus.db"}),
    ):
        assert embedded_store(settings) is not None
        with pytest.raises(ConfigurationError, match=r"--workers 2 .*RAG_STORE__MODE=http"):
            serve(settings, host=None, port=None, workers=2)
    assert runs == []
    # serve hands its flags to the workers through the environment: let monkeypatch undo it.
    monkeypatch.setenv("RAG_DATA_DIR", "unset")
    monkeypatch.setenv("RAG_STORE__COLLECTION", "unset")
    shared = fake_settings(tmp_path / "shared", store={"mode": "http", "collection": "shop"})
    assert embedded_store(shared) is None
    assert serve(shared, host="127.0.0.1", port=9000, workers=2) == 0
    ((app, options),) = runs
    assert app == FACTORY and options["factory"] is True and options["workers"] == 2
    assert os.environ["RAG_DATA_DIR"] == str(tmp_path / "shared")
    assert os.environ["RAG_STORE__COLLECTION"] == "shop"


def test_an_open_bind_needs_keys(tmp_path: Path, runs: list[tuple[Any, dict[str, Any]]]) -> None:
    with pytest.raises(ConfigurationError, match="refusing to serve on 0.0.0.0 without API keys"):
        serve(fake_settings(tmp_path / "data"), host="0.0.0.0", port=None, workers=1)  # noqa: S104
    keyed = fake_settings(tmp_path / "data", serve={"api_keys": ["k"]})
    assert serve(keyed, host="0.0.0.0", port=None, workers=1) == 0  # noqa: S104
    assert len(runs) == 1
    with pytest.raises(ConfigurationError, match="--workers 0"):
        serve(keyed, host=None, port=None, workers=0)


def test_ctrl_c_and_a_failed_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = fake_settings(tmp_path / "data")

    def interrupted(app: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    def port_taken(app: Any, **kwargs: Any) -> None:
        raise SystemExit(1)  # what uvicorn does when it cannot bind

    monkeypatch.setattr(uvicorn, "run", interrupted)
    assert serve(settings, host=None, port=None, workers=1) == 0
    monkeypatch.setattr(uvicorn, "run", port_taken)
    assert serve(settings, host=None, port=None, workers=1) == 1
