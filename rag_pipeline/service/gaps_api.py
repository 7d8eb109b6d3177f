"""The knowledge-gap report (/v1/gaps, admin) and answer feedback (/v1/feedback, users)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.gaps import parse_since
from rag_pipeline.service.auth import require_admin, require_user

if TYPE_CHECKING:
    from rag_pipeline.gaps import GapLog

router = APIRouter(tags=["gaps"])


class Feedback(BaseModel):
    """A rating of one answer (``answer_id`` as the answer response gave it)."""

    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(min_length=1, max_length=200)
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


def _gaps(request: Request) -> GapLog:
    log: GapLog = request.app.state.service.gaps
    return log


@router.get("/v1/gaps", dependencies=[Depends(require_admin)])
def gaps(request: Request, since: str | None = None) -> dict[str, Any]:
    """The gap groups, most frequent first: the same objects as ``rag gaps --json``."""
    try:
        moment = parse_since(since)
    except ConfigurationError as e:
        raise HTTPException(422, str(e).replace("--since", "since", 1)) from e
    return {"groups": _gaps(request).report(moment)}


@router.post("/v1/feedback", dependencies=[Depends(require_user)])
def feedback(body: Feedback, request: Request) -> dict[str, str]:
    """Record a thumbs-up or thumbs-down (with an optional comment) on an answer."""
    if not _gaps(request).record_feedback(body.answer_id, body.rating, body.comment):
        raise HTTPException(404, f"no answer {body.answer_id!r} (unknown, or too old to rate)")
    return {"status": "recorded"}
