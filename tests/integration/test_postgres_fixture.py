"""The testing kit's real PostgreSQL (rag_pipeline.testing.postgres and the ``postgres_server``
fixture): a SQLAlchemy engine connects, fresh databases are isolated, nothing outlives a stop,
and a start that cannot work says why. One session server serves most tests (initdb and start
take about a second); the lifecycle tests start their own."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from rag_pipeline.testing import PostgresServer
from rag_pipeline.testing.chroma import free_port
from rag_pipeline.testing.postgres import PostgresNotInstalled
from rag_pipeline.testing.postgres import postgres_server as running

pytest.importorskip("psycopg", reason='the [postgres] extra: pip install "rag-pipeline[postgres]"')


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (the postmaster's backends and workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def test_a_sqlalchemy_engine_connects_and_writes(postgres_server: PostgresServer) -> None:
    url = postgres_server.fresh_database()
    assert url.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/test_")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY, body text)"))
            connection.execute(sa.text("INSERT INTO t VALUES (1, '退款 refund')"))
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT body FROM t")).scalar() == "退款 refund"
            assert connection.execute(sa.text("SHOW server_encoding")).scalar() == "UTF8"
            assert int(str(connection.execute(sa.text("SHOW server_version_num")).scalar())) >= (
                150000
            )
    finally:
        engine.dispose()
    assert scalar(postgres_server.url, "SELECT current_database()") == "postgres"


def test_fresh_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.fresh_database(), postgres_server.fresh_database()
    assert first != second
    engine = sa.create_engine(first)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE only_here (x int)"))
    finally:
        engine.dispose()
    assert scalar(first, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'") == 1
    assert scalar(second, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'") == 0


def test_a_named_database_is_created_and_dropped(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("named_db")
    assert url == postgres_server.url_for("named_db")
    assert scalar(url, "SELECT current_database()") == "named_db"
    with pytest.raises(RuntimeError, match="already exists"):
        postgres_server.create_database("named_db")
    postgres_server.drop_database("named_db")
    postgres_server.drop_database("named_db")  # gone already: no error
    exists = "SELECT count(*) FROM pg_database WHERE datname = 'named_db'"
    assert scalar(postgres_server.url, exists) == 0


def test_the_server_runs_as_postgres_when_we_are_root(postgres_server: PostgresServer) -> None:
    assert postgres_server.pid is not None and postgres_server.root is not None
    status = Path(f"/proc/{postgres_server.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert uid == expected
    assert postgres_server.data_dir.stat().st_uid == expected
    assert postgres_server.socket_dir.parent == postgres_server.root
    assert (postgres_server.socket_dir / f".s.PGSQL.{postgres_server.port}").exists()


def test_stop_leaves_no_process_and_no_folder() -> None:
    with running() as server:
        pid = server.pid
        assert pid is not None and alive(pid)
        root = server.root
        assert root is not None and root.is_dir()
        # An open connection must not hold the stop up (fast mode disconnects it).
        engine = sa.create_engine(server.url)
        connection = engine.connect()
        workers = children(pid)
        assert workers  # checkpointer, walwriter, ... and our backend
    assert not alive(pid)
    assert not [worker for worker in workers if alive(worker)]
    assert not root.exists()
    connection.invalidate()
    engine.dispose()


def test_a_taken_port_is_a_clear_error_and_nothing_is_left() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        server = PostgresServer(port=port)
        try:
            with pytest.raises(RuntimeError, match=f"port {port} is in use"):
                server.start()
            root = server.root
            assert server.pid is None
        finally:
            server.stop()
            server.remove()
    assert root is not None and not root.exists()


def test_a_server_that_exits_at_start_shows_its_log() -> None:
    with pytest.raises(RuntimeError) as caught:
        with running(settings={"shared_buffers": "plenty"}):
            pass  # pragma: no cover
    message = str(caught.value)
    assert "postgres exited with code" in message
    assert 'invalid value for parameter "shared_buffers"' in message  # the log's tail


def test_a_bad_bindir_says_how_to_install_the_server(tmp_path: Path) -> None:
    with pytest.raises(PostgresNotInstalled, match="apt-get install postgresql"):
        with running(bindir=tmp_path):
            pass  # pragma: no cover


def test_the_fixture_stops_the_server_when_a_test_fails(pytester: pytest.Pytester) -> None:
    record = pytester.path / "seen.txt"
    pytester.makepyfile(
        f"""
        import sqlalchemy as sa

        def test_fails(postgres_server):
            url = postgres_server.fresh_database()
            sa.create_engine(url).connect()  # left open on purpose
            with open({str(record)!r}, "w") as out:
                out.write(f"{{postgres_server.pid}} {{postgres_server.root}}")
            assert False, "a failing test"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    pid, root = record.read_text().split()
    assert not alive(int(pid))
    assert not Path(root).exists()


def test_missing_binaries_fail_and_a_missing_extra_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(postgres_server):\n    pass\n")
    failed = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rag-postgres-bindir", str(pytester.path / "no-server")
    )
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*lacks the PostgreSQL programs*apt-get install postgresql*"])
    pytester.makeconftest(
        """
        import importlib.util

        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "psycopg" else real(name, *a)
        """
    )
    skipped = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(
        ['*[[]postgres[]] extra*pip install "rag-pipeline[[]postgres[]]"*']
    )


def test_a_server_that_does_not_answer_in_time_shows_its_log() -> None:
    with pytest.raises(TimeoutError, match=r"did not accept connections within 0 s.*log .*\n"):
        with running(timeout=0):
            pass  # pragma: no cover
