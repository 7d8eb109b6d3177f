"""A data folder of the layout before the state database (``records.sqlite`` written by
LangChain's ``SQLRecordManager`` plus our tables, ``keyword.sqlite``) is carried into
``state.sqlite`` on first use: nothing is lost, nothing is re-embedded, the old files go."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.indexing import ingest
from tests.helpers import STORE_CORPUS, fake_settings, run_cli, use_env, write_corpus

OURS = ("rag_sources", "rag_roots", "rag_layout")


def split_into_legacy_files(settings: Settings) -> dict[str, int]:
    """Rewrite the data folder as the earlier layout: the record manager's table made by
    LangChain's own SQLRecordManager in records.sqlite (with our tables beside it), the keyword
    tables in keyword.sqlite; returns the rows per table."""
    from langchain_classic.indexes import SQLRecordManager

    state = settings.state_db
    with sqlite3.connect(state) as db:
        tables = {
            name: sql
            for name, sql in db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }
        rows = {n: db.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in tables}  # noqa: S608
    records = settings.data_dir / "records.sqlite"
    SQLRecordManager("x", db_url=f"sqlite:///{records}").create_schema()
    for name, target in [(n, records) for n in ("upsertion_record", *OURS)] + [
        (n, settings.data_dir / "keyword.sqlite") for n in tables if n.startswith("keyword_")
    ]:
        with sqlite3.connect(target) as db:
            if name != "upsertion_record":
                db.execute(tables[name])
            db.execute("ATTACH DATABASE ? AS s", (str(state),))
            db.execute(f'INSERT INTO main."{name}" SELECT * FROM s."{name}"')  # noqa: S608
            db.commit()
            db.execute("DETACH DATABASE s")
    for leftover in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        leftover.unlink(missing_ok=True)
    return rows


def test_an_old_data_folder_moves_into_the_state_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    settings = fake_settings(tmp_path / "data", split={"chunk_size": 80, "chunk_overlap": 0})
    first = ingest([corpus], settings)
    rows = split_into_legacy_files(settings)
    assert rows["upsertion_record"] == first.chunks_added == rows["keyword_docs"]
    assert not settings.state_db.exists()

    use_env(monkeypatch, settings)
    code, out, err = run_cli(capsys, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"], err
    assert "moved records.sqlite, keyword.sqlite into state.sqlite" in err
    assert settings.state_db.is_file()
    assert not (settings.data_dir / "records.sqlite").exists()
    assert not (settings.data_dir / "keyword.sqlite").exists()
    with sqlite3.connect(settings.state_db) as db:
        for name, count in rows.items():
            assert db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] == count  # noqa: S608

    again = ingest([corpus], settings)  # incremental: the records came along
    assert (again.chunks_added, again.chunks_deleted) == (0, 0)
    assert again.chunks_unchanged == first.chunks_added
    code, _, err = run_cli(capsys, "ask", "--json", "退款多久到账")
    assert code == 0 and "moved" not in err  # once only


def test_a_garbage_legacy_file_is_named_and_nothing_is_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    settings = fake_settings(tmp_path / "data")
    ingest([corpus], settings)
    split_into_legacy_files(settings)
    keyword = settings.data_dir / "keyword.sqlite"
    keyword.write_bytes(b"not a database at all" * 50)
    use_env(monkeypatch, settings)
    code, _, err = run_cli(capsys, "verify")
    assert code == 2 and str(keyword) in err and "move it away" in err
    assert (settings.data_dir / "records.sqlite").is_file()  # kept for the next attempt
    assert not settings.state_db.exists()
