"""The assistant: the chain's parts wired from settings, with ask / stream and chat history.

>>> from rag_pipeline.config import load_settings
>>> assistant = Assistant.from_settings(load_settings())          # doctest: +SKIP
>>> answer = assistant.ask("东西坏了能退吗")                        # doctest: +SKIP
>>> print(answer.answer, [s.source for s in answer.sources])      # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableBranch, RunnableLambda

from rag_pipeline.chain import (
    Answer,
    History,
    Source,
    StreamRenumberer,
    answer_prompt,
    build_rag_chain,
    faq_direct_answer,
    prepare_step,
    prompt_inputs,
    read_prompt,
    render_history,
    rule_based_condense,
    to_answer,
    to_source,
)
from rag_pipeline.errors import ProviderError
from rag_pipeline.llms import EXTRACT_NOTE_EN, EXTRACT_NOTE_ZH, ExtractiveChatModel
from rag_pipeline.providers import openai_error

if TYPE_CHECKING:
    from rag_pipeline.bm25 import KeywordSearcher
    from rag_pipeline.config import Settings
    from rag_pipeline.retrieval import Visibility
    from rag_pipeline.stores import VectorBackend
    from rag_pipeline.synonyms import Synonyms

Fallback = Literal["extractive", "refuse", "error"]

# Shown to the customer as the first line of a fallback answer: the quotes that follow are not
# a written answer, and a person can still help.
FALLBACK_NOTICE_ZH = (
    "（智能回答暂时不可用，以下为知识库原文摘录，仅供参考；如需帮助请联系人工客服。）"
)
FALLBACK_NOTICE_EN = (
    "(Written answers are unavailable right now; below are quotes from the knowledge base. "
    "Please contact a human agent if you need more help.)"
)
# The last line of an answer whose generation broke off: what came before may be incomplete.
INTERRUPTED_NOTICE_ZH = (
    "（回答中断：智能回答暂时不可用，以上内容可能不完整，请稍后再试或联系人工客服。）"
)
INTERRUPTED_NOTICE_EN = (
    "(The answer was cut short: written answers are unavailable right now and the text above "
    "may be incomplete. Please try again later or contact a human agent.)"
)

# The same rule as the extractive model's: a question without CJK characters is English.
_CJK = re.compile(r"[\u3400-\u9fff]")
_REASON_CHARS = 300


def is_english(question: str) -> bool:
    """Whether notes for ``question`` are given in English (it has no CJK character)."""
    return not _CJK.search(question)


def extractive_note(question: str) -> str:
    """The note that an answer is an extract and how to get generated ones, in the question's
    language (``EXTRACT_NOTE_EN`` or ``EXTRACT_NOTE_ZH``)."""
    return EXTRACT_NOTE_EN if is_english(question) else EXTRACT_NOTE_ZH


def without_note(text: str) -> str:
    """``text`` without a trailing extractive note: the CLI shows the note itself (once per
    chat), and JSON answers say ``generated: false`` instead."""
    stripped = text.rstrip()
    for note in (EXTRACT_NOTE_ZH, EXTRACT_NOTE_EN):
        if stripped.endswith(note):
            return stripped[: -len(note)].rstrip()
    return text


def history_text(answer: Answer) -> str:
    """The answer as an earlier turn of a conversation: without the fallback and cut-short
    notices, which are for the customer's eyes, not for condensing the next question."""
    text = answer.answer
    for notice in (FALLBACK_NOTICE_ZH, FALLBACK_NOTICE_EN):
        text = text.removeprefix(notice + "\n")
    for notice in (INTERRUPTED_NOTICE_ZH, INTERRUPTED_NOTICE_EN):
        text = text.removesuffix(notice).rstrip("\n")
    return text


def _lines(text: str) -> list[str]:
    """``text`` in line-sized pieces (newlines kept), for streaming a text that is ready."""
    return [piece for piece in re.split(r"(?<=\n)", text) if piece] or [text]


def _one_line(error: ProviderError) -> str:
    # ProviderError messages carry no secrets (see providers.openai_error); keep them one line.
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


