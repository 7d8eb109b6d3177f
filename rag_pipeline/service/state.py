"""What one service process holds: the settings, the loaded assistant, the writer lock, the
sessions and the gap log.

The assistant is built once at start (``load``, run off the event loop by the app's lifespan)
and replaced as a whole after every upload or delete (``refresh``): a request takes
``state.assistant`` once and answers from that snapshot, so it never sees a file half in and
half out of the keyword index.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from rag_pipeline.errors import RagError

if TYPE_CHECKING:
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.stores.base import VectorBackend

log = logging.getLogger(__name__)


class NotReadyError(RagError):
    """The service is still loading its models and store (or failed to: the message says)."""


class ServiceState:
    """Shared by every request of one process; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: EmbeddingModel | None = None
        self.store: VectorBackend | None = None
        self._assistant: Assistant | None = None
        self.load_error: str | None = None
        self.ready = threading.Event()
        # One writer per process (uploads, deletes); the collection's file lock
        # (rag_pipeline.locking, taken by ingest) keeps out writers of other processes.
        self.write_lock = threading.Lock()
        from rag_pipeline.gaps import GapLog

        self.gaps = GapLog(
            settings.gaps_db,
            log_questions=settings.serve.log_questions,
            low_confidence=settings.serve.low_confidence,
        )

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
            self._assistant = self._build()
        except RagError as e:
            self.load_error = str(e)
            log.error("service not ready: %s", e)
            raise
        finally:
            self.ready.set()

    def _build(self) -> Assistant:
        from rag_pipeline.assistant import Assistant

        if self.store is None or self.model is None:
            raise NotReadyError("the service is still loading its models")
        return Assistant.from_settings(self.settings, store=self.store, model=self.model)

    @property
    def assistant(self) -> Assistant:
        """The current assistant (a consistent snapshot); NotReadyError before ``load``."""
        if self._assistant is None:
            raise NotReadyError(self.load_error or "the service is still loading its models")
        return self._assistant

    def refresh(self) -> None:
        """Rebuild the assistant after the collection changed (call with ``write_lock``)."""
        self._assistant = self._build()
