"""The public surface of rag_pipeline.testing, pinned: what a user's tests import from it, and
the fixtures and option the plugin adds."""

from __future__ import annotations

import rag_pipeline.testing as plugin

EXPORTS = [
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
FIXTURES = [
    "assistant",
    "chroma_server",
    "ingested",
    "milvus_lite",
    "milvus_server",
    "model_server",
    "postgres_server",
    "rag_corpus",
    "rag_settings",
    "rag_settings_factory",
    "rag_store",
]


def test_exports() -> None:
    assert plugin.__all__ == EXPORTS
    for name in EXPORTS:
        assert getattr(plugin, name) is not None


def test_fixtures_and_hooks() -> None:
    defined = sorted(
        name
        for name, value in vars(plugin).items()
        if type(value).__name__ == "FixtureFunctionDefinition"
    )
    assert defined == FIXTURES
    assert callable(plugin.pytest_addoption)
    assert plugin.STORES == (
        "persistent",
        "memory",
        "chroma_server",
        "milvus_lite",
        "milvus_server",
    )


def test_no_submodule_hides_a_fixture() -> None:
    # Importing rag_pipeline.testing.X binds X in the package: X must not be a fixture's name.
    from pathlib import Path

    submodules = {path.stem for path in Path(plugin.__file__).parent.glob("*.py")}
    assert submodules.isdisjoint(FIXTURES)