class Assistant:
    """A ready-to-use question answerer over the configured collection.

    ``fallback`` decides what happens when the chat model fails after its retries (what
    ``providers.openai_error`` maps to a ProviderError): ``"extractive"`` answers with the
    extractive model on the same retrieved context, after a one-line notice; ``"refuse"`` gives
    the refusal (hand-over) message; ``"error"`` raises the ProviderError. Either of the first
    two marks the Answer ``degraded`` with a one-line ``degraded_reason``.
    ``from_settings`` takes it from ``RAG_LLM__FALLBACK`` (default ``extractive``); built by
    hand the default is ``"error"``.

    >>> assistant = Assistant.from_settings(settings)                  # doctest: +SKIP
    >>> for piece in assistant.stream("运费怎么算"):                     # doctest: +SKIP
    ...     print(piece if isinstance(piece, str) else piece.sources)
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        model: BaseChatModel,
        prompt: ChatPromptTemplate,
        *,
        refusal: str,
        condense: Runnable[dict[str, Any], str] | None = None,
        key_variable: str = "OPENAI_API_KEY",
        faq_direct: float | None = None,
        fallback: Fallback = "error",
        synonyms: Synonyms | None = None,
    ) -> None:
        self.retriever = retriever
        self.model = model
        self.prompt = prompt
        self.refusal = refusal
        self.condense = condense
        self.key_variable = key_variable
        self.faq_direct = faq_direct
        self.fallback = fallback
        self.synonyms = synonyms  # the collection's groups, for FAQ direct answers
        self.chain = build_rag_chain(
            retriever,
            model,
            prompt,
            refusal=refusal,
            condense=condense,
            faq_direct=faq_direct,
            synonyms=synonyms,
        )
        self.prepare = prepare_step(retriever, condense)
        # Retrieval for a standalone question decided beforehand (so that a failing condense
        # model can be replaced by the documented rule).
        self._retrieve = prepare_step(retriever, RunnableLambda(lambda x: x["standalone_question"]))
        self.generate = prompt | model | StrOutputParser()
        self.extract = prompt | ExtractiveChatModel() | StrOutputParser()
        self._owned_store: VectorBackend | None = None  # the store ``close`` releases

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: Any = None,
        model: Any = None,
        synonyms: Synonyms | None = None,
        keyword: KeywordSearcher | None = None,
        visible_ids: Visibility | None = None,
    ) -> Assistant:
        """Open the store (must have been ingested) and build every part from ``settings``.

        ``synonyms`` / ``keyword`` / ``visible_ids``: the collection's groups, keyword searcher
        and (dense-only retrieval) stored chunk ids when the caller has loaded them already (the
        service keeps them to build per-request retrievers)."""
        from rag_pipeline.embeddings import build_embedding_model
        from rag_pipeline.llms import build_chat_model, key_variable
        from rag_pipeline.retrieval import (
            build_retriever,
            load_keyword_index,
            load_synonyms_for,
            snapshot_ids,
        )
        from rag_pipeline.stores import open_store

        embedding_model = model or build_embedding_model(settings)
        owned = store is None
        store = store or open_store(settings, embedding_model, create=False)
        # The collection's synonym groups, read once: the keyword side and FAQ answers share them.
        if synonyms is None:
            synonyms = load_synonyms_for(settings, store.namespace)
        hybrid = settings.retriever.search_type == "hybrid"
        if keyword is None and hybrid:
            keyword = load_keyword_index(settings, store, synonyms)
        # This assistant answers from the chunks stored now, not half of a later upload.
        if visible_ids is None and not hybrid:
            visible_ids = snapshot_ids(settings, store)
        retriever = build_retriever(
            settings, store, embedding_model.embeddings, keyword, visible_ids
        )
        chat = build_chat_model(settings)
        prompt = answer_prompt(
            read_prompt(settings.prompts.system_path, "system.md"),
            read_prompt(settings.prompts.question_path, "question.md"),
            assistant_name=settings.prompts.assistant_name,
            company=settings.prompts.company,
        )
        condense = None
        if not isinstance(chat, ExtractiveChatModel):
            condense_prompt = PromptTemplate.from_template(
                read_prompt(settings.prompts.condense_path, "condense.md")
            )
            llm_condense = (
                (lambda x: {"history": render_history(x["history"]), "question": x["question"]})
                | condense_prompt
                | chat
                | StrOutputParser()
                | (lambda s: s.strip() or "")
            )
            condense = RunnableBranch(
                (lambda x: bool(x.get("history")), llm_condense),
                RunnableLambda(lambda x: x["question"]),
            )
        assistant = cls(
            retriever,
            chat,
            prompt,
            refusal=settings.prompts.refusal,
            condense=condense,
            key_variable=key_variable(settings),
            faq_direct=settings.retriever.faq_direct_match,
            fallback=settings.llm.fallback,
            synonyms=synonyms,
        )
        if owned:
            assistant._owned_store = store
        return assistant

    def close(self) -> None:
        """Release the store's client when ``from_settings`` opened it (a store passed in
        belongs to the caller). A bot keeps one assistant for its life and need not call it; a
        process that opens assistants over many data folders should, or use ``with``."""
        if self._owned_store is not None:
            self._owned_store.close()
            self._owned_store = None

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_retriever(self, retriever: BaseRetriever) -> Assistant:
        """The same assistant over another retriever (the service's per-request ``k`` and
        ``filter``); every other part is shared, nothing is loaded again."""
        return Assistant(
            retriever,
            self.model,
            self.prompt,
            refusal=self.refusal,
            condense=self.condense,
            key_variable=self.key_variable,
            faq_direct=self.faq_direct,
            fallback=self.fallback,
            synonyms=self.synonyms,
        )

    def _provider_errors(self, error: Exception) -> ProviderError | None:
        if isinstance(error, ProviderError):
            return error
        return openai_error(error, "the chat model API", self.key_variable)

    def _chat_failed(self, error: Exception) -> str:
        """Called in an ``except`` around a chat model call: the one-line reason to degrade
        with, or the error raised (a bug as itself, a provider failure as a ProviderError when
        the fallback is ``error``)."""
        wrapped = self._provider_errors(error)
        if wrapped is None:
            raise error
        if self.fallback == "error":
            raise wrapped from error
        return _one_line(wrapped)

    @property
    def extractive(self) -> bool:
        """Whether the configured chat model is the extractive one (no generated answers)."""
        return isinstance(self.model, ExtractiveChatModel)

    def search(self, query: str) -> list[Source]:
        """The chunks the retriever finds for ``query`` (after filters and the threshold),
        numbered as the answer would cite them; no chat model is called."""
        docs = self.retriever.invoke(query)
        return [to_source(n, doc) for n, doc in enumerate(docs, start=1)]

    def _prepare(self, question: str, history: History | None) -> tuple[dict[str, Any], str | None]:
        """Standalone question, retrieved docs and numbered context, plus the reason to
        degrade if the condense model failed (the documented rule is used instead then)."""
        inputs: dict[str, Any] = {"question": question, "history": list(history or [])}
        reason = None
        try:
            standalone = (
                self.condense.invoke(inputs)
                if self.condense is not None
                else rule_based_condense(inputs)
            )
        except Exception as e:
            reason = self._chat_failed(e)
            standalone = rule_based_condense(inputs)
        try:
            prepared = self._retrieve.invoke({**inputs, "standalone_question": standalone})
        except Exception as e:
            # Retrieval is no chat model call: nothing to fall back to.
            wrapped = openai_error(e, "the chat model API", self.key_variable)
            if wrapped is not None:
                raise wrapped from e
            raise
        return prepared, reason

    def _without_model(self, prepared: dict[str, Any], reason: str | None) -> Answer | None:
        """The refusal (nothing retrieved) or a direct FAQ answer, which need no chat model."""
        if not prepared["docs"]:
            text: str | None = self.refusal
        elif self.faq_direct is not None:
            text = faq_direct_answer(
                prepared["standalone_question"], prepared["docs"], self.faq_direct, self.synonyms
            )
        else:
            text = None
        if text is None:
            return None
        return to_answer(
            {**prepared, "answer": text, "generated": False, "degraded_reason": reason}
        )

    def _generated(self, prepared: dict[str, Any], text: str) -> Answer:
        if self.extractive:
            return to_answer({**prepared, "answer": without_note(text), "generated": False})
        return to_answer({**prepared, "answer": text, "generated": True})

    def _fallback(self, prepared: dict[str, Any], reason: str) -> Answer:
        """The answer of the configured fallback after the chat model failed with ``reason``."""
        if self.fallback == "refuse":
            return to_answer(
                {
                    **prepared,
                    "answer": self.refusal,
                    "refused": True,
                    "generated": False,
                    "degraded_reason": reason,
                }
            )
        english = is_english(prepared["standalone_question"])
        notice = FALLBACK_NOTICE_EN if english else FALLBACK_NOTICE_ZH
        quoted = without_note(self.extract.invoke(prompt_inputs(prepared)))
        return to_answer(
            {
                **prepared,
                "answer": f"{notice}\n{quoted}",
                "generated": False,
                "degraded_reason": reason,
            }
        )

    def ask(self, question: str, history: History | None = None) -> Answer:
        """Answer one question (with optional earlier turns).

        When the chat model fails after its retries the ``fallback`` answers (see the class);
        with ``"error"`` the failure is raised as a ProviderError.
        """
        prepared, reason = self._prepare(question, history)
        ready = self._without_model(prepared, reason)
        if ready is not None:
            return ready
        if reason is None:  # a condense model that failed would fail again: do not wait twice
            try:
                return self._generated(prepared, self.generate.invoke(prompt_inputs(prepared)))
            except Exception as e:
                reason = self._chat_failed(e)
        return self._fallback(prepared, reason)

    def stream(self, question: str, history: History | None = None) -> Iterator[str | Answer]:
        """Yield the answer text piece by piece, then the final Answer.

        If the chat model fails before any text was yielded, the ``fallback`` answers as in
        ``ask`` (its text streamed line by line). If it fails mid-stream, the text so far
        stays and the stream ends with a one-line notice that the answer was cut short (the
        Answer is ``degraded``); with ``fallback="error"`` the ProviderError is raised instead.
        """
        prepared, reason = self._prepare(question, history)
        answer = self._without_model(prepared, reason)
        if answer is None and reason is not None:
            answer = self._fallback(prepared, reason)
        elif answer is None and self.extractive:
            # Offline and instant: the whole text at once, so the note can be left out.
            answer = self._generated(prepared, self.generate.invoke(prompt_inputs(prepared)))
        elif answer is None:
            pieces: list[str] = []
            shown = StreamRenumberer(len(prepared["docs"]))  # the numbers the Answer will use
            try:
                for piece in self.generate.stream(prompt_inputs(prepared)):
                    pieces.append(piece)
                    if text := shown.feed(piece):
                        yield text
            except Exception as e:
                failure = self._chat_failed(e)
                if pieces:
                    if rest := shown.flush():
                        yield rest
                    yield from self._interrupted(prepared, "".join(pieces), failure)
                    return
                answer = self._fallback(prepared, failure)
            else:
                if rest := shown.flush():
                    yield rest
                yield to_answer({**prepared, "answer": "".join(pieces), "generated": True})
                return
        yield from _lines(answer.answer)
        yield answer

    def _interrupted(
        self, prepared: dict[str, Any], text: str, reason: str
    ) -> Iterator[str | Answer]:
        english = is_english(prepared["standalone_question"])
        notice = INTERRUPTED_NOTICE_EN if english else INTERRUPTED_NOTICE_ZH
        tail = ("" if text.endswith("\n") else "\n") + notice
        yield tail
        yield to_answer(
            {**prepared, "answer": text + tail, "generated": True, "degraded_reason": reason}
        )
