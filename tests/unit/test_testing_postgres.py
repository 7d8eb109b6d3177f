"""rag_pipeline.testing.postgres without a server: the addresses, the commands it runs, whom it
runs them as, and what a missing binary, extra or bad name says. The real server is in
tests/integration/test_postgres_fixture.py."""

from __future__ import annotations

import importlib.util
import os
import pwd
import tempfile
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.testing import postgres
from rag_pipeline.testing.postgres import (
    SERVER_PROGRAMS,
    PostgresNotInstalled,
    PostgresServer,
    RunAs,
    find_bindir,
    missing_extra,
)


def fake_bindir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in SERVER_PROGRAMS:
        (folder / name).write_text("")
    return folder


def started(server: PostgresServer, root: Path) -> PostgresServer:
    server.root = root  # what start() sets before it runs a command
    return server


def test_addresses_name_psycopg_and_the_database() -> None:
    server = PostgresServer(port=54321, user="rag")
    assert server.url == "postgresql+psycopg://rag@127.0.0.1:54321/postgres"
    assert server.dsn == "postgresql://rag@127.0.0.1:54321/postgres"
    assert server.url_for("t1") == "postgresql+psycopg://rag@127.0.0.1:54321/t1"
    assert server.pid is None and server.root is None


def test_the_constructor_touches_nothing() -> None:
    server = PostgresServer(Path("/nonexistent/parent"), port=54321, bindir="/nonexistent/bin")
    assert server.bindir is None
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.data_dir


def test_initdb_makes_a_trust_utf8_c_cluster(tmp_path: Path) -> None:
    server = started(PostgresServer(port=54321, user="rag"), tmp_path)
    command = server.initdb_command(Path("/pg/bin"))
    assert command[0] == "/pg/bin/initdb"
    joined = " ".join(command)
    for part in (f"--pgdata {tmp_path}/data", "--username rag", "--auth trust"):
        assert part in joined
    assert "--encoding UTF8" in joined and "--locale C" in joined


def test_the_server_listens_on_loopback_and_its_own_socket_folder(tmp_path: Path) -> None:
    server = started(PostgresServer(port=54321, settings={"max_connections": "20"}), tmp_path)
    command = server.postgres_command(Path("/pg/bin"))
    assert command[:3] == ["/pg/bin/postgres", "-D", str(tmp_path / "data")]
    pairs = dict(zip(command[3::2], command[4::2], strict=False))
    assert pairs["-p"] == "54321" and pairs["-h"] == "127.0.0.1"
    assert pairs["-k"] == str(tmp_path / "socket")
    options = [command[i + 1] for i, part in enumerate(command) if part == "-c"]
    assert "fsync=off" in options and "max_connections=20" in options
    assert server.client_args("db") == [
        "--host",
        "127.0.0.1",
        "--port",
        "54321",
        "--username",
        "postgres",
        "--dbname",
        "db",
    ]


def test_as_root_the_programs_run_as_the_postgres_user(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = pwd.struct_passwd(("postgres", "x", 101, 104, "", "/var/lib/postgresql", "/bin/sh"))
    monkeypatch.setattr(postgres.pwd, "getpwnam", lambda name: entry)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PGPASSWORD", "from-the-shell")
    server = PostgresServer(port=54321)
    run_as = server.run_as()
    assert run_as == RunAs("postgres", 101, 104, "/var/lib/postgresql")
    kwargs: dict[str, Any] = server._user_kwargs(run_as)
    assert (kwargs["user"], kwargs["group"], kwargs["extra_groups"]) == (101, 104, [])
    assert kwargs["env"]["HOME"] == "/var/lib/postgresql"
    assert "PGPASSWORD" not in kwargs["env"]  # libpq variables never reach our commands


def test_as_another_user_the_programs_run_as_that_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    server = PostgresServer(port=54321)
    assert server.run_as() is None
    assert set(server._user_kwargs(None)) == {"env"}


def test_root_without_a_postgres_user_is_told_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise KeyError(name)

    monkeypatch.setattr(postgres.pwd, "getpwnam", missing)
    with pytest.raises(RuntimeError, match="refuse to run as root.*apt-get install postgresql"):
        RunAs.system_user()


def test_a_folder_the_server_user_cannot_enter_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    someone = RunAs("someone", os.getuid() + 4242, os.getgid() + 4242, "/")
    with pytest.raises(RuntimeError, match=f"cannot enter {locked}"):
        postgres._check_traversable(locked / "rag-postgres-x", someone)
    postgres._check_traversable(Path(tempfile.gettempdir()) / "rag-postgres-x", someone)


def test_an_explicit_bindir_must_hold_the_server(tmp_path: Path) -> None:
    with pytest.raises(PostgresNotInstalled, match=r"lacks .*initdb.*apt-get install postgresql"):
        find_bindir(tmp_path)
    assert find_bindir(fake_bindir(tmp_path / "bin")) == tmp_path / "bin"


def test_without_pg_config_the_newest_debian_server_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path)
    fake_bindir(tmp_path / "9" / "bin")
    fake_bindir(tmp_path / "15" / "bin")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a client-only install
    assert find_bindir() == tmp_path / "15" / "bin"


def test_no_server_anywhere_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path)
    with pytest.raises(PostgresNotInstalled) as caught:
        find_bindir()
    message = str(caught.value)
    assert "no pg_config on PATH" in message and "apt-get install postgresql" in message


def test_database_names_are_checked_before_anything_runs() -> None:
    server = PostgresServer(port=54321)
    for bad in ("", "1db", "a-b", "a;drop", "x" * 64):
        with pytest.raises(ValueError, match="database name"):
            server.create_database(bad)
    with pytest.raises(RuntimeError, match="not running"):
        server.create_database("fine_name")


def test_the_fixture_is_skipped_only_for_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    assert (missing_extra() is None) == (real("psycopg") is not None)
    monkeypatch.setattr(
        postgres.importlib.util, "find_spec", lambda name: None if name == "psycopg" else real(name)
    )
    assert missing_extra() == (
        "postgres_server needs the [postgres] extra (psycopg is not installed): "
        'pip install "rag-pipeline[postgres]"'
    )


def test_remove_refuses_a_running_server_and_forgets_a_stopped_one(tmp_path: Path) -> None:
    root = tmp_path / "rag-postgres-x"
    root.mkdir()
    server = started(PostgresServer(port=54321), root)
    server.stop()  # nothing running: nothing to do
    server.remove()
    assert not root.exists() and server.root is None
