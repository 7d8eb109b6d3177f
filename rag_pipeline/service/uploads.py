"""Uploaded files into the managed folder: safe names, and atomic writes that can be undone.

``safe_name`` turns the name a client sent into the base name the file is kept under (or
raises UploadNameError saying why not); ``Staging`` writes each upload to a hidden temporary
file in the folder (ingest skips hidden files) and moves them all in with ``os.replace``, so
a reader of the folder sees a file whole or not at all. ``rollback`` puts back the files that
were replaced, when the ingest of the upload failed.

>>> safe_name("C:\\\\Users\\\\me\\\\退货政策.md")
'退货政策.md'
>>> with Staging(folder) as staging:                  # doctest: +SKIP
...     staging.write("faq.md", upload.file)
...     paths = staging.commit()
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from rag_pipeline.errors import RagError
from rag_pipeline.loading import META_SUFFIX, SUPPORTED_SUFFIXES
from rag_pipeline.synonyms import FILE_NAME as SYNONYMS_FILE

# Bytes of UTF-8: file systems allow 255, and the temporary name adds a prefix and a suffix.
MAX_NAME_BYTES = 200
COPY_CHUNK = 1024 * 1024
_TEMP_PREFIX = ".upload-"
_BACKUP_PREFIX = ".replaced-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadNameError(RagError):
    """An uploaded file's name cannot be kept (the message names it and says why)."""


def accepted_suffixes() -> list[str]:
    """The extensions an upload may have: those ingest reads (``loading.SUPPORTED_SUFFIXES``)."""
    return sorted(SUPPORTED_SUFFIXES)


def safe_name(raw: str) -> str:
    """The base name an upload named ``raw`` is saved as.

    A client's folders (``dir/x.md``, ``C:\\dir\\x.md``) are dropped; a name that climbs out
    (a ``..`` part), holds control characters, is empty, hidden (``.x.md``: ingest would skip
    it), too long, or has an extension ingest cannot read is refused. Unicode is normalised
    to NFC, so the same name typed on macOS (NFD) replaces the same file.
    """
    shown = repr(raw)
    if _CONTROL.search(raw):
        raise UploadNameError(f"file name {shown} holds control characters (NUL, newline...)")
    parts = re.split(r"[\\/]", _DRIVE.sub("", raw.strip()))
    if ".." in (part.strip() for part in parts):
        raise UploadNameError(f"file name {shown} climbs out of its folder ('..')")
    name = unicodedata.normalize("NFC", parts[-1].strip())
    if name in ("", "."):
        raise UploadNameError(f"file name {shown} has no base name")
    if name.startswith("."):
        raise UploadNameError(f"file name {shown} is hidden (starts with '.'): rename it")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UploadNameError(f"file name {shown} is longer than {MAX_NAME_BYTES} bytes")
    if name.lower().endswith(META_SUFFIX) or name == SYNONYMS_FILE:
        raise UploadNameError(
            f"file name {shown} is reserved in a corpus folder ({SYNONYMS_FILE}, *{META_SUFFIX})"
        )
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadNameError(
            f"file {shown} has an extension that cannot be ingested ({suffix or 'none'}): "
            f"accepted are {', '.join(accepted_suffixes())}"
        )
    return name


class Staging:
    """Files written into ``folder`` all at once, or not at all (see the module docstring).

    Used as a context manager: leaving it removes the temporary files and the replaced
    originals that are still there (after ``commit``, the originals are no longer needed;
    after ``rollback`` they are back in place).
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder.resolve()
        self._temps: dict[str, Path] = {}
        self._moved: list[tuple[Path, Path | None]] = []  # (target, the original's backup)

    def target(self, name: str) -> Path:
        """Where ``name`` (a ``safe_name``) goes; never outside the folder, never a link."""
        path = self.folder / name
        if path.parent.resolve() != self.folder or path.is_symlink() or path.is_dir():
            raise UploadNameError(f"file name {name!r} is not a plain file in the managed folder")
        return path

    def write(self, name: str, data: BinaryIO) -> None:
        """Copy ``data`` to a hidden temporary file beside ``name``'s place (synced to disk)."""
        self.target(name)
        if name in self._temps:
            raise UploadNameError(f"file name {name!r} is given twice")
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out, COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(temp)
            raise
        self._temps[name] = Path(temp)

    def commit(self) -> list[Path]:
        """Move every written file to its place (keeping the files they replace aside)."""
        for name, temp in list(self._temps.items()):
            target = self.target(name)
            backup = None
            if target.exists():
                backup = self.folder / f"{_BACKUP_PREFIX}{temp.name}"
                os.replace(target, backup)
            os.replace(temp, target)
            del self._temps[name]
            self._moved.append((target, backup))
        return [target for target, _ in self._moved]

    def rollback(self) -> None:
        """Undo ``commit``: the replaced files are back, the new ones gone."""
        for target, backup in reversed(self._moved):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        self._moved.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for temp in self._temps.values():
            temp.unlink(missing_ok=True)
        for _target, backup in self._moved:
            if backup is not None:
                backup.unlink(missing_ok=True)
        self._temps.clear()
        self._moved.clear()
