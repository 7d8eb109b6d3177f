"""Collection housekeeping on every backend: list, peek, count, rename, delete, migrate.

A collection is more than its vectors: its record manager, source manifest and keyword index
(``rag_pipeline.bookkeeping``) follow every operation here. ``rename`` moves them to the new
namespace, ``delete`` removes them, ``delete_docs`` removes single chunks everywhere, and
``migrate`` writes them for the target store, so ``rag ingest`` stays incremental afterwards.

``migrate`` copies chunk ids, texts, metadata and the stored vectors from the configured
collection to another store (Chroma <-> Milvus, another location or name) in batches, without
calling the embedding model; the target records the same embedding fingerprint.

>>> from rag_pipeline.config import load_settings
>>> settings = load_settings()
>>> list_collections(settings)["collections"]                       # doctest: +SKIP
[{'name': 'rag', 'count': 42, 'fingerprint': 'local:multilingual-e5-small-q4:384', ...}]
>>> target = target_settings(settings, backend="milvus", uri="kb.db")
>>> migrate(settings, target).to_dict()                             # doctest: +SKIP
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline import state_db
from rag_pipeline.bookkeeping import Bookkeeping
from rag_pipeline.errors import ConfigurationError, EmptyIndexError, RagError
from rag_pipeline.locking import collection_lock
from rag_pipeline.stores.base import group_of

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.stores import VectorBackend

MIGRATE_BATCH = 500
PEEK_TEXT = 120  # characters of each chunk shown by `rag collections peek` (not --json)


# ---------------------------------------------------------------------------------------------
# Opening a collection without an embedding model
# ---------------------------------------------------------------------------------------------


def missing_collection_message(settings: Settings, backend: VectorBackend) -> str:
    return (
        f"there is no collection {settings.store.collection!r} at {backend.location}: "
        "`rag collections list` shows the collections there; choose one with --collection NAME "
        "(RAG_STORE__COLLECTION), or create it with `rag ingest PATH`"
    )


@contextmanager
def opened(
    settings: Settings, *, must_exist: bool = True, writing: str | None = None
) -> Iterator[VectorBackend]:
    """The configured backend, connected (no embedding model needed) and closed afterwards.

    ``must_exist``: a missing collection is an EmptyIndexError that says what to do.
    ``writing``: the command that writes it (``"rag migrate"``, ...): holds the collection's
    write lock meanwhile (see ``rag_pipeline.locking``).
    """
    from rag_pipeline.stores import connect

    backend = connect(settings)
    try:
        with ExitStack() as stack:
            if writing is not None:
                stack.enter_context(collection_lock(settings, backend.namespace, what=writing))
            if not backend.exists() and must_exist:
                raise EmptyIndexError(missing_collection_message(settings, backend))
            yield backend
    finally:
        backend.close()


def _describe_location(settings: Settings, backend: VectorBackend) -> dict[str, Any]:
    cfg = settings.store
    return {
        "backend": cfg.backend,
        "mode": cfg.mode if cfg.backend == "chroma" else None,
        "location": backend.location,
        "collection": backend.name,
    }


# ---------------------------------------------------------------------------------------------
# list / count / peek / rename / delete
# ---------------------------------------------------------------------------------------------


def list_collections(settings: Settings) -> dict[str, Any]:
    """Every collection at the configured location: name, chunk count, embedding fingerprint,
    and whether it is the configured one."""
    from rag_pipeline.stores import connect

    with opened(settings, must_exist=False) as backend:
        rows = []
        for name in backend.list_collections():
            # Not validated: collections made by other tools may have other names.
            store = settings.store.model_copy(update={"collection": name})
            other = connect(settings.model_copy(update={"store": store}))
            row: dict[str, Any] = {"name": name, "count": None, "fingerprint": None}
            try:
                other.exists()
                row["fingerprint"] = other.stored_fingerprint()
                row["count"] = other.count()
            except Exception as e:  # a foreign collection (no index, another schema, ...)
                row["error"] = f"{type(e).__name__}: {e}"
            finally:
                other.close()
            rows.append({**row, "current": name == settings.store.collection})
        info = _describe_location(settings, backend)
    info.pop("collection")
    return {**info, "collections": rows}


def count(settings: Settings) -> dict[str, Any]:
    """The configured collection's chunk count (and where it is)."""
    with opened(settings) as backend:
        return {**_describe_location(settings, backend), "count": backend.count()}


