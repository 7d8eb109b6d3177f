"""Documents of the served collection: upload (admin), list, delete; uploads go to the
managed folder and are ingested under the writer lock.

The router reads the request (size limit, form, names) and maps errors to status codes; the
work is in ``upload_files``, ``list_documents`` and ``delete_document``, which a test or a
script can call with a ``ServiceState`` and no HTTP.

Writes take ``state.write_lock`` (one writer per process; ingest adds the collection's file
lock against other processes) and end with ``state.refresh()``: the next request answers
from an assistant that holds the new chunks on the keyword and the dense side, while
requests already running keep their snapshot, whose retriever drops chunks it does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from rag_pipeline.errors import CollectionLockedError, RagError
from rag_pipeline.service.auth import require_admin
from rag_pipeline.service.uploads import Staging, UploadNameError, accepted_suffixes, safe_name

if TYPE_CHECKING:
    from rag_pipeline.bookkeeping import Bookkeeping
    from rag_pipeline.service.state import ServiceState
    from rag_pipeline.stores.base import VectorBackend

log = logging.getLogger(__name__)

FIELD = "files"
MAX_FILES = 100  # per request; the size limit bounds the bytes
MAX_FIELD_BYTES = 64 * 1024  # a non-file form field (the form has none we read)

router = APIRouter(
    prefix="/v1/documents", tags=["documents"], dependencies=[Depends(require_admin)]
)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
    }
}


# ---------------------------------------------------------------------------------------------
# The work, without HTTP
# ---------------------------------------------------------------------------------------------


def _store(state: ServiceState) -> VectorBackend:
    if state.store is None or state.model is None:
        from rag_pipeline.service.state import NotReadyError

        raise NotReadyError(state.load_error or "the service is still loading its models")
    return state.store


def upload_files(state: ServiceState, files: list[tuple[str, BinaryIO]]) -> dict[str, Any]:
    """Save ``files`` (safe names, see ``uploads.safe_name``) in the managed folder and ingest
    them; the ``ingest --json`` report. Nothing is changed in the folder when the ingest
    fails (CollectionLockedError, a provider error...): the replaced files are put back."""
    from rag_pipeline.indexing import ingest

    _store(state)
    settings = state.settings
    with Staging(settings.documents_dir) as staging:
        for name, data in files:  # the slow copy happens before the lock is taken
            staging.write(name, data)
        with state.write_lock:
            # Ingested as files of the managed folder: the same source keys (FOLDER/NAME) as
            # ingesting the folder, without re-reading its other files, and no pruning (only
            # a folder ingest prunes).
            paths = staging.commit()
            try:
                report = ingest(paths, settings, prune=False, model=state.model)
            except BaseException:
                staging.rollback()
                raise
            state.refresh()
    return report.to_dict()


def _managed_label(book: Bookkeeping, folder: Path) -> str | None:
    """The root label of the managed folder (None until a first upload was ingested)."""
    resolved = str(folder.resolve())
    return next((label for label, path in book.roots().items() if path == resolved), None)


def _managed_files(folder: Path) -> list[str]:
    """Names of the files uploads put in ``folder`` (temporary and hidden files left out)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def list_documents(state: ServiceState) -> dict[str, Any]:
    """Every source of the collection with its chunk count, and whether its file is in the
    managed folder (DELETE then removes the file too). A managed file without chunks (one
    that failed to load) is listed with 0 chunks, so it can be deleted."""
    from rag_pipeline.bookkeeping import Bookkeeping

    store = _store(state)
    folder = state.settings.documents_dir
    book = Bookkeeping(state.settings, store.namespace)
    label = _managed_label(book, folder)
    counts = store.sources()
    managed = {f"{label}/{name}" for name in _managed_files(folder)} if label else set()
    rows = [
        {"source": source, "chunks": counts.get(source, 0), "managed": source in managed}
        for source in sorted(set(counts) | managed)
    ]
    return {"folder": str(folder), "documents": rows}


@contextmanager
def _set_aside(file: Path | None) -> Iterator[None]:
    """Hide ``file`` (ingest skips hidden files) while its chunks are deleted; remove it when
    that worked, put it back when it failed (the collection locked by another writer, say)."""
    if file is None:
        yield
        return
    hidden = file.with_name(f".deleting-{file.name}")
    file.replace(hidden)
    try:
        yield
    except BaseException:
        hidden.replace(file)
        raise
    hidden.unlink()


