"""Settings + Embeddings -> a vector store, behind one small interface per backend.

``open_store`` is the checked way in (embedding fingerprint, ingest-first message); ``connect``
opens a backend for housekeeping that needs no embedding model. The backends are
``ChromaBackend`` (``stores/chroma.py``) and ``MilvusBackend`` (``stores/milvus.py``, the
``[milvus]`` extra), imported only when chosen; ``base.py`` holds their contract and
``filters.py`` the one filter grammar they share.

>>> from rag_pipeline.config import Settings
>>> from rag_pipeline.embeddings import build_embedding_model
>>> settings = Settings(embeddings={"provider": "fake"}, store={"mode": "memory"})
>>> store = open_store(settings, build_embedding_model(settings), create=True)
>>> store.count()
0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_pipeline.errors import EmbeddingMismatchError, EmptyIndexError, IndexSettingsMismatchError
from rag_pipeline.stores.base import FINGERPRINT_KEY, Hit, Record, VectorBackend

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel

__all__ = ["FINGERPRINT_KEY", "Hit", "Record", "VectorBackend", "connect", "open_store"]


def ingest_first_message(where: str) -> str:
    return (
        f"nothing has been ingested into {where} yet: run `python scripts/ingest.py` "
        "(or `rag ingest PATH`) first"
    )


def connect(settings: Settings, embedding_function: Embeddings | None = None) -> VectorBackend:
    """The configured backend, connected but not opened: call ``exists()`` (or ``create``)
    before using the collection, and ``close()`` when done. ``open_store`` is the checked way
    in for search and ingest; this one is for housekeeping that needs no embedding model
    (``rag collections``, ``rag migrate``)."""
    # Imported here: a backend's module (and its database client) loads only when chosen.
    if settings.store.backend == "milvus":
        from rag_pipeline.stores.milvus import MilvusBackend

        return MilvusBackend(settings, embedding_function)
    from rag_pipeline.stores.chroma import ChromaBackend

    return ChromaBackend(settings, embedding_function)


FIXED_INDEX_SETTINGS = ("space", "max_neighbors", "ef_construction")


def check_index_settings(settings: Settings, backend: VectorBackend, *, writing: bool) -> None:
    """The settings must describe the index the collection was built with: another distance
    space would change every score (and so the refusal threshold) without a word. ``ef_search``
    may change: a writer applies it in place where the backend stores it."""
    stored = backend.index_settings()
    cfg = settings.store
    wanted = {"space": cfg.space, "max_neighbors": cfg.max_neighbors}
    wanted["ef_construction"] = cfg.ef_construction
    wrong = [key for key in FIXED_INDEX_SETTINGS if key in stored and stored[key] != wanted[key]]
    if wrong:
        found = ", ".join(
            f"{key}={stored[key]} (settings: RAG_STORE__{key.upper()}={wanted[key]})"
            for key in wrong
        )
        raise IndexSettingsMismatchError(
            f"collection {cfg.collection!r} at {backend.location} was built with {found}: set "
            "the settings back to the collection's values, or rebuild it with the new ones "
            "(`rag ingest --rebuild`, or `rag migrate --to-collection NEW` with the new "
            "settings to keep the old one)"
        )
    if writing and stored.get("ef_search") not in (None, cfg.ef_search):
        backend.set_ef_search(cfg.ef_search)


def open_store(
    settings: Settings,
    model: EmbeddingModel,
    *,
    create: bool,
    embedding_function: Embeddings | None = None,
    rebuild: bool = False,
    backend: VectorBackend | None = None,
) -> VectorBackend:
    """Open the configured collection, checking that it was built with ``model``.

    ``create``: make the collection when missing (ingest); otherwise a missing or empty
    collection is an EmptyIndexError telling the user to ingest first (ask).
    ``embedding_function`` defaults to ``model.embeddings`` (ingest passes the cached one).
    ``rebuild``: drop the collection first (even one built with another model).
    ``backend``: one ``connect`` made already (ingest holds the collection's lock on it).
    """
    if backend is None:
        backend = connect(settings, embedding_function or model.embeddings)
    if rebuild and backend.exists():
        backend.drop()  # whatever model built it: --rebuild is the way out of a mismatch
    if backend.exists():
        stored = backend.stored_fingerprint()
        configured = model.fingerprint if model.dimension is not None else None
        if (
            stored is not None
            and configured is None
            and not stored.startswith(f"{model.provider}:{model.model}:")
        ):
            configured = model.fingerprint
        if stored is not None and configured is not None and stored != configured:
            raise EmbeddingMismatchError(settings.store.collection, stored, configured)
        if stored is not None and model.dimension is None:
            model.dimension = int(stored.rsplit(":", 1)[1])
        check_index_settings(settings, backend, writing=create)
    elif create:
        model.resolve_dimension()
        try:
            backend.create(settings, model.fingerprint)
        except Exception:
            # Another worker (another machine) created it at the same moment: check it as
            # an existing collection, with its fingerprint and index settings.
            if not backend.exists():
                raise
            return open_store(
                settings,
                model,
                create=create,
                embedding_function=embedding_function,
                backend=backend,
            )
    else:
        raise EmptyIndexError(
            ingest_first_message(f"collection {settings.store.collection!r} at {backend.location}")
        )
    backend.attach()
    return backend