def peek(settings: Settings, n: int = 5) -> list[dict[str, Any]]:
    """Up to ``n`` chunks of the configured collection: id, text and metadata."""
    if n < 0:
        raise ConfigurationError(f"peek {n}: give a number of chunks >= 0")
    with opened(settings) as backend:
        return [
            {"id": doc.id, "text": doc.page_content, "metadata": doc.metadata}
            for doc in backend.peek(n)
        ]


def get_docs(settings: Settings, ids: list[str]) -> dict[str, Any]:
    """Chunks of the configured collection by id: ``chunks`` (id, text, metadata) in the order
    asked, and the ``missing`` ids."""
    with opened(settings) as backend:
        found = {doc.id: doc for doc in backend.get(list(dict.fromkeys(ids)))}
    return {
        "chunks": [
            {"id": i, "text": found[i].page_content, "metadata": found[i].metadata}
            for i in ids
            if i in found
        ],
        "missing": [i for i in ids if i not in found],
    }


def delete_docs(
    settings: Settings,
    *,
    ids: list[str] | None = None,
    where: dict[str, Any] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Delete chunks by id, by metadata filter, or every chunk of one source, from the store,
    the keyword index and the record manager alike (exactly one of the three).

    The files stay where they are: ingesting their folder again brings their chunks back
    (remove the file, or list it in ``.ragignore``, to keep it out).
    """
    given = [x for x in (ids, where, source) if x]
    if len(given) != 1:
        raise ConfigurationError("delete-docs needs exactly one of --ids, --where or --source")
    with opened(settings, writing="rag collections delete-docs") as backend:
        state = Bookkeeping(settings, backend.namespace)
        missing: list[str] = []
        if source:
            deleted = state.delete_sources(backend, [_source_key(state, backend, source)])
        else:
            if ids:
                present = {doc.id for doc in backend.get(list(ids))}
                missing = [i for i in ids if i not in present]
                chosen = [i for i in ids if i in present]
            else:
                chosen = backend.find_ids(where or {})
            deleted = state.delete_ids(backend, chosen)
        backend.flush()
        left = backend.count()
        info = _describe_location(settings, backend)
    return {**info, "deleted": deleted, "missing": missing, "count": left}


def _source_key(state: Bookkeeping, backend: VectorBackend, source: str) -> str:
    """The source key (``LABEL/PATH``) meant by ``source``: a key as `rag info` lists it, or a
    path relative to its folder when only one folder holds that path."""
    keys = [key for key, _root in state.manifest.rows()]
    if source in keys or state.records.list_keys(group_ids=[source], limit=1):
        return source
    matching = [key for key in keys if key.split("/", 1)[-1] == source]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise ConfigurationError(
            f"{len(matching)} folders hold {source!r}: give one of {', '.join(matching)}"
        )
    known = ", ".join(keys[:5]) or "none yet"
    raise ConfigurationError(
        f"no chunks of source {source!r} in collection {backend.name!r}; sources are named as "
        f"`rag info` lists them (e.g. {known})"
    )


def _with_collection(settings: Settings, name: str) -> Settings:
    """``settings`` with another collection name (validated like RAG_STORE__COLLECTION)."""
    return _with_store(settings, {"collection": name})


def _with_store(
    settings: Settings, changes: dict[str, Any], data_dir: Path | None = None
) -> Settings:
    from pydantic import ValidationError

    from rag_pipeline.config import StoreSettings

    try:
        store = StoreSettings.model_validate({**settings.store.model_dump(), **changes})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in e.errors()
        )
        raise ConfigurationError(f"invalid store setting ({problems})") from e
    update: dict[str, Any] = {"store": store}
    if data_dir is not None:
        update["data_dir"] = data_dir
    return settings.model_copy(update=update)


def rename(settings: Settings, new_name: str) -> dict[str, Any]:
    """Rename the configured collection and move its records, manifest and keyword rows to
    the new name's namespace. Afterwards point the settings at the new name."""
    _with_collection(settings, new_name)  # the new name must be a valid collection name
    with opened(settings, writing="rag collections rename") as backend:
        if new_name == backend.name:
            raise ConfigurationError(f"the collection is already called {new_name!r}")
        if new_name in backend.list_collections():
            raise ConfigurationError(
                f"a collection {new_name!r} already exists at {backend.location}: choose another "
                f"name, or delete it first (`rag collections delete --yes --collection "
                f"{new_name}`)"
            )
        old_namespace = backend.namespace
        info = _describe_location(settings, backend)
        backend.rename(new_name)
        moved = Bookkeeping(settings, old_namespace).move_to(backend.namespace)
        chunks = backend.count()
    return {
        **info,
        "renamed_to": new_name,
        "count": chunks,
        "moved": moved.to_dict(),
        "namespace": backend.namespace,
        "next": f"set RAG_STORE__COLLECTION={new_name} (or pass --collection {new_name})",
    }


def delete(settings: Settings, *, confirm: bool) -> dict[str, Any]:
    """Drop the configured collection and everything kept beside it. ``confirm`` must be
    True (``--yes``): there is no undo."""
    name = settings.store.collection
    if not confirm:
        raise ConfigurationError(
            f"`rag collections delete` drops collection {name!r} with all its chunks and "
            "records, and cannot be undone: pass --yes to confirm"
        )
    with opened(settings, must_exist=False, writing="rag collections delete") as backend:
        existed = backend.exists()
        chunks = backend.count() if existed else 0
        if existed:
            backend.drop()
        removed = Bookkeeping(settings, backend.namespace).drop()
        info = _describe_location(settings, backend)
    if not existed and not any(removed.to_dict().values()):
        raise EmptyIndexError(
            f"there is no collection {name!r} at {info['location']} (and nothing recorded for "
            "it): `rag collections list` shows the collections there"
        )
    return {**info, "existed": existed, "deleted_chunks": chunks, "removed": removed.to_dict()}


# ---------------------------------------------------------------------------------------------
# migrate
# ---------------------------------------------------------------------------------------------


def target_settings(
    settings: Settings,
    *,
    backend: str | None = None,
    mode: str | None = None,
    uri: str | None = None,
    collection: str | None = None,
    host: str | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
    settings_file: Path | None = None,
) -> Settings:
    """The settings of a migration target: the configured ones, with the ``[store]`` table and
    ``data_dir`` of ``settings_file`` (a rag.toml) over them, then the given values.

    Embeddings, splitting etc. stay the source's: the vectors are copied, not recomputed.
    The target's record manager and keyword index live in its ``data_dir`` (by default the
    source's: each collection has its own namespace there).
    """
    changes: dict[str, Any] = {}
    if settings_file is not None:
        try:
            data = tomllib.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigurationError(f"cannot read target settings {settings_file}: {e}") from e
        store = data.get("store", {})
        if not isinstance(store, dict):
            raise ConfigurationError(f"{settings_file}: [store] must be a table")
        changes.update(store)
        if data_dir is None and "data_dir" in data:
            data_dir = Path(data["data_dir"])
    given = {
        "backend": backend,
        "mode": mode,
        "uri": uri,
        "collection": collection,
        "host": host,
        "port": port,
    }
    changes.update({k: v for k, v in given.items() if v is not None})
    if changes.get("backend") == "milvus" and "uri" not in changes:
        changes["uri"] = None  # the target's default: DATA_DIR/milvus.db, not the source's
    result = _with_store(settings, changes, data_dir)
    if result.store.backend == "milvus" and mode is not None:
        raise ConfigurationError(
            f"--to-mode {mode} is for a Chroma target: add --to-backend chroma"
        )
    if result.store.backend == "chroma" and uri is not None:
        raise ConfigurationError(
            "--to-uri is for a Milvus target (a .db file or http://host:19530): add "
            "--to-backend milvus, or give a Chroma target with --to-mode / --to-data-dir"
        )
    return result


@dataclass
class MigrationReport:
    """What ``migrate`` did; ``to_dict`` is ``rag migrate --json``."""

    source: dict[str, Any]
    target: dict[str, Any]
    fingerprint: str
    chunks_copied: int = 0
    batches: int = 0
    replaced: bool = False
    bookkeeping: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prepare_target(
    target: VectorBackend, settings: Settings, fingerprint: str, *, replace: bool
) -> bool:
    """Make the target collection exist, empty, with ``fingerprint``; True if one was dropped."""
    where = f"collection {settings.store.collection!r} at {target.location}"
    if target.exists():
        stored, chunks = target.stored_fingerprint(), target.count()
        if not replace:
            if stored != fingerprint:
                raise ConfigurationError(
                    f"the target {where} was built with embeddings {stored!r}, not "
                    f"{fingerprint!r}: pass --replace to drop it, or choose another "
                    "--to-collection"
                )
            if chunks:
                raise ConfigurationError(
                    f"the target {where} already holds {chunks} chunks: pass --replace to drop "
                    "it first, or choose another --to-collection"
                )
            return False
        target.drop()
        target.create(settings, fingerprint)
        return True
    target.create(settings, fingerprint)
    return False


def migrate(
    settings: Settings,
    target: Settings,
    *,
    replace: bool = False,
    batch_size: int = MIGRATE_BATCH,
) -> MigrationReport:
    """Copy the configured collection into the store ``target`` describes, vectors included.

    Nothing is embedded. The target collection is created with the source's embedding
    fingerprint; an existing target must be empty and have the same fingerprint, unless
    ``replace`` (then it is dropped first). The target's record manager (keys = chunk ids,
    groups = ``source``), source manifest and keyword index are written too, so ingesting the
    same corpus into the target afterwards adds nothing. Counts are checked at the end.
    """
    from rag_pipeline.stores import connect

    if batch_size <= 0:
        raise ConfigurationError(f"--batch-size {batch_size}: give a positive number")
    started = time.perf_counter()
    with opened(settings, writing="rag migrate (source)") as source:
        fingerprint = source.stored_fingerprint()
        if fingerprint is None:
            raise ConfigurationError(
                f"collection {settings.store.collection!r} at {source.location} records no "
                "embedding fingerprint (it was not created by rag_pipeline): re-ingest it with "
                "`rag ingest --rebuild`, or ingest the corpus into the target directly"
            )
        destination = connect(target)
        stack = ExitStack()
        try:
            if destination.namespace == source.namespace and (
                state_db.same_location(target.state_location, settings.state_location)
            ):
                raise ConfigurationError(
                    f"source and target are the same collection ({source.namespace}): give "
                    "another --to-backend, --to-uri, --to-mode or --to-collection"
                )
            report = MigrationReport(
                source={**_describe_location(settings, source), "count": source.count()},
                target=_describe_location(target, destination),
                fingerprint=fingerprint,
            )
            lock = collection_lock(target, destination.namespace, what="rag migrate (target)")
            stack.enter_context(lock)
            report.replaced = _prepare_target(destination, target, fingerprint, replace=replace)
            # The target is empty now: whatever is recorded for it is stale.
            state = Bookkeeping(target, destination.namespace)
            state.drop()
            for batch in source.scan(batch_size):
                if not batch:
                    continue
                destination.write(batch)
                ids = [r.id for r in batch]
                state.keyword.add([r.document() for r in batch], ids)
                state.record(ids, [group_of(r.metadata) for r in batch])
                report.chunks_copied += len(batch)
                report.batches += 1
            Bookkeeping(settings, source.namespace).copy_roots_and_manifest(state)
            _verify(report, source, destination, target)
        finally:
            stack.close()
            destination.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _verify(
    report: MigrationReport, source: VectorBackend, destination: VectorBackend, target: Settings
) -> None:
    destination.flush()
    expected = source.count()
    stored = destination.count()
    kept = Bookkeeping(target, destination.namespace).counts()
    report.target["count"] = stored
    report.bookkeeping = kept.to_dict()
    problems = []
    if report.chunks_copied != expected:
        problems.append(f"copied {report.chunks_copied} of {expected} chunks")
    if stored != expected:
        problems.append(f"the target holds {stored} chunks, the source {expected}")
    if kept.records != stored or kept.keyword_chunks != stored:
        problems.append(
            f"{kept.records} records and {kept.keyword_chunks} keyword rows for {stored} chunks"
        )
    if problems:
        raise RagError(
            "migration incomplete: " + "; ".join(problems) + ". Was the source written to "
            "meanwhile? Run `rag migrate` again with --replace"
        )
