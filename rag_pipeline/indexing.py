"""The ingest pipeline: files -> chunks -> vectors in the store, incremental and idempotent.

Built on LangChain's indexing API (``index()`` with the record manager of the state database,
``cleanup="incremental"``, ids = sha256 of content + metadata):

- an unchanged file embeds nothing; a changed file's old chunks are replaced;
- a file deleted from a folder that is ingested as a whole is pruned (its chunks removed);
  ingesting single files never prunes anything else;
- a file that cannot be read is reported and skipped, and keeps the chunks it had before;
- ``rebuild=True`` drops the collection and its records first;
- a file group's records, keyword rows and manifest rows commit in one transaction, after its
  vectors: a reader (another process, another machine) sees the group entirely or not at all.

>>> from rag_pipeline.config import load_settings
>>> report = ingest([Path("corpus")], load_settings())      # doctest: +SKIP
>>> report.chunks_added                                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from rag_pipeline.bookkeeping import Bookkeeping, SourceManifest
from rag_pipeline.embeddings import EmbeddingModel, build_embedding_model, cached
from rag_pipeline.errors import NeedsExtraError
from rag_pipeline.keyword_index import KeywordMirror
from rag_pipeline.loading import Discovery, LoadError, SourceFile, discover, load_file
from rag_pipeline.locking import collection_lock
from rag_pipeline.ocr import OcrReader
from rag_pipeline.retrieval import load_synonyms_for
from rag_pipeline.splitting import MIN_TEXT_CHARS, split_documents
from rag_pipeline.stores import VectorBackend, connect, open_store
from rag_pipeline.stores.base import group_of, source_key

if TYPE_CHECKING:
    from langchain_core.stores import ByteStore

    from rag_pipeline.config import Settings

ProgressCallback = Callable[[str, int, int], None]  # (source, files done, files total)
INDEX_GROUP_SIZE = 64  # chunks handed to index() at once (whole files only)
MAX_FILE_CHUNKS = 50_000


def max_file_chunks() -> int:
    """The most chunks one file may have: a file's chunks are embedded, held with their vectors
    and committed as one transaction, so a runaway file (a log, a dump) must fail alone rather
    than exhaust memory. 50,000 chunks of the default size are about 25 MB of text."""
    return MAX_FILE_CHUNKS


@dataclass
class IngestReport:
    """What an ingest run did; ``to_dict`` is the CLI's ``--json`` output."""

    files_seen: int = 0
    files_ingested: int = 0
    files_failed: list[dict[str, str]] = field(default_factory=list)
    files_skipped: list[dict[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_updated: int = 0
    chunks_deleted: int = 0
    chunks_unchanged: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_groups(
    files: list[SourceFile],
    settings: Settings,
    report: IngestReport,
    labels: dict[Path, str],
    group_size: int,
) -> Iterator[tuple[list[Document], int, list[SourceFile]]]:
    """Chunks of whole files, about ``group_size`` at a time, with the count of files done and
    the files whose chunks the group holds. Each chunk gets its root's label as ``root``.

    LangChain's incremental cleanup runs after each batch and removes a source's records that
    were not touched yet in this run, so a file whose chunks straddled two batches would lose
    its second half and re-embed it. Groups therefore never split a file.
    """
    group: list[Document] = []
    loaded: list[SourceFile] = []
    limit = max_file_chunks()
    # One engine for the run, loaded lazily.
    ocr = OcrReader(settings.ingest.ocr_min_confidence, settings.ocr_cache_location)
    for done, file in enumerate(files, start=1):
        problems: list[str] = []  # FAQ rows left out of a file that is otherwise ingested
        try:
            docs = load_file(
                file,
                max_file_mb=settings.ingest.max_file_mb,
                problems=problems,
                faq_columns=settings.ingest.faq_columns,
                table_chunk_chars=settings.split.chunk_size,
                ocr=ocr,
            )
            dropped: list[Document] = []
            chunks = split_documents(docs, settings.split, dropped=dropped)
            del docs
            if not chunks:
                raise LoadError(
                    f"no text: none of its {len(dropped)} chunk(s) has {MIN_TEXT_CHARS} or more "
                    "letters or digits (random bytes or symbols only?)"
                    if dropped
                    else "no text left after splitting"
                )
            if len(chunks) > limit:
                raise LoadError(
                    f"{len(chunks):,} chunks, more than the {limit:,} one file may have: split "
                    "the file, raise RAG_SPLIT__CHUNK_SIZE or lower RAG_INGEST__MAX_FILE_MB"
                )
        except NeedsExtraError as e:
            report.files_skipped.append({"path": file.source, "reason": str(e)})
        except LoadError as e:
            report.files_failed.append({"path": file.source, "reason": str(e)})
        except Exception as e:  # a parser bug must not stop the other files
            report.files_failed.append(
                {"path": file.source, "reason": f"unexpected {type(e).__name__}: {e}"}
            )
        else:
            for chunk in chunks:
                chunk.metadata["root"] = labels[file.root]
            if group and len(group) + len(chunks) > limit:
                yield group, done - 1, loaded  # together they would pass the limit
                group, loaded = [], []
            loaded.append(file)
            group.extend(chunks)
            if problems:
                report.files_failed.append(
                    {
                        "path": file.source,
                        "reason": "; ".join(problems)
                        + " (left out: fix and ingest again; the rest of the file was ingested)",
                    }
                )
        if len(group) >= group_size or done == len(files):
            yield group, done, loaded
            group, loaded = [], []


def embedding_cache(settings: Settings) -> Path | ByteStore:
    """Where ingest caches document vectors: the data folder, or the state database."""
    if settings.state.cache == "database":
        from rag_pipeline.state_db import DatabaseByteStore, state_engine

        return DatabaseByteStore(state_engine(settings))
    return settings.cache_dir


def ingest(
    paths: Iterable[Path],
    settings: Settings,
    *,
    rebuild: bool = False,
    prune: bool = True,
    model: EmbeddingModel | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest files and folders into the configured collection and report what changed."""

    started = time.perf_counter()
    model = model or build_embedding_model(settings)
    found = discover(paths, settings.ingest)
    report = IngestReport(files_seen=len(found.files), files_skipped=found.skipped)

    embedding_function = (
        cached(model, embedding_cache(settings)) if settings.embeddings.cache else None
    )
    backend = connect(settings, embedding_function or model.embeddings)
    try:
        # Shared (on a PostgreSQL state): ingest workers run side by side, a rebuild alone.
        with collection_lock(settings, backend.namespace, what="ingest", shared=not rebuild):
            store = open_store(settings, model, create=True, rebuild=rebuild, backend=backend)
            _ingest_locked(found, settings, store, report, prune=prune, progress=progress)
    finally:
        backend.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _ingest_locked(
    found: Discovery,
    settings: Settings,
    store: VectorBackend,
    report: IngestReport,
    *,
    prune: bool,
    progress: ProgressCallback | None,
) -> None:
    from langchain_core.indexing import index

    state = Bookkeeping(settings, store.namespace)
    # Records first, then the store: vectors are written before their records, so a record
    # seen before an empty count was not just written by another worker.
    if state.records.list_keys(limit=1) and store.count() == 0:
        # An empty store with records: rebuilt, or emptied behind our back (in-memory store,
        # deleted folder). The records would make ingest skip everything, so they go too.
        state.forget_records()
    rekeyed = state.upgrade_layout()
    if rekeyed:
        report.notes.append(
            f"upgraded the collection's records: {rekeyed} sources are now keyed by folder + "
            "path, so two folders may hold files of the same name; their chunks are rewritten "
            "once in this run (vectors from the embedding cache)"
        )
    state.sync_keyword_index(store)
    labels = {root: state.root_label(root) for root in {f.root for f in found.files}}
    labels.update({root: state.root_label(root) for root in found.roots})
    # Tokens are made with the collection's synonym groups, which a synonyms.txt among the
    # roots may just have changed: chunks holding a changed variant are re-tokenised now.
    state.keyword.ensure_synonyms(load_synonyms_for(settings, store.namespace))
    # index() writes through the mirror, so the keyword index follows every add and delete.
    # Its keyword writes commit with the records of the same group.
    mirror = KeywordMirror(store.vector_store, state.keyword, joined_to=state.records)

    groups = _file_groups(found.files, settings, report, labels, INDEX_GROUP_SIZE)
    for group, done, files in groups:
        if group:
            # Recorded as each group commits: a run killed later still prunes these files.
            rows = SourceManifest.rows_of(files, labels)
            state.records.join(partial(state.manifest.add_in, rows=rows))
            result = index(
                group,
                state.records,
                mirror,
                cleanup="incremental",
                source_id_key=_group_of_document,
                key_encoder="sha256",
                batch_size=len(group),
            )
            report.chunks_added += result["num_added"]
            report.chunks_updated += result["num_updated"]
            report.chunks_unchanged += result["num_skipped"]
            report.chunks_deleted += result["num_deleted"]
            state.records.flush()  # anything index() did not write with records (none today)
        report.files_ingested += len(files)
        if progress is not None:
            progress(files[-1].source if files else "", done, len(found.files))

    if prune:
        for root in found.roots:
            present = {source_key(labels[root], f.source) for f in found.files if f.root == root}
            gone = state.manifest.under(root) - present
            report.chunks_deleted += state.delete_sources(store, sorted(gone))
    if report.chunks_added or report.chunks_updated or report.chunks_deleted:
        store.flush()


def _group_of_document(doc: Document) -> str:
    return group_of(doc.metadata) or ""
