"""Bad state gets one clear line, never a traceback: garbage or truncated files in the data
folder, a data folder that is a file, unparsable JSON settings, index settings that differ from
the collection's; and `rag verify` on a healthy and a damaged collection."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from tests.helpers import STORE_CORPUS, fake_settings, run_cli, use_env, write_corpus


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fake_settings(
        tmp_path / "data", embeddings={"cache": False}, split={"chunk_size": 80, "chunk_overlap": 0}
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "kb", STORE_CORPUS)


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code, _, err = run_cli(capsys, *argv)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("state.sqlite", "rag verify --repair"),
        ("chroma/chroma.sqlite3", "rag ingest --rebuild"),
    ],
)
def test_a_garbage_file_in_the_data_folder_is_named(
    settings: Settings,
    corpus: Path,
    name: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    damaged = settings.data_dir / name
    damaged.write_bytes(b"this is not a database" * 100)
    use_env(monkeypatch, settings)
    commands = [["ingest", str(corpus)], ["verify"], ["ask", "退款多久到账"]]
    for argv in commands:
        code, err = one_line_error(capsys, *argv)
        assert code == 2 and str(damaged.parent if "chroma" in name else damaged) in err, err
        assert says in err


def test_a_truncated_chroma_database_is_named(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    database = settings.data_dir / "chroma" / "chroma.sqlite3"
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 3])
    use_env(monkeypatch, settings)
    code, err = one_line_error(capsys, "ask", "退款多久到账")
    assert code == 2 and "chroma" in err


def test_a_data_folder_that_is_a_file(
    tmp_path: Path,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("x", encoding="utf-8")
    use_env(monkeypatch, fake_settings(not_a_folder))
    code, err = one_line_error(capsys, "ingest", str(corpus))
    assert code == 2 and str(not_a_folder) in err and "RAG_DATA_DIR" in err


@pytest.mark.parametrize("name", ["RAG_RETRIEVER__FILTER", "RAG_RETRIEVER__WHERE_DOCUMENT"])
def test_malformed_json_settings_are_named(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, '{"page": ')
    code, err = one_line_error(capsys, "config")
    assert code == 2 and f"{name} is not valid JSON" in err


def test_another_distance_space_is_refused_until_rebuilt(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    use_env(monkeypatch, settings)
    monkeypatch.setenv("RAG_STORE__SPACE", "l2")
    for argv in (["ask", "退款多久到账"], ["ingest", str(corpus)]):
        code, err = one_line_error(capsys, *argv)
        assert code == 2 and "space=cosine" in err and "RAG_STORE__SPACE=l2" in err
    code, out, err = run_cli(capsys, "verify", "--json")
    assert code == 6 and any(
        p["kind"] == "index settings mismatch" for p in json.loads(out)["problems"]
    )
    code, _, err = run_cli(capsys, "ingest", str(corpus), "--rebuild")
    assert code == 0, err
    code, out, err = run_cli(capsys, "info", "--json")
    assert code == 0, err
    # ef_search may change in place: a writer applies it.
    monkeypatch.setenv("RAG_STORE__EF_SEARCH", "123")
    assert run_cli(capsys, "ingest", str(corpus))[0] == 0
    from rag_pipeline.stores import connect

    backend = connect(
        settings.model_copy(update={"store": settings.store.model_copy(update={"space": "l2"})})
    )
    assert backend.exists() and backend.index_settings()["ef_search"] == 123
    assert backend.index_settings()["space"] == "l2"


def test_verify_reports_agreement_and_repairs_damage(
    settings: Settings,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest([corpus], settings)
    use_env(monkeypatch, settings)
    code, out, err = run_cli(capsys, "verify")
    assert code == 0 and "everything agrees" in out, err

    # Damage the keyword index and the records behind the package's back.
    with sqlite3.connect(settings.state_db) as db:
        db.execute(
            "DELETE FROM keyword_docs WHERE rowid IN (SELECT rowid FROM keyword_docs LIMIT 2)"
        )
    with sqlite3.connect(settings.state_db) as db:
        db.execute(
            "INSERT INTO upsertion_record (uuid, key, namespace, group_id, updated_at) "
            "SELECT 'u-stale', 'stale-key', namespace, group_id, updated_at "
            "FROM upsertion_record LIMIT 1"
        )
    (corpus / "payment.md").unlink()

    code, out, err = run_cli(capsys, "verify", "--json")
    found = json.loads(out)
    assert code == 6 and not found["ok"], err
    kinds = {p["kind"]: p["count"] for p in found["problems"]}
    assert kinds["chunks missing from the keyword index"] == 2
    assert kinds["keyword statistics out of step"] == 1
    assert kinds["records without a chunk"] == 1
    assert kinds["sources whose file is gone"] == 1

    code, out, err = run_cli(capsys, "verify", "--repair", "--json")
    assert code == 0 and json.loads(out)["ok"], out
    code, out, err = run_cli(capsys, "verify", "--json")
    assert code == 0 and json.loads(out)["problems"] == []
    code, out, err = run_cli(capsys, "info", "--json")
    assert "kb/payment.md" not in json.loads(out)["sources"]


def test_milvus_lite_commands_print_no_library_tracebacks(
    tmp_path: Path,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("milvus_lite")
    settings = fake_settings(
        tmp_path / "data",
        embeddings={"cache": False},
        store={"backend": "milvus", "uri": str(tmp_path / "m.db")},
    )
    use_env(monkeypatch, settings)
    import logging

    for argv in (["ingest", str(corpus)], ["info"], ["collections", "list"], ["verify"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 0 and err == "", (argv, err)
    logging.getLogger("pymilvus").setLevel(logging.NOTSET)  # main() quietened it for the process
