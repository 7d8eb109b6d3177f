"""A test double of the service's HTTP contract (issue 17), for developing and testing the
chat and admin pages before the real endpoints land.

It fakes the HTTP API, not our library: the routes, field names, status codes and error
bodies the pages rely on, over an in-memory list of documents, with deterministic answers
that quote the best-matching paragraph and cite it as ``[1]``. Matching is the share of the
question's character bigrams found in a paragraph; below ``MATCH`` the answer is the refusal.

>>> fake = FakeApi()
>>> with serve(fake_app(fake)) as url:                       # doctest: +SKIP
...     httpx.get(url + "/v1/documents", headers={"Authorization": "Bearer admin-key"})
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from rag_pipeline.testing.chroma import HOST, free_port

REFUSAL = "抱歉，知识库中没有找到相关信息，已为您转人工客服。"
MATCH = 0.3  # least share of the question's bigrams a paragraph must contain
TEXT_TYPES = {".txt", ".md", ".csv", ".html", ".json", ".jsonl"}
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)


def bigrams(text: str) -> set[str]:
    letters = _NOISE.sub("", text.lower())
    return {letters[i : i + 2] for i in range(len(letters) - 1)}


@dataclass
class FakeApi:
    """The state behind the fake routes; tests read ``feedback`` and may set ``hold``."""

    # The real service names its one model after the collection and refuses any other.
    model_id: str = "kb-fake"
    user_key: str | None = "user-key"
    admin_key: str | None = "admin-key"
    documents: dict[str, list[str]] = field(default_factory=dict)  # source -> paragraphs
    feedback: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # answer_id -> question
    gaps: dict[str, dict[str, Any]] = field(default_factory=dict)  # question -> gap group
    # When set, a streamed answer stops after its first piece until the event is set.
    hold: threading.Event | None = None

    def best(self, question: str) -> tuple[float, str, str] | None:
        wanted = bigrams(question)
        found: tuple[float, str, str] | None = None
        for source, paragraphs in sorted(self.documents.items()):
            for paragraph in paragraphs:
                score = len(wanted & bigrams(paragraph)) / max(1, len(wanted))
                if found is None or score > found[0]:
                    found = (score, source, paragraph)
        return found

    def answer(self, question: str) -> dict[str, Any]:
        """The native answer shape: answer, refused, sources, answer_id."""
        answer_id = uuid.uuid4().hex
        self.answers[answer_id] = question
        hit = self.best(question)
        if hit is None or hit[0] < MATCH:
            self._gap(question, hit)
            return {"answer": REFUSAL, "refused": True, "sources": [], "answer_id": answer_id}
        score, source, paragraph = hit
        title = _title(self.documents[source], source)
        cited = {
            "number": 1,
            "source": source,
            "title": title,
            "score": round(score, 3),
            "content": paragraph,
        }
        text = f"根据《{title}》：{paragraph} [1]"
        return {"answer": text, "refused": False, "sources": [cited], "answer_id": answer_id}

    def _gap(self, question: str, hit: tuple[float, str, str] | None) -> None:
        group = self.gaps.setdefault(
            question,
            {
                "count": 0,
                "kinds": ["refused"],
                "example": question,
                "questions": [question],
                "best_score": round(hit[0], 3) if hit else None,
                "sources": [hit[1]] if hit and hit[0] > 0 else [],
            },
        )
        group["count"] += 1
        group["last_seen"] = time.time()

    def ingest(self, name: str, data: bytes) -> tuple[str, int, int] | tuple[str, str]:
        """(source, added, deleted) for a text file, else (source, reason it failed)."""
        source = PurePosixPath(name).name
        if PurePosixPath(source).suffix.lower() not in TEXT_TYPES:
            return source, "unsupported file type"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return source, "not UTF-8 text"
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        old = self.documents.get(source)
        self.documents[source] = paragraphs
        if old == paragraphs:
            return source, 0, 0
        return source, len(paragraphs), len(old or [])


def _title(paragraphs: list[str], source: str) -> str:
    first = paragraphs[0].splitlines()[0] if paragraphs else ""
    return first.lstrip("# ").strip() if first.startswith("#") else PurePosixPath(source).stem


class _Denied(Exception):
    """An error answered in the route's own JSON shape (OpenAI's or FastAPI's)."""

    def __init__(self, status: int, message: str, openai_style: bool) -> None:
        self.status, self.message, self.openai_style = status, message, openai_style


def _check(fake: FakeApi, request: Request, *, admin: bool, openai_style: bool = False) -> None:
    if fake.user_key is None and fake.admin_key is None:
        return
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else None
    if key is not None and key == fake.admin_key:
        return
    if key is not None and key == fake.user_key:
        if not admin:
            return
        raise _Denied(403, "this route needs an admin key", openai_style)
    raise _Denied(401, "missing or wrong API key: send Authorization: Bearer <key>", openai_style)


