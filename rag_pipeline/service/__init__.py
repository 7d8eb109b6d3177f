"""The HTTP service (``rag serve``): an OpenAI-compatible chat endpoint with citations, a
native ask/search API, document upload, the knowledge-gap log and a chat page.

``create_app(settings)`` builds the FastAPI application; ``rag serve`` runs it with uvicorn.
The embedding model, the store and the retriever are loaded once per process (``ServiceState``)
and shared by every request.

>>> from rag_pipeline.config import load_settings
>>> app = create_app(load_settings())          # doctest: +SKIP
"""

from __future__ import annotations

from rag_pipeline.service.app import create_app
from rag_pipeline.service.state import ServiceState

__all__ = ["ServiceState", "create_app"]
