"""What the testing kit's servers (Chroma, PostgreSQL, Milvus) share: a log file that every
start appends to, opened with the command it runs, and a temporary folder removed after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar


class LoggedServer:
    """Mixin: ``_open_log`` / ``_close_log`` around a server process's output, and ``remove``
    of its temporary folder ``root`` once it is stopped."""

    kind = "the server"
    root: Path | None = None
    process: Any = None
    _log: IO[bytes] | None = None

    def _open_log(self, path: Path, command: Sequence[str], note: str = "") -> IO[bytes]:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("ab")
        log.write(f"\n$ {' '.join(command)}{note}\n".encode())
        log.flush()
        self._log = log
        return log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove(self) -> None:
        """Delete the temporary folder (the server must be stopped)."""
        if self.process is not None:
            raise RuntimeError(f"stop {self.kind} before removing its folder")
        root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


class _Startable(Protocol):
    def start(self, timeout: float) -> None: ...
    def stop(self) -> None: ...
    def remove(self) -> None: ...


S = TypeVar("S", bound=_Startable)


@contextmanager
def running(server: S, timeout: float) -> Iterator[S]:
    """``server`` started; always stopped and its folder removed on exit."""
    try:
        server.start(timeout)
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()
