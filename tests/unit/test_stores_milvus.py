"""The Milvus backend's parts that need no database: URIs, expressions, metadata names, ids,
and the errors raised before connecting (a real milvus-lite database runs in
tests/integration/test_milvus_backend.py)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import HashingEmbeddings
from rag_pipeline.errors import ConfigurationError, MissingExtraError
from rag_pipeline.stores.filters import to_milvus as milvus_expr
from rag_pipeline.stores.milvus import (
    MilvusBackend,
    _clean_metadata,
    _fill_ids,
    _restore_metadata,
    is_server_uri,
    milvus_filter,
    redact_uri,
)


def milvus_settings(tmp_path: Path, **store: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake"},
        store={
            "backend": "milvus",
            "uri": str(tmp_path / "m.db"),
            "collection": "test_docs",
            **store,
        },
    )


def test_expressions() -> None:
    assert milvus_expr(None) == ""
    assert milvus_expr({"source": "faq.csv"}) == 'source == "faq.csv"'
    assert milvus_expr({"source": "a.md", "page": 2, "ok": True}) == (
        '(source == "a.md") and (page == 2) and (ok == true)'
    )
    assert milvus_expr({"source": 'a"b\\c'}) == 'source == "a\\"b\\\\c"'
    assert milvus_expr({"doc_type": {"$in": ["faq", "policy"]}}) == (
        'doc_type in ["faq", "policy"]'
    )
    assert milvus_expr({"odd key": 1}) == '$meta["odd key"] == 1'
    assert redact_uri("https://user:pw@host:19530/db") == "https://host:19530/db"


def test_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(MissingExtraError, match=r"rag-pipeline\[milvus\]"):
        MilvusBackend(milvus_settings(tmp_path), HashingEmbeddings(256))


def test_lite_path_must_end_in_db(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        embeddings={"provider": "fake"},
        store={"backend": "milvus", "uri": str(tmp_path / "m.sqlite")},
    )
    with pytest.raises(ConfigurationError, match=r"\.db"):
        MilvusBackend(settings, HashingEmbeddings(256))


@pytest.mark.parametrize(
    ("uri", "server"),
    [
        ("http://localhost:19530", True),
        ("https://milvus.example.com", True),
        ("tcp://10.0.0.2:19530", True),
        ("GRPC://host:1", True),
        ("kb.db", False),
        ("/data/milvus/kb.db", False),
        ("./relative/kb.db", False),
    ],
)
def test_server_uris_and_lite_files(uri: str, server: bool) -> None:
    assert is_server_uri(uri) is server


def test_redact_uri_keeps_everything_but_the_credentials() -> None:
    assert redact_uri("http://root:Milvus@localhost:19530") == "http://localhost:19530"
    assert redact_uri("https://u@host/db?x=1") == "https://host/db?x=1"
    assert redact_uri("http://localhost:19530") == "http://localhost:19530"
    assert redact_uri("/data/kb.db") == "/data/kb.db"


def test_milvus_filter_joins_metadata_and_content() -> None:
    assert milvus_filter(None, None) == ""
    assert milvus_filter({"source": "a.md"}, None) == 'source == "a.md"'
    both = milvus_filter({"source": "a.md"}, {"$contains": "运费"})
    assert both.startswith('(source == "a.md") and (') and "运费" in both


def test_reserved_metadata_names_round_trip() -> None:
    metadata = {"text": "x", "pk": 1, "vector": [1], "source": "a.md"}
    cleaned = _clean_metadata(metadata)
    assert "text" not in cleaned and cleaned["metadata_text"] == "x"
    assert cleaned["source"] == "a.md"
    assert _restore_metadata(cleaned) == metadata
    assert _restore_metadata({"metadata_other": 1}) == {"metadata_other": 1}  # not reserved


def test_missing_ids_are_filled_with_uuids() -> None:
    filled = _fill_ids(["a", None, ""], 3)
    assert filled[0] == "a" and len(set(filled)) == 3
    for fresh in filled[1:]:
        uuid.UUID(fresh)
    assert len(_fill_ids(None, 2)) == 2


def test_locations_and_namespaces_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MilvusBackend, "_connect", lambda self: object())  # no client
    lite = MilvusBackend(milvus_settings(tmp_path), None)
    assert lite.lite and lite.location == str(tmp_path / "m.db")
    assert lite.namespace == f"milvus/{tmp_path / 'm.db'}/test_docs"
    server = MilvusBackend(milvus_settings(tmp_path, uri="http://root:secret@db:19530"), None)
    assert not server.lite and server.location == "http://db:19530"
    assert "secret" not in server.namespace
    default = MilvusBackend(
        Settings(
            data_dir=tmp_path / "d2", embeddings={"provider": "fake"}, store={"backend": "milvus"}
        ),
        None,
    )
    assert default.location == str(tmp_path / "d2" / "milvus.db")


class RecordingClient:
    """Stands in for pymilvus' MilvusClient: records what it was built with, talks to nobody."""

    built: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingClient.built.append(kwargs)

    def close(self) -> None:
        pass


def test_the_token_reaches_the_client_and_no_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pymilvus = pytest.importorskip("pymilvus")
    from rag_pipeline.config import load_settings
    from rag_pipeline.errors import StoreUnavailableError

    monkeypatch.chdir(tmp_path)  # no rag.toml or .env of the developer's
    monkeypatch.setattr(pymilvus, "MilvusClient", RecordingClient)
    monkeypatch.setattr(RecordingClient, "built", [])
    monkeypatch.setenv("RAG_STORE__BACKEND", "milvus")
    monkeypatch.setenv("RAG_STORE__URI", "https://in01-abc.zillizcloud.com:19530")
    monkeypatch.setenv("RAG_STORE__TOKEN", "db_admin:s3cret-key")
    settings = load_settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()

    backend = MilvusBackend(settings, None)
    assert RecordingClient.built == [
        {"uri": "https://in01-abc.zillizcloud.com:19530", "token": "db_admin:s3cret-key"}
    ]
    assert not backend.lite and "s3cret" not in backend.namespace + backend.location

    # Without a token the client gets "" (pymilvus' own default: no credentials).
    monkeypatch.delenv("RAG_STORE__TOKEN")
    MilvusBackend(load_settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"}), None)
    assert RecordingClient.built[-1]["token"] == ""

    # A client error that repeats the token is reported without it.
    def refuse(**kwargs: Any) -> None:
        raise RuntimeError(f"auth failed for token {kwargs['token']}")

    monkeypatch.setattr(pymilvus, "MilvusClient", refuse)
    with pytest.raises(StoreUnavailableError) as info:
        MilvusBackend(settings, None)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert "RAG_STORE__TOKEN" in str(info.value)
