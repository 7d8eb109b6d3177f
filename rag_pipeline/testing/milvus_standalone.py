"""A real Milvus server for tests: the standalone server the PyPI package ``milvus`` embeds
(``pip install "rag-pipeline[milvus-server]"``, Linux x86-64), on free 127.0.0.1 ports in a
temporary folder.

>>> with milvus_server() as server:                              # doctest: +SKIP
...     settings = server.settings(rag_settings)                 # a fresh collection on it
...     server.url                                               # 'http://127.0.0.1:PORT'

One process (``milvus run standalone``, with etcd and local storage inside it) runs in its
own session in that folder and is stopped with its whole process group; its output goes to
``<folder>/milvus.log`` (Milvus' own logs to ``<folder>/logs/``). A server that does not answer
in time fails with the tail of that log. ``authorization=True`` starts it with users on: the
token is then ``root:Milvus`` (Milvus' default root user), as with a real cluster.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rag_pipeline.testing.chroma import HOST, free_port, log_tail
from rag_pipeline.testing.environment import clean_env
from rag_pipeline.testing.server_log import LoggedServer, running
from rag_pipeline.testing.settings import fresh_collection, override

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

START_TIMEOUT = 120.0  # about 10 s on an idle 2-core machine; CI machines are busier
# SIGTERM, then SIGKILL: after some admin calls (rename, drop) Milvus 2.3 does not finish its
# graceful stop even with common.gracefulStopTimeout at 1 s; the data is thrown away anyway.
STOP_TIMEOUT = 3.0
# Settings of a throwaway server that make tests faster, nothing else (milvus.yaml keys).
FAST_SETTINGS: dict[str, int | str | bool] = {
    # A Strong-consistency read waits for the next time tick: 200 ms by default.
    "proxy.timeTickInterval": 50,
    # A graceful stop may wait up to 1800 s for the components; a throwaway server need not.
    "common.gracefulStopTimeout": 1,
}
# Milvus creates this root user when authorization is on: a public default, not a secret.
ROOT_TOKEN = "root:Milvus"  # noqa: S105
INSTALL_HINT = 'pip install "rag-pipeline[milvus-server]" (Linux x86-64)'
# The components' advertised address: without it each announces the first unicast address
# of the machine, which may not route back to itself (a VPN, a container).
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


class MilvusNotInstalled(RuntimeError):
    """The ``milvus`` package (the embedded server) is not installed."""


def missing_package() -> str | None:
    """Why the server cannot run here (a skip reason), or None when it can."""
    if importlib.util.find_spec("milvus") is None:
        return f"the Milvus server fixture needs the `milvus` package: {INSTALL_HINT}"
    return None


def _milvus() -> Any:
    try:
        import milvus
    except ImportError as e:
        raise MilvusNotInstalled(f"the `milvus` package is not installed: {INSTALL_HINT}") from e
    return milvus


def _unpack_binaries(milvus: Any, root: Path) -> None:
    # The one private helper used: the package ships the server as .lzma files and unpacks
    # them into <data dir>/bin only inside MilvusServer.start(), which also changes this
    # process's working directory and does not start the server in its own process group.
    unpack = getattr(milvus, "_initialize_data_files", None)
    if unpack is None:
        raise MilvusNotInstalled(
            f"milvus {getattr(milvus, '__version__', '?')} has no _initialize_data_files: "
            "rag_pipeline.testing.milvus_server supports milvus 2.3.x"
        )
    unpack(str(root))


class MilvusServer(LoggedServer):
    """One Milvus standalone server in a temporary folder (under ``parent``), every port a
    free 127.0.0.1 port: the proxy (clients), the metrics/health port, etcd's client and peer
    ports and the components' internal ones. ``settings`` are milvus.yaml keys written over
    the package's template (``{"proxy.timeTickInterval": 200}``), on top of
    ``FAST_SETTINGS``; ``binaries`` a folder several servers unpack the server into once.

    Milvus 2.3 binds its gRPC ports on every interface (only etcd stays on 127.0.0.1), and
    with ``authorization=False`` anyone who can reach them may use it: a test server only.

    >>> server = MilvusServer(port=19999)
    >>> server.url
    'http://127.0.0.1:19999'
    >>> server.token                      # no users: any token or none is accepted
    ''
    """

    kind = "the Milvus server"

    def __init__(
        self,
        parent: Path | None = None,
        *,
        port: int | None = None,
        host: str = HOST,
        authorization: bool = False,
        binaries: Path | None = None,
        settings: Mapping[str, int | str | bool] | None = None,
    ) -> None:
        self.parent = parent
        # Where bin/ is unpacked (about 250 MB, 4 s): servers given the same folder share one
        # copy (the package skips files whose checksum matches); default: the server's folder.
        self.binaries = binaries
        self.milvus_settings = {**FAST_SETTINGS, **(settings or {})}
        self.host = host
        self.authorization = authorization
        self._pick_port = port is None
        self.port = port or free_port(host)
        self.ports: dict[str, int] = {}  # every port the server listens on, once started
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What ``RAG_STORE__URI`` names (pymilvus' ``uri``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """What ``RAG_STORE__TOKEN`` must be: ``root:Milvus`` with authorization, else ""."""
        return ROOT_TOKEN if self.authorization else ""

    @property
    def log_path(self) -> Path:
        return self._root() / "milvus.log"

    def settings(self, base: Settings, collection: str | None = None) -> Settings:
        """``base`` with its store on this server, in ``collection`` (default: a fresh name
        for each call, because one server is shared by every test of a session)."""
        store: dict[str, Any] = {
            "backend": "milvus",
            "uri": self.url,
            "collection": collection or fresh_collection(),
        }
        if self.authorization:
            store["token"] = self.token
        return override(base, store=store)

    def _binaries(self) -> Path:
        return self.binaries if self.binaries is not None else self._root()

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the Milvus server has not been started: call start()")
        return self.root

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Unpack the server, write its configuration and start it; wait until its health
        check says OK and its proxy answers. ``RuntimeError`` when it exits, ``TimeoutError``
        when it does not answer within ``timeout`` seconds (both name its log file)."""
        if self.process is not None:
            raise RuntimeError(f"the Milvus server at {self.url} is already running")
        milvus = _milvus()
        if self.root is None:
            parent = self.parent or Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="rag-milvus-", dir=parent))
        for attempt in range(3):
            try:
                self._configure(milvus)
                break
            except RuntimeError:
                # A port free_port picked was taken before the server could bind it: pick
                # again (a proxy port the caller chose is never changed).
                if attempt == 2 or not self._pick_port:
                    raise
                self.port = free_port(self.host)
        _unpack_binaries(milvus, self._binaries())
        self._launch(timeout)

    def _configure(self, milvus: Any) -> None:
        root = self._root()
        config = milvus.MilvusServerConfig(data_dir=str(root))
        # Every port of the package's template (proxy, etcd, coordinators, nodes), ours.
        names = [key for key in config.configurable_items if key.endswith("_port")]
        ports = {name: free_port(self.host) for name in names}
        ports["proxy_port"] = self.port
        config.update(**ports)  # resolve() binds these instead of searching from the defaults
        config.set("authorization_enabled", self.authorization)
        for key, value in self.milvus_settings.items():
            config.set(key, value)  # written over the template's line of that key
        for component in COMPONENTS:
            config.set(f"{component}.ip", self.host)
        config.resolve()  # binds each port once (RuntimeError if taken), writes milvus.yaml
        ports["metrics_port"] = free_port(self.host)
        ports["etcd_peer_port"] = free_port(self.host)
        self.ports = ports
        # The embedded etcd ignores milvus.yaml's endpoints and listens on 2379/2380 unless
        # given a config file of its own (the same file Milvus' docker standalone uses).
        client = f"http://{self.host}:{ports['etcd_port']}"
        peer = f"http://{self.host}:{ports['etcd_peer_port']}"
        (root / "configs" / "embed-etcd.yaml").write_text(
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n",
            encoding="utf-8",
        )

    def _environment(self) -> dict[str, str]:
        root = self._root()
        bin_dir = str(self._binaries() / "bin")
        library_path = os.environ.get("LD_LIBRARY_PATH", "")
        return clean_env(
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(self.ports["metrics_port"]),
            MILVUSCONF=str(root / "configs"),
            MILVUS_RUN_DIR=str(root / "run"),
            ETCD_CONFIG_PATH=str(root / "configs" / "embed-etcd.yaml"),
            LD_LIBRARY_PATH=f"{bin_dir}:{library_path}" if library_path else bin_dir,
        )

    def _launch(self, timeout: float) -> None:
        root = self._root()
        command = [str(self._binaries() / "bin" / "milvus"), "run", "standalone"]
        log = self._open_log(self.log_path, command, f"  # ports {self.ports}")
        self.process = subprocess.Popen(  # noqa: S603 - the package's server, our arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            cwd=root,  # never the caller's folder
            start_new_session=True,  # stopping its group stops anything it spawned
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        health = f"http://{self.host}:{self.ports['metrics_port']}/healthz"
        proxy = f"{self.url}/v1/vector/collections"  # the proxy's REST API, on its own port
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(
                    f"the Milvus server exited with code {code} before answering on "
                    f"{self.url}; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if "OK" not in _get(health):
                    last = "health check not OK yet"
                elif _answers(proxy):
                    return
                else:
                    last = "the proxy does not answer yet"
            except OSError as e:  # not listening yet
                last = repr(e)
            time.sleep(0.2)
        raise TimeoutError(
            f"the Milvus server at {self.url} did not answer within {timeout:.0f} s ({last}); "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the server's process group (Milvus stops gracefully), SIGKILL to what
        is left after ``timeout`` seconds."""
        process, self.process = self.process, None
        try:
            if process is not None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
                # Anything of its group still alive (the server or what it spawned) is killed.
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        finally:
            self._close_log()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our http URL
        return str(response.read().decode("utf-8", errors="replace"))


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (an error status is an answer: with
    authorization on the REST API refuses a request without credentials)."""
    try:
        _get(url)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the session start_new_session made: the server is its leader
    except ProcessLookupError:
        pass


@contextmanager
def milvus_server(
    parent: Path | None = None, *, timeout: float = START_TIMEOUT, **options: Any
) -> Iterator[MilvusServer]:
    """A running :class:`MilvusServer` (``options``: its keyword arguments); always stopped
    and its folder removed on exit."""
    with running(MilvusServer(parent, **options), timeout) as server:
        yield server
