"""The OpenAI chat wire format as typed models, declared once; the routes only fill them.

Requests accept OpenAI's fields and ignore the ones that do not apply here (``user``,
``stream_options``, ``top_p``, ...), so stock clients (the openai SDK, Open WebUI, ChatBox)
work unchanged. Responses are standard ``chat.completion`` / ``chat.completion.chunk``
objects with three extra top-level fields: ``sources`` (the cited passages, numbered as the
``[n]`` markers of the text), ``refused`` and ``answer_id`` (for ``/v1/feedback``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_pipeline.chain import Answer


class ContentPart(BaseModel):
    """One part of a message whose content is a list (only text parts carry text here)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``temperature`` and ``max_tokens`` are checked and then
    left to the server's settings (RAG_LLM__*): the service, not each caller, decides how its
    customer-service model writes."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported (one answer per question)")
        return value


class SourceOut(BaseModel):
    """A cited passage: ``number`` is the ``[n]`` of the answer text."""

    number: int
    source: str
    title: str | None = None
    score: float
    content: str


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    """Character counts, not tokens: an estimate (about one token per Chinese character)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[SourceOut]
    refused: bool
    answer_id: str


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop"] | None = None


class ChatCompletionChunk(BaseModel):
    """One streamed event; only the last one (``finish_reason: "stop"``) has the extras."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    sources: list[SourceOut] | None = None
    refused: bool | None = None
    answer_id: str | None = None

    def sse(self) -> str:
        data = self.model_dump(exclude_none=True)
        # OpenAI always sends finish_reason (null until the end) and some clients read it.
        for choice, model in zip(data["choices"], self.choices, strict=True):
            choice["finish_reason"] = model.finish_reason
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rag_pipeline"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def sources_of(answer: Answer) -> list[SourceOut]:
    return [
        SourceOut(number=s.number, source=s.source, title=s.title, score=s.score, content=s.content)
        for s in answer.sources
    ]


def usage_of(messages: list[ChatMessage], answer: str) -> Usage:
    prompt = sum(len(m.text) for m in messages)
    return Usage(
        prompt_tokens=prompt, completion_tokens=len(answer), total_tokens=prompt + len(answer)
    )


def error_event(body: dict[str, Any]) -> str:
    """An error after the stream started (the status line is sent already): the openai
    client raises APIError on it."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