def _chunk(
    chat_id: str, model: str, delta: dict[str, Any], extra: dict[str, Any] | None = None
) -> str:
    """One SSE event; the last one (with ``extra``) carries sources, refused, answer_id."""
    body = {
        "id": f"chatcmpl-{chat_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "delta": delta, "finish_reason": "stop" if extra else None},
        ],
        **(extra or {}),
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def router(fake: FakeApi) -> APIRouter:
    """The contract's routes over ``fake``."""
    api = APIRouter()

    @api.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check(fake, request, admin=False, openai_style=True)
        card = {"id": fake.model_id, "object": "model", "created": 0, "owned_by": "rag"}
        return {"object": "list", "data": [card]}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        _check(fake, request, admin=False, openai_style=True)
        body = await request.json()
        if body.get("model") != fake.model_id:
            raise _Denied(404, f"model {body.get('model')!r} not found", openai_style=True)
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        if not users:
            raise HTTPException(422, "messages must contain a user message")
        result = fake.answer(str(users[-1].get("content", "")))
        extra = {k: result[k] for k in ("sources", "refused", "answer_id")}
        if not body.get("stream"):
            return {
                "id": f"chatcmpl-{result['answer_id']}",
                "object": "chat.completion",
                "model": fake.model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result["answer"]},
                        "finish_reason": "stop",
                    }
                ],
                **extra,
            }
        text: str = result["answer"]
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]

        async def events() -> AsyncIterator[str]:
            yield _chunk(result["answer_id"], fake.model_id, {"role": "assistant", "content": ""})
            for i, piece in enumerate(pieces):
                yield _chunk(result["answer_id"], fake.model_id, {"content": piece})
                if i == 0 and fake.hold is not None:
                    await asyncio.to_thread(fake.hold.wait, 60)
                await asyncio.sleep(0)
            yield _chunk(result["answer_id"], fake.model_id, {}, extra)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/v1/ask")
    async def ask(request: Request) -> dict[str, Any]:
        _check(fake, request, admin=False)
        body = await request.json()
        result = fake.answer(str(body.get("question", "")))
        return {**result, "session_id": body.get("session_id") or uuid.uuid4().hex}

    @api.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, str]:
        _check(fake, request, admin=False)
        body = await request.json()
        if body.get("rating") not in ("up", "down"):
            raise HTTPException(422, "rating must be 'up' or 'down'")
        if body.get("answer_id") not in fake.answers:
            raise HTTPException(404, "no such answer_id")
        fake.feedback.append(body)
        return {"status": "recorded"}

    @api.post("/v1/documents")
    async def upload(
        request: Request, files: Annotated[list[UploadFile], File()]
    ) -> dict[str, Any]:
        _check(fake, request, admin=True)
        started = time.monotonic()
        report: dict[str, Any] = {
            "files_seen": len(files),
            "files_ingested": 0,
            "chunks_added": 0,
            "chunks_updated": 0,
            "chunks_unchanged": 0,
            "chunks_deleted": 0,
            "files_failed": [],
            "files_skipped": [],
            "notes": [],
        }
        for upload in files:
            done = fake.ingest(upload.filename or "upload", await upload.read())
            if len(done) == 2:
                report["files_failed"].append({"path": done[0], "reason": done[1]})
                continue
            _, added, deleted = done
            report["files_ingested"] += 1
            if added == deleted == 0:
                report["chunks_unchanged"] += len(fake.documents[done[0]])
            report["chunks_added"] += added
            report["chunks_deleted"] += deleted
        report["seconds"] = round(time.monotonic() - started, 3)
        return report

    @api.get("/v1/documents")
    async def documents(request: Request) -> dict[str, Any]:
        _check(fake, request, admin=True)
        listed = [{"source": s, "chunks": len(p)} for s, p in sorted(fake.documents.items())]
        return {"documents": listed}

    @api.delete("/v1/documents/{source:path}")
    async def delete(request: Request, source: str) -> dict[str, Any]:
        _check(fake, request, admin=True)
        if source not in fake.documents:
            raise HTTPException(404, f"no document {source!r}")
        return {"deleted": source, "chunks_deleted": len(fake.documents.pop(source))}

    @api.get("/v1/gaps")
    async def gaps(request: Request) -> dict[str, Any]:
        _check(fake, request, admin=True)
        groups = sorted(fake.gaps.values(), key=lambda g: -g["count"])
        return {"groups": groups}

    return api


def fake_app(fake: FakeApi) -> FastAPI:
    """The real pages (``rag_pipeline.service.pages``) over the fake API."""
    from rag_pipeline.service import pages

    app = FastAPI()

    @app.exception_handler(_Denied)
    async def denied(request: Request, error: _Denied) -> JSONResponse:
        body: dict[str, Any] = (
            {"error": {"message": error.message, "type": "invalid_request_error"}}
            if error.openai_style
            else {"detail": error.message}
        )
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(body, status_code=error.status, headers=headers)

    app.include_router(router(fake))
    app.include_router(pages.router)
    return app


@contextmanager
def serve(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` on uvicorn on a free 127.0.0.1 port in a thread; yields its URL."""
    port = free_port()
    # log_config=None: uvicorn's default config would stop its loggers propagating for the
    # rest of this process (other tests capture those records).
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-fake", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the fake service did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
