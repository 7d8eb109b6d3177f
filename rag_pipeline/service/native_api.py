"""The native API: /healthz, /readyz, /v1/ask (with sessions), /v1/search.

Sync ``def`` routes: FastAPI runs them in its thread pool, so retrieval and the model never
block the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.service import answers
from rag_pipeline.service.access_log import ANSWER_ID_HEADER
from rag_pipeline.service.auth import require_user
from rag_pipeline.service.http_errors import error_body
from rag_pipeline.service.state import ServiceState

router = APIRouter()


class AskRequest(BaseModel):
    """``POST /v1/ask``; unknown fields are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    question: str
    session_id: str | None = None
    k: int | None = Field(default=None, gt=0, le=100)
    filter: dict[str, Any] | None = None


class SearchRequest(BaseModel):
    """``POST /v1/search``: retrieval only, no chat model."""

    model_config = ConfigDict(extra="forbid")

    query: str
    k: int | None = Field(default=None, gt=0, le=100)
    filter: dict[str, Any] | None = None


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(service_state)]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers (even while it loads)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """200 once the store and the models are loaded; 503 before, or with the load error."""
    if state.load_error is not None:
        body: dict[str, Any] = {"status": "failed"}
        body.update(error_body(503, state.load_error, code="load_failed"))
        return JSONResponse(body, 503)
    if not state.ready.is_set():
        return JSONResponse({"status": "loading"}, 503)
    settings = state.snapshot.settings
    return JSONResponse(
        {
            "status": "ready",
            "collection": settings.store.collection,
            "model": state.model_id,
            "chat_model": settings.llm_provider(),
        }
    )


@router.post("/v1/ask", dependencies=[Depends(require_user)])
def ask(body: AskRequest, response: Response, state: State) -> dict[str, Any]:
    """The ``rag ask --json`` object plus ``session_id`` and ``answer_id``."""
    done = answers.ask_in_session(
        state, body.question, session_id=body.session_id, k=body.k, where=body.filter
    )
    response.headers[ANSWER_ID_HEADER] = done.answer_id
    return {**done.answer.to_dict(), "session_id": done.session_id, "answer_id": done.answer_id}


@router.post("/v1/search", dependencies=[Depends(require_user)])
def search(body: SearchRequest, state: State) -> dict[str, Any]:
    return {"results": answers.search(state, body.query, k=body.k, where=body.filter)}
