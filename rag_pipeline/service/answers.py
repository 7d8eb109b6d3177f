"""The work behind the answering routes, callable without HTTP: check a question and a filter,
pick the assistant for a request (the snapshot's, or one over a retriever with the request's
own ``k`` and ``filter``), answer inside a session, record every answer in the gap log.

The routes (``native_api``, ``openai_api``) only parse, call these and shape the reply; the
answering itself is ``Assistant.ask`` / ``stream``, as in the CLI.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.service.http_errors import ApiError
from rag_pipeline.service.sessions import SESSION_ID, new_session_id

if TYPE_CHECKING:
    from langchain_core.retrievers import BaseRetriever

    from rag_pipeline.assistant import Assistant
    from rag_pipeline.chain import Answer
    from rag_pipeline.service.state import ServiceState, Snapshot

log = logging.getLogger(__name__)


def new_answer_id() -> str:
    return uuid.uuid4().hex


def check_question(state: ServiceState, text: str, field: str = "question") -> str:
    """``text`` stripped; 422 naming ``field`` when empty or over ``serve.max_question_chars``."""
    question = text.strip()
    if not question:
        raise ApiError(422, f"{field}: must not be empty", param=field)
    limit = state.settings.serve.max_question_chars
    if len(question) > limit:
        raise ApiError(
            422,
            f"{field}: {len(question)} characters, at most {limit} allowed "
            "(serve.max_question_chars)",
            param=field,
        )
    return question


def check_filter(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request's metadata filter in canonical form; 422 naming ``filter`` when invalid."""
    from rag_pipeline.stores.filters import check_where

    try:
        return check_where(where) if where else None
    except ConfigurationError as e:
        message = str(e)  # check_where's messages start with "filter ..." already
        raise ApiError(
            422, message if message.startswith("filter") else f"filter: {message}", param="filter"
        ) from e


def check_session_id(session_id: str | None) -> str:
    """The client's session id (checked), or a new one."""
    if session_id is None:
        return new_session_id()
    if not SESSION_ID.match(session_id):
        raise ApiError(
            422,
            "session_id: 1 to 128 letters, digits or _ . : - (e.g. the id a first answer gave)",
            param="session_id",
        )
    return session_id


def request_retriever(snapshot: Snapshot, k: int | None, where: dict[str, Any] | None) -> Any:
    """A retriever like the snapshot's but with this request's ``k`` and ``filter`` (ANDed
    with the configured filter, so a caller can narrow the knowledge base, never widen it).
    Reuses the snapshot's keyword searcher and reranker: nothing is loaded per request."""
    from rag_pipeline.retrieval import build_retriever

    settings = snapshot.settings
    cfg = settings.retriever
    update: dict[str, Any] = {}
    if k is not None:
        update["k"] = k
    if where:
        update["filter"] = {"$and": [cfg.filter, where]} if cfg.filter else where
    reranker = _reranker_of(snapshot.assistant.retriever)
    rerank_cfg = settings.rerank
    if reranker is not None:
        # Built without a reranker (build_retriever would make a new one, maybe loading a
        # cross-encoder), then wrapped with the snapshot's, keeping this request's k.
        update["k"] = max(update.get("k", cfg.k), rerank_cfg.candidates)
        rerank_cfg = rerank_cfg.model_copy(update={"provider": None})
    adjusted = settings.model_copy(
        update={"retriever": cfg.model_copy(update=update), "rerank": rerank_cfg}
    )
    base: BaseRetriever = build_retriever(
        adjusted, snapshot.store, snapshot.model.embeddings, snapshot.keyword, snapshot.visible_ids
    )
    if reranker is None:
        return base
    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever

    top_n = k if k is not None else cfg.k
    return ContextualCompressionRetriever(
        base_compressor=reranker.model_copy(update={"top_n": top_n}), base_retriever=base
    )


def _reranker_of(retriever: Any) -> Any:
    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever

    if isinstance(retriever, ContextualCompressionRetriever):
        return retriever.base_compressor
    return None


def assistant_for(snapshot: Snapshot, k: int | None, where: dict[str, Any] | None) -> Assistant:
    """The snapshot's assistant, or the same over ``request_retriever`` when the request
    sets ``k`` or ``filter``."""
    if k is None and not where:
        return snapshot.assistant
    return snapshot.assistant.with_retriever(request_retriever(snapshot, k, where))


def record(state: ServiceState, answer: Answer, answer_id: str, session_id: str | None) -> None:
    """Hand the answer to the gap log; a failing log does not take back an answer given."""
    try:
        state.gaps.record_answer(answer, answer_id=answer_id, session_id=session_id)
    except Exception as e:
        log.warning("gap log: cannot record answer %s: %s", answer_id, type(e).__name__)


@dataclass
class SessionAnswer:
    answer: Answer
    answer_id: str
    session_id: str


def ask_in_session(
    state: ServiceState,
    question: str,
    *,
    session_id: str | None,
    k: int | None = None,
    where: dict[str, Any] | None = None,
) -> SessionAnswer:
    """Answer ``question`` with the session's earlier turns, remember the turn, record it."""
    from rag_pipeline.assistant import history_text

    question = check_question(state, question)
    where = check_filter(where)
    session = check_session_id(session_id)
    assistant = assistant_for(state.snapshot, k, where)  # the snapshot, taken once
    answer = assistant.ask(question, state.sessions.history(session))
    state.sessions.add_turn(session, question, history_text(answer))
    answer_id = new_answer_id()
    record(state, answer, answer_id, session)
    return SessionAnswer(answer, answer_id, session)


def search(
    state: ServiceState, query: str, *, k: int | None = None, where: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Retrieval only: the passages (with metadata) the answer would be built from."""
    query = check_question(state, query, "query")
    where = check_filter(where)
    snapshot = state.snapshot
    retriever = (
        snapshot.assistant.retriever
        if k is None and not where
        else request_retriever(snapshot, k, where)
    )
    results = []
    for doc in retriever.invoke(query):
        metadata = dict(doc.metadata)
        results.append(
            {
                "source": str(metadata.get("source", "?")),
                "score": float(metadata.get("score", 0.0)),
                "content": doc.page_content,
                "metadata": metadata,
            }
        )
    return results


def split_conversation(turns: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """OpenAI messages as ``(role, text)`` -> the question (the last user message) and the
    earlier user/assistant exchanges as ``chain.History`` pairs. System and tool messages are
    left out: the service's own prompt sets the rules. A user message without a reply is kept
    with an empty answer, so the condense step still sees what was asked."""
    talk = [(role, text) for role, text in turns if role in ("user", "assistant")]
    if not talk or talk[-1][0] != "user":
        raise ApiError(
            422, "messages: the last user/assistant message must be the user's", param="messages"
        )
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for role, text in talk[:-1]:
        if role == "user":
            if pending is not None:
                history.append((pending, ""))
            pending = text
        elif pending is not None:
            history.append((pending, text))
            pending = None
        # an assistant message with no question before it (a greeting) carries nothing
    if pending is not None:
        history.append((pending, ""))
    return talk[-1][1], history
