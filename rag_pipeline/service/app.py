"""The FastAPI application: routers of each part, the lifespan that loads the models off the
event loop, one error shape (``http_errors``), the body limit, the access log, CORS when
configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from rag_pipeline.service.state import ServiceState

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, state: ServiceState | None = None) -> FastAPI:
    """The service for ``settings``; models load in the background at start (``/readyz``
    answers 503 until they have). ``state``: one built (or loaded) already, for tests."""
    from importlib.metadata import version

    from rag_pipeline.service import (
        documents,
        eval_api,
        gaps_api,
        http_errors,
        native_api,
        openai_api,
        pages,
    )
    from rag_pipeline.service.access_log import AccessLog
    from rag_pipeline.service.limits import BodyLimit

    service = state or ServiceState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if not service.ready.is_set():
            # Loading takes seconds (the model, the keyword index): health checks answer
            # meanwhile, and a failure is shown by /readyz instead of ending the process.
            loading = asyncio.get_running_loop().run_in_executor(None, _load, service)
        yield
        if loading is not None:
            with contextlib.suppress(Exception):
                await loading
        if state is None:  # a state handed in belongs to the caller
            service.close()

    app = FastAPI(
        title="rag_pipeline",
        version=version("rag-pipeline"),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.started = int(time.time())  # the "created" of /v1/models
    http_errors.install(app)
    if settings.serve.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Added last = outermost: the access log sees every answer, the 413s of the limit too.
    app.add_middleware(BodyLimit, max_bytes=settings.serve.max_body_kb * 1024)
    app.add_middleware(AccessLog)
    for module in (native_api, openai_api, documents, gaps_api, eval_api, pages):
        app.include_router(module.router)
    return app


def _load(service: ServiceState) -> None:
    with contextlib.suppress(Exception):  # kept in service.load_error, shown by /readyz
        service.load()