class UnknownSourceError(RagError):
    """DELETE of a source the collection does not hold."""


def delete_document(state: ServiceState, source: str) -> dict[str, Any]:
    """Remove ``source`` (a key as ``list_documents`` gives it) from the store, the records
    and the keyword index, and its file when it is in the managed folder."""
    from rag_pipeline.admin import delete_docs
    from rag_pipeline.bookkeeping import Bookkeeping

    store = _store(state)
    settings = state.settings
    with state.write_lock:
        book = Bookkeeping(settings, store.namespace)
        label = _managed_label(book, settings.documents_dir)
        file = None
        if label is not None and source.startswith(f"{label}/"):
            name = source[len(label) + 1 :]
            if name in _managed_files(settings.documents_dir):
                file = settings.documents_dir / name
        stored = source in store.sources()
        if not stored and file is None:
            raise UnknownSourceError(
                f"no source {source!r} in the collection: GET /v1/documents lists them"
            )
        deleted = 0
        with _set_aside(file):
            if stored:
                deleted = delete_docs(settings, source=source)["deleted"]
        state.refresh()
    return {"source": source, "chunks_deleted": deleted, "file_removed": file is not None}


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413, f"the upload is larger than {limit / 1024 / 1024:g} MB (RAG_SERVE__MAX_UPLOAD_MB)"
    )


async def _form_within(request: Request, limit: int) -> FormData:
    """The multipart form of ``request``, read only while the body stays within ``limit``
    bytes: the declared Content-Length is checked first, and the bytes are counted as they
    arrive (a client may declare less, or send a chunked body without one). File parts
    spool to temporary files (Starlette: in memory up to 1 MB each)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = 0
    receive = request.receive

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    # Starlette's own limits cover non-file fields only (max_part_size), not file parts.
    return await Request(request.scope, counted).form(
        max_files=MAX_FILES, max_fields=MAX_FILES, max_part_size=MAX_FIELD_BYTES
    )


def _files_of(form: FormData) -> list[tuple[str, UploadFile]]:
    items = form.getlist(FIELD)
    uploads = [item for item in items if isinstance(item, UploadFile)]
    if not uploads or len(uploads) != len(items):
        raise HTTPException(
            422, f"send the files as multipart/form-data, each in the field {FIELD!r}"
        )
    named = []
    for upload in uploads:
        try:
            named.append((safe_name(upload.filename or ""), upload))
        except UploadNameError as e:
            raise HTTPException(422, str(e)) from e
    names = [name for name, _ in named]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise HTTPException(422, f"file name(s) given twice: {', '.join(twice)}")
    return named


def _http_error(error: Exception) -> HTTPException:
    from rag_pipeline.service.state import NotReadyError

    if isinstance(error, CollectionLockedError):
        return HTTPException(409, str(error))
    if isinstance(error, NotReadyError):
        return HTTPException(503, str(error))
    if isinstance(error, UploadNameError):
        return HTTPException(422, str(error))
    if isinstance(error, UnknownSourceError):
        return HTTPException(404, str(error))
    log.error("documents: %s", error)
    return HTTPException(500, str(error))


@router.post("", openapi_extra=_UPLOAD_BODY)
async def upload(request: Request) -> dict[str, Any]:
    """Upload files (multipart field ``files``) and ingest them; the ingest report. Accepted
    extensions: those of ``rag ingest``; size: RAG_SERVE__MAX_UPLOAD_MB for the request."""
    state = _state(request)
    limit = int(state.settings.serve.max_upload_mb * 1024 * 1024)
    form = await _form_within(request, limit)
    try:
        files = _files_of(form)
        try:
            return await run_in_threadpool(
                upload_files, state, [(name, upload.file) for name, upload in files]
            )
        except RagError as e:
            raise _http_error(e) from e
    finally:
        await form.close()


@router.get("")
def documents(request: Request) -> dict[str, Any]:
    """The collection's sources with chunk counts; ``managed``: its file is in the managed
    folder. Accepted upload extensions are listed too."""
    try:
        return {**list_documents(_state(request)), "accepted": accepted_suffixes()}
    except RagError as e:
        raise _http_error(e) from e


@router.delete("/{source:path}")
def delete(source: str, request: Request) -> dict[str, Any]:
    """Delete one source (as GET lists it): its chunks, and its file if managed; 404 if
    unknown."""
    try:
        return delete_document(_state(request), source)
    except RagError as e:
        raise _http_error(e) from e
