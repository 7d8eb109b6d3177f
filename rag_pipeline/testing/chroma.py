"""A real Chroma server for tests: a ``chroma run`` subprocess on a free 127.0.0.1 port.

>>> with chroma_server(tmp_path / "chroma") as server:          # doctest: +SKIP
...     settings = server.settings(rag_settings)                 # a fresh collection on it
...     server.restart()                                         # same data, same port

The server's output goes to ``<path>.log`` next to the data folder; a server that does not
answer in time fails with the tail of that log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from rag_pipeline.testing.environment import clean_env
from rag_pipeline.testing.server_log import LoggedServer
from rag_pipeline.testing.settings import fresh_collection, override

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether nothing listens on ``port`` (connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def chroma_executable() -> str:
    """The ``chroma`` CLI of this interpreter's environment (else the one on PATH)."""
    names = ("chroma.exe", "chroma") if os.name == "nt" else ("chroma",)
    for name in names:
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("chroma")
    if found is None:
        raise FileNotFoundError("the `chroma` CLI (package chromadb) is not installed")
    return found


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ChromaServer(LoggedServer):
    """One ``chroma run --path PATH --host 127.0.0.1 --port PORT`` process.

    It runs in the folder that holds ``path`` (never the caller's working directory, whose
    ``.env`` or ``rag.toml`` it must not see) with :func:`clean_env`.

    >>> server = ChromaServer(Path("/tmp/chroma"), port=8765)
    >>> server.url
    'http://127.0.0.1:8765'
    """

    def __init__(self, path: Path, port: int | None = None, host: str = HOST) -> None:
        self.path = path
        self.host = host
        self.port = port or free_port(host)
        self.log_path = path.parent / f"{path.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings(self, base: Settings, collection: str | None = None) -> Settings:
        """``base`` with its store on this server, in ``collection`` (default: a fresh name
        for each call, because one server is shared by every test of a session)."""
        name = collection or fresh_collection()
        store = {"backend": "chroma", "mode": "http", "host": self.host, "port": self.port}
        return override(base, store={**store, "collection": name})

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it answers a heartbeat."""
        if self.process is not None:
            raise RuntimeError(f"the Chroma server at {self.url} is already running")
        # Someone else on the port would answer our heartbeats: refuse to start instead.
        deadline = time.monotonic() + 2.0  # a server we just stopped may still be exiting
        while not port_is_free(self.port, self.host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot start a Chroma server: port {self.port} is in use")
            time.sleep(0.2)
        env = clean_env()  # no RAG_* or provider variables, telemetry off
        command = [
            chroma_executable(),
            "run",
            "--path",
            str(self.path),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        log = self._open_log(self.log_path, command)
        # The command is ours: the chroma CLI of this environment and our own arguments.
        self.process = subprocess.Popen(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.path.parent,  # never the caller's folder (its .env, rag.toml)
            # Its own process group: stopping it also stops anything it spawned.
            start_new_session=os.name != "nt",
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is None:
                raise RuntimeError(f"the Chroma server at {self.url} was stopped while starting")
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`chroma run` exited with code {self.process.returncode} before answering "
                    f"on {self.url}; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                client = chromadb.HttpClient(
                    host=self.host,
                    port=self.port,
                    settings=ChromaSettings(anonymized_telemetry=False),
                )
                client.heartbeat()
                return
            except Exception as e:  # not listening yet
                last_error = e
                time.sleep(0.2)
        raise TimeoutError(
            f"the Chroma server at {self.url} did not answer within {timeout:.0f} s "
            f"(last error: {last_error!r}); log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the server (kill it if it does not exit within ``timeout``)."""
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                self._signal(process, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal(process, signal.SIGKILL if os.name != "nt" else signal.SIGTERM)
                    process.wait(timeout=timeout)
        finally:
            self._close_log()

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
        try:
            if os.name != "nt":
                os.killpg(process.pid, signum)  # the group this helper created for it
            elif signum == signal.SIGTERM:
                process.terminate()
            else:  # pragma: no cover
                process.kill()
        except ProcessLookupError:
            pass

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop, then start again on the same path and port."""
        self.stop()
        self.start(timeout)


@contextmanager
def chroma_server(path: Path, timeout: float = START_TIMEOUT) -> Iterator[ChromaServer]:
    """A running Chroma server persisting to ``path``; always stopped on exit."""
    server = ChromaServer(path)
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
