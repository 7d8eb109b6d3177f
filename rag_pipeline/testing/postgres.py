"""A real PostgreSQL for tests: a throwaway cluster (``initdb``) served by ``postgres`` on a free
127.0.0.1 port, in a temporary folder removed at the end.

>>> with postgres_server() as pg:                                # doctest: +SKIP
...     engine = sqlalchemy.create_engine(pg.fresh_database())    # a new, empty database
...     pg.url                                                    # the cluster's own database
'postgresql+psycopg://postgres@127.0.0.1:54321/postgres'

The server binaries come from ``pg_config --bindir`` (Debian: ``apt-get install postgresql``),
else the newest ``/usr/lib/postgresql/*/bin``, else ``initdb`` on ``PATH``; ``bindir=`` names the
folder. ``initdb`` and ``postgres`` refuse to run as root: as root they run as the ``postgres``
system user (the Debian package creates it), which owns the data folder. Authentication is
``trust`` on 127.0.0.1 and on a Unix socket inside the temporary folder, and durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): the cluster is fast and disposable.
The server's output goes to ``postgres.log`` in that folder; a server that exits or does not
answer in time fails with the tail of that log. Creating databases uses ``createdb`` and
``dropdb``, so this module needs no Python driver; the URLs it gives name psycopg 3 (the
``[postgres]`` extra), the driver SQLAlchemy needs to use them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rag_pipeline.testing.chroma import HOST, free_port, log_tail, port_is_free
from rag_pipeline.testing.environment import clean_env
from rag_pipeline.testing.server_log import LoggedServer, running

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SYSTEM_USER = "postgres"  # who runs the server when we are root
SERVER_PROGRAMS = ("initdb", "postgres", "pg_ctl", "pg_isready", "createdb", "dropdb")
INSTALL_HINT = (
    "install the PostgreSQL server: `apt-get install postgresql` (Debian/Ubuntu; its binaries "
    "land in /usr/lib/postgresql/<version>/bin), or pass the folder that holds initdb as bindir"
)
EXTRA_HINT = 'pip install "rag-pipeline[postgres]"'
# A throwaway cluster: nothing it writes has to survive a crash.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DEBIAN_ROOT = Path("/usr/lib/postgresql")
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_BIND_FAILED = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")


class PostgresNotInstalled(FileNotFoundError):
    """The PostgreSQL server binaries (``initdb``, ``postgres``, ``pg_ctl``, ...) are missing;
    the message says how to install them."""


def missing_extra() -> str | None:
    """Why the ``postgres_server`` fixture cannot be used here (psycopg, the driver its URLs
    name, is not installed), or ``None``."""
    if importlib.util.find_spec("psycopg") is None:
        return (
            f"postgres_server needs the [postgres] extra (psycopg is not installed): {EXTRA_HINT}"
        )
    return None


def _has_server(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SERVER_PROGRAMS)


def find_bindir(bindir: str | Path | None = None) -> Path:
    """The folder of the PostgreSQL server programs: ``bindir`` if given, else what
    ``pg_config --bindir`` prints, else the newest Debian ``/usr/lib/postgresql/*/bin``, else
    the folder of ``initdb`` on ``PATH``. Raises :class:`PostgresNotInstalled` with the install
    command when none has them all."""
    if bindir is not None:
        folder = Path(bindir)
        if not _has_server(folder):
            missing = [name for name in SERVER_PROGRAMS if not (folder / name).is_file()]
            raise PostgresNotInstalled(
                f"bindir {folder} lacks the PostgreSQL programs {', '.join(missing)}: "
                f"{INSTALL_HINT}"
            )
        return folder
    tried: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        done = subprocess.run(  # noqa: S603 - pg_config found on PATH, a fixed argument
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, env=_env()
        )
        printed = done.stdout.strip()
        if done.returncode == 0 and printed:
            if _has_server(Path(printed)):
                return Path(printed)
            tried.append(f"`pg_config --bindir` printed {printed}, which has no server programs")
    else:
        tried.append("no pg_config on PATH")
    # libpq-dev's pg_config names its own major version, which may not be the server's.
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if p.parent.name.isdigit() and _has_server(p)),
        key=lambda p: int(p.parent.name),
    )
    if versions:
        return versions[-1]
    tried.append(f"none in {DEBIAN_ROOT}/*/bin")
    initdb = shutil.which("initdb")
    if initdb is not None and _has_server(Path(initdb).parent):
        return Path(initdb).parent
    tried.append("no initdb on PATH")
    raise PostgresNotInstalled(
        f"the PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found "
        f"({'; '.join(tried)}): {INSTALL_HINT}"
    )


def _env(**extra: str) -> dict[str, str]:
    """A child's environment: :func:`clean_env` without libpq's ``PG*`` variables (a
    developer's ``PGHOST`` or ``PGPASSWORD`` must not redirect our commands), C locale."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", **extra)
    return env


@dataclass(frozen=True)
class RunAs:
    """The account the server programs run as when this process is root."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def system_user(cls, name: str = SYSTEM_USER) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(
                f"initdb and postgres refuse to run as root, and there is no {name!r} user to "
                f"run them as: create it (`apt-get install postgresql` does) or run the tests as "
                f"a user other than root"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


