"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (stream or not), with
``sources``, ``refused`` and ``answer_id`` beside the standard fields.

The last user message is the question, the earlier user/assistant turns are its history and
system messages are ignored (the service's own prompt sets the rules). Routes are sync
``def``: FastAPI runs them in its thread pool, and a streamed answer is a sync generator that
Starlette iterates in the thread pool too, so the model never blocks the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rag_pipeline.chain import Answer
from rag_pipeline.errors import RagError
from rag_pipeline.service import answers
from rag_pipeline.service.access_log import ANSWER_ID_HEADER
from rag_pipeline.service.auth import require_user
from rag_pipeline.service.http_errors import ApiError, error_body, one_line, rag_error_status
from rag_pipeline.service.openai_protocol import (
    DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ResponseMessage,
    error_event,
    sources_of,
    usage_of,
)
from rag_pipeline.service.state import ServiceState

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_user)])


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(service_state)]


@router.get("/v1/models")
def list_models(request: Request, state: State) -> ModelList:
    """One model per served collection (this process serves one)."""
    started = int(getattr(request.app.state, "started", time.time()))
    return ModelList(data=[ModelCard(id=state.model_id, created=started)])


def _check_model(state: ServiceState, model: str) -> None:
    if model != state.model_id:
        raise ApiError(
            404,
            f"model {model!r} not found: this service serves {state.model_id!r}",
            code="model_not_found",
            param="model",
        )


@router.post("/v1/chat/completions", response_model=None)
def chat_completions(body: ChatCompletionRequest, state: State) -> JSONResponse | StreamingResponse:
    _check_model(state, body.model)
    question, history = answers.split_conversation([(m.role, m.text) for m in body.messages])
    question = answers.check_question(state, question, "messages")
    turns = state.settings.serve.session_turns
    history = history[-turns:] if turns else []
    assistant = state.assistant  # the snapshot, taken once
    answer_id = answers.new_answer_id()
    headers = {ANSWER_ID_HEADER: answer_id}
    head = ChatCompletionChunk(
        id=f"chatcmpl-{answer_id}", created=int(time.time()), model=body.model, choices=[]
    )
    if not body.stream:
        answer = assistant.ask(question, history)
        answers.record(state, answer, answer_id, None)
        completion = ChatCompletion(
            id=head.id,
            created=head.created,
            model=body.model,
            choices=[Choice(message=ResponseMessage(content=answer.answer))],
            usage=usage_of(body.messages, answer.answer),
            sources=sources_of(answer),
            refused=answer.refused,
            answer_id=answer_id,
        )
        return JSONResponse(completion.model_dump(), headers=headers)
    pieces = assistant.stream(question, history)
    # The first piece before the status line: a failure before any text (the model API with
    # RAG_LLM__FALLBACK=error, the store) is then an HTTP error, not a broken stream.
    first = next(pieces, None)
    events = _events(state, head, first, pieces, answer_id)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _events(
    state: ServiceState,
    head: ChatCompletionChunk,
    first: str | Answer | None,
    rest: Iterator[str | Answer],
    answer_id: str,
) -> Iterator[str]:
    def chunk(delta: Delta, *, last: bool = False, **extra: object) -> str:
        choice = ChunkChoice(delta=delta, finish_reason="stop" if last else None)
        return head.model_copy(update={"choices": [choice], **extra}).sse()

    yield chunk(Delta(role="assistant", content=""))
    item: str | Answer | None = first
    try:
        while isinstance(item, str):
            if item:
                yield chunk(Delta(content=item))
            item = next(rest, None)
    except RagError as e:  # after the status line: the error goes in the stream
        log.warning("chat stream %s: %s: %s", answer_id, type(e).__name__, e)
        yield error_event(error_body(rag_error_status(e), one_line(str(e)), code=type(e).__name__))
        return
    except Exception:
        log.exception("chat stream %s failed", answer_id)
        yield error_event(error_body(500, "internal server error (see the server log)"))
        return
    if not isinstance(item, Answer):  # the assistant always ends with its Answer
        yield error_event(error_body(500, "the answer ended without its sources"))
        return
    answers.record(state, item, answer_id, None)
    yield chunk(
        Delta(),
        last=True,
        sources=sources_of(item),
        refused=item.refused,
        answer_id=answer_id,
    )
    yield DONE
