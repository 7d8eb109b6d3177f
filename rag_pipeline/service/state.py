"""What one service process holds: the settings, the loaded assistant, the writer lock, the
sessions, the gap log and the evaluation runs.

The assistant is built once at start (``load``, run off the event loop by the app's lifespan)
and replaced as a whole after every upload or delete (``refresh``): a request takes
``state.snapshot`` (or ``state.assistant``) once and answers from it, so it never sees a file
half in and half out of the keyword index. The snapshot also keeps the keyword searcher it was
built with, so a request that asks for its own ``k`` or ``filter`` gets a retriever over the
same index without loading it again.

Writes made elsewhere (another worker's upload, a ``rag ingest`` against a Chroma server) are
noticed through the keyword index's change counter: at most every ``CHANGE_CHECK_S`` seconds a
request starts a background thread that reads it (one small query) and, when it moved, builds
a new snapshot; requests go on answering from the current one meanwhile, so none waits for a
rebuild. The keyword side answers from the database, so that costs the same at any collection
size.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_pipeline.errors import RagError
from rag_pipeline.service.sessions import Sessions

if TYPE_CHECKING:
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.bm25 import KeywordSearcher
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.keyword_index import KeywordIndex
    from rag_pipeline.retrieval import Visibility
    from rag_pipeline.stores.base import VectorBackend

log = logging.getLogger(__name__)

CHANGE_CHECK_S = 1.0  # how stale a snapshot may be after a write by another process


class NotReadyError(RagError):
    """The service is still loading its models and store (or failed to: the message says)."""


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the collection: the assistant and the parts it was built from."""

    assistant: Assistant
    settings: Settings
    store: VectorBackend
    model: EmbeddingModel
    keyword: KeywordSearcher | None  # None unless the retriever is hybrid
    # Dense-only retrieval: the chunks stored when the snapshot was made (hybrid: the keyword
    # searcher's); a retriever built per request must not see more of a later upload.
    visible_ids: Visibility | None = None
    changes: int = 0  # the keyword index's change counter when the snapshot was made


class ServiceState:
    """Shared by every request of one process; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: EmbeddingModel | None = None
        self.store: VectorBackend | None = None
        self._snapshot: Snapshot | None = None
        self.load_error: str | None = None
        self.ready = threading.Event()
        # One writer per process (uploads, deletes); the collection's file lock
        # (rag_pipeline.locking, taken by ingest) keeps out writers of other processes.
        self.write_lock = threading.Lock()
        cfg = settings.serve
        # Both in the state database, opened on first use: replicas share them.
        self.sessions = Sessions(
            settings, turns=cfg.session_turns, ttl=cfg.session_ttl, max_sessions=cfg.max_sessions
        )
        from rag_pipeline.gaps import GapLog
        from rag_pipeline.service.eval_api import Evaluations

        self.gaps = GapLog(
            settings,
            log_questions=settings.serve.log_questions,
            low_confidence=settings.serve.low_confidence,
        )
        self.evaluations = Evaluations()  # the admin page's runs and their report links
        self._checked = 0.0  # when the change counter was last read
        self._following: threading.Thread | None = None  # the background check, if running
        self._keyword_index: KeywordIndex | None = None

    def load(self) -> None:
        """Build the embedding model, open (or create) the collection, build the assistant.

        Called once, in a worker thread; ``ready`` is set when done. A failure is kept in
        ``load_error`` (``/readyz`` shows it) instead of killing the process.
        """
        from rag_pipeline.embeddings import build_embedding_model
        from rag_pipeline.locking import collection_lock
        from rag_pipeline.stores import connect, open_store

        try:
            self.model = build_embedding_model(self.settings)
            backend = connect(self.settings, self.model.embeddings)
            if backend.exists():
                # create=True: an existing but empty collection is a knowledge base to fill,
                # not the "ingest first" error of rag ask.
                self.store = open_store(self.settings, self.model, create=True, backend=backend)
            else:
                # A fresh service starts with an empty knowledge base that uploads fill.
                with collection_lock(self.settings, backend.namespace, what="serve"):
                    self.store = open_store(self.settings, self.model, create=True, backend=backend)
            self._snapshot = self._build()
        except RagError as e:
            self.load_error = str(e)
            log.error("service not ready: %s", e)
            raise
        except Exception as e:  # a bug or a store client's own error: still shown by /readyz
            self.load_error = f"unexpected {type(e).__name__} while loading: {e}"
            log.exception("service not ready")
            raise
        finally:
            self.ready.set()

    def _build(self) -> Snapshot:
        from rag_pipeline.assistant import Assistant
        from rag_pipeline.retrieval import load_keyword_index, load_synonyms_for, snapshot_ids

        if self.store is None or self.model is None:
            raise NotReadyError("the service is still loading its models")
        changes = self._changes()
        synonyms = load_synonyms_for(self.settings, self.store.namespace)
        keyword, visible = None, None
        if self.settings.retriever.search_type == "hybrid":
            keyword = load_keyword_index(self.settings, self.store, synonyms)
        else:
            visible = snapshot_ids(self.settings, self.store)
        assistant = Assistant.from_settings(
            self.settings,
            store=self.store,
            model=self.model,
            synonyms=synonyms,
            keyword=keyword,
            visible_ids=visible,
        )
        return Snapshot(assistant, self.settings, self.store, self.model, keyword, visible, changes)

    def _changes(self) -> int:
        from rag_pipeline.keyword_index import KeywordIndex
        from rag_pipeline.state_db import state_engine

        if self.store is None:
            return 0
        # Opened once: opening checks the tables and the namespace row, reading the counter
        # is one small query, and requests read it every CHANGE_CHECK_S.
        if self._keyword_index is None or self._keyword_index.collection != self.store.namespace:
            self._keyword_index = KeywordIndex(state_engine(self.settings), self.store.namespace)
        return self._keyword_index.changes()

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (take it once per request); NotReadyError before ``load``.
        A write by another process since it was made gives a new one (see the module)."""
        if self._snapshot is None:
            raise NotReadyError(self.load_error or "the service is still loading its models")
        now = time.monotonic()
        if now - self._checked >= CHANGE_CHECK_S:
            self._checked = now
            self._follow_other_writers()
        return self._snapshot

    def _follow_other_writers(self) -> None:
        if self._following is not None and self._following.is_alive():
            return
        self._following = threading.Thread(
            target=self._rebuild_if_changed, name="rag-follow-writers", daemon=True
        )
        self._following.start()

    def _rebuild_if_changed(self) -> None:
        # An upload of this process refreshes when it is done: never rebuild under it.
        if not self.write_lock.acquire(blocking=False):
            return
        try:
            current = self._snapshot
            if current is not None and self._changes() != current.changes:
                self._snapshot = self._build()
        except Exception:  # the old snapshot still answers; the next check tries again
            log.exception("could not follow a change of the collection")
        finally:
            self.write_lock.release()

    @property
    def assistant(self) -> Assistant:
        """The current assistant (a consistent snapshot); NotReadyError before ``load``."""
        return self.snapshot.assistant

    @property
    def model_id(self) -> str:
        """The model id of the served collection on the OpenAI API (``rag`` by default)."""
        return self.settings.store.collection

    def close(self) -> None:
        """Release the store's client at shutdown (a Milvus connection; Chroma holds none)."""
        if self.store is not None:
            self.store.close()

    def refresh(self) -> None:
        """Rebuild the assistant after the collection changed (call with ``write_lock``)."""
        self._snapshot = self._build()
