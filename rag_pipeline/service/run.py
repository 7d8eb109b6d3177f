"""``rag serve``: check the bind address and the store, then run the app with uvicorn.

Kept light at import: ``rag serve --help`` must not load FastAPI, the store or a model.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.service.auth import auth_enabled, check_bind

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rag_pipeline.config import Settings

FACTORY = "rag_pipeline.service.run:app_from_environment"


def embedded_store(settings: Settings) -> str | None:
    """What makes the configured store private to one process (None for a server)."""
    store = settings.store
    if store.backend == "chroma" and store.mode != "http":
        return f"Chroma {store.mode} mode"
    if store.backend == "milvus" and not (store.uri or "").startswith(("http://", "https://")):
        return "a milvus-lite file"
    return None


def check_workers(settings: Settings, workers: int) -> None:
    """Several workers need a store they all reach: an embedded one lives in one process, so
    the others would never see its uploads."""
    if workers < 1:
        raise ConfigurationError(f"--workers {workers}: give 1 or more worker processes")
    embedded = embedded_store(settings)
    if workers > 1 and embedded is not None:
        raise ConfigurationError(
            f"--workers {workers} needs a store server, but the store is {embedded}, which "
            "each process would open on its own (replicas would not see each other's uploads): "
            "use a Chroma server (RAG_STORE__MODE=http, RAG_STORE__HOST, RAG_STORE__PORT) or a "
            "Milvus server (RAG_STORE__BACKEND=milvus, RAG_STORE__URI=http://HOST:19530), or "
            "run one worker"
        )


def configure_access_log() -> None:
    """Our access lines on stderr as they are (JSON); uvicorn's own access log stays off."""
    from rag_pipeline.service.access_log import ACCESS_LOGGER

    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def app_from_environment() -> FastAPI:
    """The app of one worker process when there are several (uvicorn imports this factory):
    the settings are read again in the worker, as the entry point read them; ``serve`` puts
    its flags (data folder, collection) into the environment first."""
    from rag_pipeline.config import load_settings
    from rag_pipeline.service.app import create_app

    configure_access_log()
    return create_app(load_settings())


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int) -> int:
    """Run the service until Ctrl-C (exit 0). ConfigurationError before anything starts."""
    cfg = settings.serve
    host = host or cfg.host
    port = port or cfg.port
    check_bind(cfg, host)
    check_workers(settings, workers)
    import uvicorn

    configure_access_log()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",  # our startup line and access log say what uvicorn would
        "access_log": False,  # replaced by rag_pipeline.service.access (no query strings)
    }
    shown = f"[{host}]" if ":" in host else host
    print(
        f"rag serve: http://{shown}:{port} (OpenAI base URL http://{shown}:{port}/v1, model "
        f"{settings.store.collection}; collection {settings.store.collection}; auth "
        f"{'on' if auth_enabled(cfg) else 'off'}; workers {workers})",
        flush=True,
    )
    try:
        if workers == 1:
            from rag_pipeline.service.app import create_app

            uvicorn.run(create_app(settings), **options)
        else:
            # Each worker builds its own settings; hand it the ones that came as flags.
            os.environ["RAG_DATA_DIR"] = str(settings.data_dir)
            os.environ["RAG_STORE__COLLECTION"] = settings.store.collection
            uvicorn.run(FACTORY, factory=True, workers=workers, **options)
    except KeyboardInterrupt:  # uvicorn handles Ctrl-C itself; a second one lands here
        return 0
    except SystemExit as e:  # uvicorn could not start (the port is taken, ...): said already
        return e.code if isinstance(e.code, int) else 1
    return 0
