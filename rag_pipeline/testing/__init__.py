"""The pytest plugin users test their bots with: a real local Chroma, a scripted model server
and assertions with readable messages.

``pip install "rag-pipeline[testing]"`` adds pytest; pytest then loads this module through the
``rag_pipeline.testing`` entry point (an entry point belongs to the package, not to an extra:
it is there whenever rag-pipeline is, so the plugin is made to cost nothing instead).
``-p no:rag_pipeline.testing`` turns it off; with plugin autoloading disabled,
``-p rag_pipeline.testing`` or ``pytest_plugins = ["rag_pipeline.testing"]`` turns it on.
Loading it imports this small module and one option: the fixtures import rag_pipeline's
stages, Chroma and LangChain only when a test asks for them, and none is autouse, so a test
that uses none of them runs exactly as without the plugin.

Fixtures:

* ``rag_settings``: :class:`~rag_pipeline.config.Settings` on a ``tmp_path`` data folder, fake
  deterministic embeddings (``--rag-real-model``: the packaged local model), persistent Chroma,
  extractive answers, nothing read from the environment. ``rag_settings_factory(**overrides)``
  builds more of them; override ``rag_settings`` in a conftest.py to change them for a folder.
* ``rag_store``: where ``rag_settings`` stores vectors, ``"persistent"`` (default),
  ``"memory"``, ``"chroma_server"``, ``"milvus_lite"`` or ``"milvus_server"``; parametrize it
  to run a test on several.
* ``chroma_server``: one ``chroma run`` process on a free 127.0.0.1 port for the session;
  ``chroma_server.settings(rag_settings)`` points settings at a fresh collection on it.
* ``milvus_lite``: settings on a milvus-lite file (skipped without the ``[milvus]`` extra).
* ``milvus_server``: a real Milvus standalone server on free 127.0.0.1 ports for the session
  (:class:`~rag_pipeline.testing.milvus_standalone.MilvusServer`);
  ``milvus_server.settings(rag_settings)`` points settings at a fresh collection on it.
  Skipped without the ``[milvus-server]`` extra (the ``milvus`` package, Linux x86-64).
* ``postgres_server``: a throwaway PostgreSQL cluster on a free 127.0.0.1 port for the session
  (:class:`~rag_pipeline.testing.postgres.PostgresServer`); ``postgres_server.fresh_database()``
  gives the SQLAlchemy URL of a new empty database. Skipped without the ``[postgres]`` extra;
  fails, saying how to install them, without the server binaries (``--rag-postgres-bindir``
  names their folder).
* ``ingested(folder_or_files, settings=None)``: ingest into ``rag_settings``' store, return the
  :class:`~rag_pipeline.indexing.IngestReport`.
* ``model_server``: an OpenAI- and DashScope-compatible server for chat and embeddings
  (:class:`~rag_pipeline.testing.model_api.ModelServer`); ``model_server.settings(s)``.
* ``assistant``: an :class:`~rag_pipeline.assistant.Assistant` over ``rag_corpus`` (a folder
  your conftest.py names), ingested with ``rag_settings``.

A test of a bot::

    @pytest.fixture
    def rag_corpus() -> Path:
        return Path(__file__).parent / "docs"

    def test_refund(assistant: Assistant) -> None:
        assert_answers(assistant.ask("怎么退款"), contains="7天", cites="refund-policy.md")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rag_pipeline.testing.assertions import (
    assert_answers,
    assert_no_model_call,
    assert_refused,
)

if TYPE_CHECKING:
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.config import Settings
    from rag_pipeline.indexing import IngestReport
    from rag_pipeline.testing.chroma import ChromaServer
    from rag_pipeline.testing.milvus_standalone import MilvusServer
    from rag_pipeline.testing.model_api import ModelServer
    from rag_pipeline.testing.postgres import PostgresServer

Ingest = Callable[..., "IngestReport"]
STORES = ("persistent", "memory", "chroma_server", "milvus_lite", "milvus_server")

# Names importable from here without importing the modules that define them up front. No
# submodule may be named like a fixture: importing rag_pipeline.testing.X binds X in this
# module, and a plugin registered after that would find a module instead of the fixture.
_LAZY = {
    "ChromaServer": "rag_pipeline.testing.chroma",
    "MilvusServer": "rag_pipeline.testing.milvus_standalone",
    "ModelServer": "rag_pipeline.testing.model_api",
    "PostgresServer": "rag_pipeline.testing.postgres",
    "isolated_settings": "rag_pipeline.testing.settings",
    "override": "rag_pipeline.testing.settings",
}
__all__ = [
    "ChromaServer",
    "Ingest",
    "MilvusServer",
    "ModelServer",
    "PostgresServer",
    "assert_answers",
    "assert_no_model_call",
    "assert_refused",
    "isolated_settings",
    "override",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rag_pipeline.testing' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rag_pipeline", "rag_pipeline testing kit")
    group.addoption(
        "--rag-real-model",
        action="store_true",
        default=False,
        help="rag_settings embed with the packaged local model (slower) instead of fake "
        "hashed-character embeddings, with the production score threshold",
    )
    group.addoption(
        "--rag-postgres-bindir",
        default=None,
        metavar="DIR",
        help="the folder of the PostgreSQL server programs the postgres_server fixture runs "
        "(default: what `pg_config --bindir` prints, else the newest /usr/lib/postgresql/*/bin, "
        "else initdb's folder on PATH)",
    )


@pytest.fixture
def rag_store() -> str:
    """Where ``rag_settings`` keeps vectors; parametrize to run a test on other stores:
    ``@pytest.mark.parametrize("rag_store", ["persistent", "chroma_server"])``."""
    return "persistent"


@pytest.fixture
def rag_settings_factory(tmp_path: Path, pytestconfig: pytest.Config) -> Callable[..., Settings]:
    """``factory(**overrides) -> Settings``: the defaults of ``rag_settings`` (in
    ``tmp_path / "rag-data"``) with ``overrides``, a dict per section changing only the keys it
    names: ``factory(retriever={"k": 3}, store={"mode": "memory"})``."""
    from rag_pipeline.testing.settings import isolated_settings

    real_model = bool(pytestconfig.getoption("rag_real_model"))

    def factory(**overrides: Any) -> Settings:
        data_dir = overrides.pop("data_dir", tmp_path / "rag-data")
        return isolated_settings(data_dir, real_model=real_model, **overrides)

    return factory


@pytest.fixture
def rag_settings(
    rag_settings_factory: Callable[..., Settings], rag_store: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings for one test: its own data folder, the store ``rag_store`` names."""
    if rag_store not in STORES:
        raise pytest.UsageError(f"rag_store must be one of {', '.join(STORES)}, got {rag_store!r}")
    if rag_store == "chroma_server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        return server.settings(rag_settings_factory())
    if rag_store == "milvus_lite":
        milvus: Settings = request.getfixturevalue("milvus_lite")
        return milvus
    if rag_store == "milvus_server":
        import importlib.util

        if importlib.util.find_spec("pymilvus") is None:  # the client, not the server
            pytest.skip(
                'milvus_server needs the [milvus] extra: pip install "rag-pipeline[milvus]"'
            )
        milvus_server: MilvusServer = request.getfixturevalue("milvus_server")
        return milvus_server.settings(rag_settings_factory())
    settings = rag_settings_factory()
    if rag_store == "memory":
        from rag_pipeline.testing.settings import fresh_collection, override

        # In-memory clients of one process share their collections: a fresh name per test.
        return override(settings, store={"mode": "memory", "collection": fresh_collection()})
    return settings


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real ``chroma run`` on a free 127.0.0.1 port, shared by the session, stopped at its
    end; ``chroma_server.settings(rag_settings)`` for settings on a fresh collection."""
    from rag_pipeline.testing.chroma import chroma_server as running

    with running(tmp_path_factory.mktemp("rag-chroma-server") / "chroma") as server:
        yield server


@pytest.fixture
def milvus_lite(rag_settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Settings on a milvus-lite file in ``tmp_path``; skipped when the ``[milvus]`` extra is
    not installed."""
    import importlib.util

    for module in ("pymilvus", "milvus_lite"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"milvus_lite needs the [milvus] extra ({module} is not installed): "
                'pip install "rag-pipeline[milvus]"'
            )
    uri = str(tmp_path / "milvus.db")
    return rag_settings_factory(store={"backend": "milvus", "uri": uri})


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus standalone server (the ``milvus`` package's) on free 127.0.0.1 ports in a
    temporary folder, shared by the session, stopped with its process group at its end;
    ``milvus_server.settings(rag_settings)`` for settings on a fresh collection. Skipped when
    the ``[milvus-server]`` extra is not installed."""
    from rag_pipeline.testing.milvus_standalone import milvus_server as running
    from rag_pipeline.testing.milvus_standalone import missing_package

    reason = missing_package()
    if reason is not None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("rag-milvus-server")
    # binaries: other servers of the session can reuse them (MilvusServer(binaries=...)).
    with running(folder, binaries=folder / "binaries") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    """A real PostgreSQL (a temporary ``initdb`` cluster) on a free 127.0.0.1 port, shared by
    the session, stopped and deleted at its end; ``postgres_server.fresh_database()`` returns
    the SQLAlchemy URL of a new empty database. Skipped when the ``[postgres]`` extra is not
    installed; an error saying how to install them when the server binaries are missing."""
    from rag_pipeline.testing.postgres import PostgresNotInstalled, find_bindir, missing_extra
    from rag_pipeline.testing.postgres import postgres_server as running

    reason = missing_extra()
    if reason is not None:
        pytest.skip(reason)
    bindir = pytestconfig.getoption("rag_postgres_bindir")
    try:
        find_bindir(bindir)
    except PostgresNotInstalled as e:  # a failure, not a skip: CI must have the server
        pytest.fail(str(e), pytrace=False)
    with running(bindir=bindir) as server:
        yield server


@pytest.fixture
def ingested(rag_settings: Settings) -> Ingest:
    """``ingested(folder_or_files, settings=None) -> IngestReport``: ingest a folder, a file or
    a list of them into ``rag_settings``' store (or ``settings``')."""
    from rag_pipeline.indexing import ingest

    def run(
        folder_or_files: str | Path | Iterable[str | Path], settings: Settings | None = None
    ) -> IngestReport:
        if isinstance(folder_or_files, str | Path):
            paths = [Path(folder_or_files)]
        else:
            paths = [Path(p) for p in folder_or_files]
        return ingest(paths, settings or rag_settings)

    return run


@pytest.fixture
def rag_corpus() -> Path:
    """The folder the ``assistant`` fixture ingests: define this fixture in your conftest.py
    (or parametrize it)."""
    pytest.fail(
        "the `assistant` fixture ingests the folder the `rag_corpus` fixture returns: define "
        "`rag_corpus` in your conftest.py or test module, e.g. "
        "`return Path(__file__).parent / 'docs'`",
        pytrace=False,
    )


@pytest.fixture
def assistant(rag_settings: Settings, rag_corpus: Path, ingested: Ingest) -> Assistant:
    """An ``Assistant`` from ``rag_settings`` over ``rag_corpus``, ingested first."""
    from rag_pipeline.assistant import Assistant

    report = ingested(rag_corpus)
    if report.files_ingested == 0 and report.chunks_unchanged == 0:
        pytest.fail(f"nothing was ingested from {rag_corpus}: {report.to_dict()}", pytrace=False)
    return Assistant.from_settings(rag_settings)


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """An OpenAI- and DashScope-compatible chat/embeddings server on 127.0.0.1 for one test;
    ``model_server.settings(rag_settings)`` points the chat model at it."""
    from rag_pipeline.testing.model_api import ModelServer

    with ModelServer() as server:
        yield server
