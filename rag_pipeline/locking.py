"""One writer per collection: an operating-system file lock in the data folder.

Ingest, ``--rebuild``, ``rag migrate``, ``collections rename / delete / delete-docs`` and
``rag verify --repair`` hold the lock of the collection they write. The operating system
releases it when the process ends, however it ends (``kill -9`` included), so a crashed writer
never leaves a stale lock. Readers (``ask``, ``search``, ``eval``) take no lock and never wait.

The lock lives in the local data folder: it orders the writers that share that folder (one
machine, or a shared disk). Writers on several machines against one Chroma or Milvus server
each have their own data folder and are not ordered by it.

>>> with collection_lock(settings, store.namespace):      # doctest: +SKIP
...     ingest_into(store)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline.errors import CollectionLockedError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

LOCKS = "locks"


def lock_path(settings: Settings, namespace: str) -> Path:
    """The lock file of ``namespace`` (a hash: namespaces hold URLs and slashes)."""
    digest = hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:20]
    return settings.data_dir / LOCKS / f"{digest}.lock"


def _holder(owner: Path) -> str:
    try:
        info: dict[str, Any] = json.loads(owner.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"process {info.get('pid', '?')} ({info.get('command', '?')}, since {since})"


@contextmanager
def collection_lock(
    settings: Settings, namespace: str, *, what: str = "this command"
) -> Iterator[None]:
    """Hold the write lock of ``namespace``; waits ``settings.ingest.lock_timeout`` seconds
    (0: fail at once), then raises CollectionLockedError naming the holder."""
    import filelock

    from rag_pipeline.datafolder import ensure_data_dir

    ensure_data_dir(settings)
    path = lock_path(settings, namespace)
    path.parent.mkdir(exist_ok=True)
    owner = path.with_suffix(".owner")
    lock = filelock.FileLock(str(path))
    timeout = settings.ingest.lock_timeout
    try:
        if timeout > 0:
            lock.acquire(timeout=timeout)
        else:
            lock.acquire(blocking=False)
    except filelock.Timeout as e:
        waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
        raise CollectionLockedError(
            f"{what} needs the collection {namespace!r}, which {_holder(owner)} is writing"
            f"{waited}: wait for it to finish, or let writers wait by setting "
            "RAG_INGEST__LOCK_TIMEOUT=SECONDS"
        ) from e
    try:
        command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3]) or "python"
        owner.write_text(
            json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}),
            encoding="utf-8",
        )
        yield
    finally:
        lock.release()