class PostgresServer(LoggedServer):
    """A temporary PostgreSQL cluster and its server, for tests and benchmarks.

    Constructing it starts and writes nothing; :meth:`start` creates the cluster in a new
    folder under ``parent`` (default: the system's temporary folder, whose short path keeps the
    Unix socket's within its limit) and starts the server; :meth:`stop` stops it;
    :meth:`remove` deletes the folder. :func:`postgres_server` does all three.

    >>> pg = PostgresServer(port=54321)
    >>> pg.url
    'postgresql+psycopg://postgres@127.0.0.1:54321/postgres'
    >>> pg.dsn_for("t1")
    'postgresql://postgres@127.0.0.1:54321/t1'
    """

    kind = "the PostgreSQL server"

    database = "postgres"  # the database initdb creates

    def __init__(
        self,
        parent: Path | None = None,
        *,
        port: int | None = None,
        host: str = HOST,
        user: str = "postgres",
        bindir: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.parent = parent
        self.host = host
        self.user = user
        self._bindir = bindir
        self.bindir: Path | None = None  # found by start()
        self._run_as: RunAs | None = None
        self._pick_port = port is None
        self.port = port or free_port(host)
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.root: Path | None = None  # the temporary folder, once started
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's ``postgres`` database."""
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        """libpq URI of the cluster's ``postgres`` database (``psycopg.connect``, ``psql``)."""
        return self.dsn_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    @property
    def data_dir(self) -> Path:
        return self._root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root() / "socket"

    @property
    def log_path(self) -> Path:
        return self._root() / "postgres.log"

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the PostgreSQL server has not been started: call start()")
        return self.root

    # -- commands --------------------------------------------------------------------------

    def run_as(self) -> RunAs | None:
        """Whom the server programs run as: the ``postgres`` user when we are root, else
        ourselves (``None``)."""
        return RunAs.system_user() if os.geteuid() == 0 else None

    def initdb_command(self, bindir: Path) -> list[str]:
        return [
            str(bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",  # a throwaway cluster
        ]

    def postgres_command(self, bindir: Path) -> list[str]:
        command = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            self.host,  # listen_addresses
            "-k",
            str(self.socket_dir),  # unix_socket_directories: ours, not /var/run/postgresql
        ]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def client_args(self, database: str | None = None) -> list[str]:
        """Connection arguments of the client programs (createdb, pg_isready, ...)."""
        args = ["--host", self.host, "--port", str(self.port), "--username", self.user]
        return args if database is None else [*args, "--dbname", database]

    def _user_kwargs(self, run_as: RunAs | None) -> dict[str, Any]:
        if run_as is None:
            return {"env": _env()}
        env = _env(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
        return {"user": run_as.uid, "group": run_as.gid, "extra_groups": [], "env": env}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Create the cluster (the first time), start the server and wait until it accepts
        connections. Raises :class:`PostgresNotInstalled` without the binaries,
        ``RuntimeError`` when the port is taken or the server exits, ``TimeoutError`` when it
        does not answer within ``timeout`` seconds (both with the server log's tail)."""
        if self.process is not None:
            raise RuntimeError(f"the PostgreSQL server at {self.dsn} is already running")
        self.bindir = bindir = find_bindir(self._bindir)
        self._run_as = run_as = self.run_as()
        if self.root is None:
            self._make_folders(run_as)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bindir, run_as)
        attempts = 1
        while True:
            try:
                return self._launch(bindir, run_as, timeout)
            except _PortTaken:
                # Someone took the port free_port picked before the server bound it: pick
                # another (a port the caller chose is never changed; it fails at once).
                if attempts == 3:
                    raise
                attempts += 1
                self.port = free_port(self.host)

    def _make_folders(self, run_as: RunAs | None) -> None:
        parent = self.parent or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="rag-postgres-", dir=parent))
        self.root = root
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(mode=0o700)
        if run_as is not None:
            _check_traversable(root, run_as)
            root.chmod(0o711)  # the server's user may pass through, not list
            for folder in (self.data_dir, self.socket_dir):
                os.chown(folder, run_as.uid, run_as.gid)

    def _initdb(self, bindir: Path, run_as: RunAs | None) -> None:
        command = self.initdb_command(bindir)
        done = subprocess.run(  # noqa: S603 - the server's own program, our arguments
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=self._root(),
            **self._user_kwargs(run_as),
        )
        (self._root() / "initdb.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RuntimeError(
                f"initdb failed with exit code {done.returncode}"
                f"{f' (as user {run_as.name})' if run_as else ''}: {' '.join(command)}\n{output}"
            )

    def _launch(self, bindir: Path, run_as: RunAs | None, timeout: float) -> None:
        # Someone else on the port would answer our readiness checks: refuse instead.
        if not port_is_free(self.port, self.host):
            message = f"cannot start a PostgreSQL server: port {self.port} is in use"
            raise _PortTaken(message) if self._pick_port else RuntimeError(message)
        command = self.postgres_command(bindir)
        log = self._open_log(self.log_path, command)
        self.process = subprocess.Popen(  # noqa: S603 - the server's own program, our arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._root(),  # never the caller's folder
            start_new_session=True,  # the caller's Ctrl-C is not the server's fast shutdown
            **self._user_kwargs(run_as),
        )
        try:
            self._wait_ready(bindir, timeout)
        except BaseException:
            self._kill()
            raise

    def _wait_ready(self, bindir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        command = [str(bindir / "pg_isready"), *self.client_args(self.database), "--timeout=1"]
        last = ""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                tail = log_tail(self.log_path)
                message = (
                    f"postgres exited with code {code} before accepting connections on "
                    f"{self.host}:{self.port}; log {self.log_path}:\n{tail}"
                )
                if self._pick_port and any(marker in tail for marker in _BIND_FAILED):
                    raise _PortTaken(message)
                raise RuntimeError(message)
            done = subprocess.run(  # noqa: S603 - the server's own client, our arguments
                command, capture_output=True, text=True, check=False, env=_env()
            )
            if done.returncode == 0:
                return
            last = (done.stdout + done.stderr).strip()
            time.sleep(0.1)
        raise TimeoutError(
            f"the PostgreSQL server on {self.host}:{self.port} did not accept connections "
            f"within {timeout:.0f} s (pg_isready: {last or 'no answer'}); log "
            f"{self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """``pg_ctl stop -m fast`` (disconnects clients, rolls back their transactions); the
        postmaster is killed if it has not exited within ``timeout`` seconds."""
        process = self.process
        if process is not None and process.poll() is None and self.bindir is not None:
            command = [
                str(self.bindir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(self.data_dir),
                "--mode",
                "fast",
                "--wait",
                "--timeout",
                str(max(1, int(timeout))),
            ]
            try:
                subprocess.run(  # noqa: S603 - the server's own program, our arguments
                    command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                    cwd=self._root(),
                    timeout=timeout + 5,
                    **self._user_kwargs(self._run_as),
                )
            except (OSError, subprocess.TimeoutExpired):
                pass  # the wait below decides
        self._kill(timeout)

    def _kill(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the postmaster to exit; then immediate shutdown (SIGQUIT), then SIGKILL."""
        process, self.process = self.process, None
        try:
            if process is not None:
                for signum in (None, signal.SIGQUIT, signal.SIGKILL):
                    if signum is not None:
                        try:
                            process.send_signal(signum)
                        except ProcessLookupError:
                            pass
                    try:
                        process.wait(timeout=timeout)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        finally:
            self._close_log()

    # -- databases -------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (letters, digits, ``_``); return its URL."""
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(
                f"database name {name!r}: use up to 63 letters, digits and _, not starting "
                f"with a digit"
            )
        self._client("createdb", name)
        return self.url_for(name)

    def fresh_database(self, prefix: str = "test") -> str:
        """Create a database with a new unique name; return its URL (one per test isolates
        tests that share the session's server)."""
        return self.create_database(f"{prefix}_{uuid.uuid4().hex[:12]}")

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        self._client("dropdb", "--if-exists", "--force", name)

    def _client(self, program: str, *args: str) -> None:
        if self.pid is None or self.bindir is None:
            raise RuntimeError(f"the PostgreSQL server at {self.dsn} is not running")
        command = [
            str(self.bindir / program),
            *self.client_args(),
            "--maintenance-db",
            self.database,
            *args,
        ]
        done = subprocess.run(  # noqa: S603 - the server's own client, our arguments
            command, capture_output=True, text=True, check=False, env=_env()
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {done.stderr.strip()}")


class _PortTaken(RuntimeError):
    pass


def _check_traversable(folder: Path, run_as: RunAs) -> None:
    """Fail clearly when ``run_as`` cannot reach ``folder`` (a 0700 parent owned by root)."""
    for ancestor in folder.parents:
        info = ancestor.stat()
        if info.st_uid == run_as.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == run_as.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise RuntimeError(
                f"the {run_as.name!r} user that runs PostgreSQL cannot enter {ancestor} (mode "
                f"{stat.filemode(info.st_mode)}): choose a parent folder it can traverse, such "
                f"as {tempfile.gettempdir()}"
            )


@contextmanager
def postgres_server(
    parent: Path | None = None,
    *,
    timeout: float = START_TIMEOUT,
    **options: Any,
) -> Iterator[PostgresServer]:
    """A running :class:`PostgresServer` (``options``: its keyword arguments); always stopped
    and its folder removed on exit."""
    with running(PostgresServer(parent, **options), timeout) as server:
        yield server
