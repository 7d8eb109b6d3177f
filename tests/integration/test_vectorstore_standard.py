"""LangChain's standard ``VectorStore`` contract over the stores our factory builds.

Each backend runs ``langchain_tests``' ``VectorStoreIntegrationTests`` against
``open_store(settings, model, create=True).vector_store``: the object a user gets when they
take our vector store out and use it in their own LangChain code. The embeddings are the
suite's own deterministic fake (``get_embeddings()``, 6 dimensions) behind our
``EmbeddingModel``, so the collection records a matching fingerprint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import EmbeddingModel
from rag_pipeline.stores import VectorBackend, open_store
from rag_pipeline.testing.chroma import ChromaServer
from rag_pipeline.testing.milvus_standalone import MilvusServer

EMBEDDING_SIZE = 6  # langchain_tests' DeterministicFakeEmbedding size


@pytest.fixture(scope="module")
def server(chroma_server: ChromaServer) -> ChromaServer:
    return chroma_server  # the plugin's, shared by the session: tests use fresh collections


def unique_collection() -> str:
    return f"std_{uuid.uuid4().hex[:12]}"


class _OurStore(VectorStoreIntegrationTests):
    """Builds an empty collection through ``open_store`` and drops it afterwards."""

    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
        raise NotImplementedError(type(self).__name__)

    def open_backend(self, tmp_path: Path, store: dict[str, Any]) -> VectorBackend:
        settings = Settings(
            data_dir=tmp_path / "data",
            embeddings={"provider": "fake", "dimensions": EMBEDDING_SIZE},
            store=store,
        )
        model = EmbeddingModel(self.get_embeddings(), "fake", "deterministic-fake", EMBEDDING_SIZE)
        backend: VectorBackend = open_store(settings, model, create=True)
        assert backend.stored_fingerprint() == f"fake:deterministic-fake:{EMBEDDING_SIZE}"
        return backend

    @pytest.fixture
    def vectorstore(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VectorStore]:
        backend = self.open_backend(tmp_path, self.store_settings(tmp_path, request))
        try:
            yield backend.vector_store
        finally:
            backend.drop()
            backend.close()


class TestChromaPersistent(_OurStore):
    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
        return {"mode": "persistent"}


class TestChromaMemory(_OurStore):
    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
        # In-process EphemeralClients share one database: a fresh name per test.
        return {"mode": "memory", "collection": unique_collection()}


class TestChromaHttp(_OurStore):
    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
        server: ChromaServer = request.getfixturevalue("server")
        return {
            "mode": "http",
            "host": server.host,
            "port": server.port,
            "collection": unique_collection(),
        }


class TestMilvusLite(_OurStore):
    def store_settings(self, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        return {"backend": "milvus", "uri": str(tmp_path / "milvus.db")}


class TestMilvusServer(_OurStore):
    """One collection for the class, emptied before each test: creating, indexing and loading
    a collection takes about 3 s on the server, for each of the suite's 25 tests otherwise."""

    @pytest.fixture(scope="class")
    def shared_backend(
        self, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
    ) -> Iterator[VectorBackend]:
        pytest.importorskip("pymilvus")
        server: MilvusServer = request.getfixturevalue("milvus_server")  # the session's
        store = {"backend": "milvus", "uri": server.url, "collection": unique_collection()}
        backend = self.open_backend(tmp_path_factory.mktemp("milvus-std"), store)
        try:
            yield backend
        finally:
            backend.drop()
            backend.close()

    @pytest.fixture
    def vectorstore(self, shared_backend: VectorBackend) -> Iterator[VectorStore]:
        shared_backend.delete([record.id for batch in shared_backend.scan() for record in batch])
        assert shared_backend.count() == 0
        yield shared_backend.vector_store
