"""``rag serve``: check the bind address and run the app with uvicorn. BEING BUILT."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int) -> int:
    raise NotImplementedError
