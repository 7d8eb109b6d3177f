"""The assistant: the chain's parts wired from settings, with ask / stream and chat history.

>>> from rag_pipeline.config import load_settings
>>> assistant = Assistant.from_settings(load_settings())          # doctest: +SKIP
>>> answer = assistant.ask("东西坏了能退吗")                        # doctest: +SKIP
>>> print(answer.answer, [s.source for s in answer.sources])      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableBranch, RunnableLambda

from rag_pipeline.chain import (
    Answer,
    History,
    Source,
    answer_prompt,
    build_rag_chain,
    faq_direct_answer,
    prepare_step,
    prompt_inputs,
    read_prompt,
    render_history,
    to_answer,
    to_source,
)
from rag_pipeline.errors import ProviderError
from rag_pipeline.providers import openai_error

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


class Assistant:
    """A ready-to-use question answerer over the configured collection.

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
    ) -> None:
        self.retriever = retriever
        self.model = model
        self.prompt = prompt
        self.refusal = refusal
        self.condense = condense
        self.key_variable = key_variable
        self.faq_direct = faq_direct
        self.chain = build_rag_chain(
            retriever, model, prompt, refusal=refusal, condense=condense, faq_direct=faq_direct
        )
        self.prepare = prepare_step(retriever, condense)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, store: Any = None, model: Any = None
    ) -> Assistant:
        """Open the store (must have been ingested) and build every part from ``settings``."""
        from rag_pipeline.embeddings import build_embedding_model
        from rag_pipeline.llms import ExtractiveChatModel, build_chat_model, key_variable
        from rag_pipeline.retrieval import build_retriever
        from rag_pipeline.stores import open_store

        embedding_model = model or build_embedding_model(settings)
        store = store or open_store(settings, embedding_model, create=False)
        retriever = build_retriever(settings, store, embedding_model.embeddings)
        chat = build_chat_model(settings)
        prompt = answer_prompt(
            read_prompt(settings.prompts.system_path, "system.md"),
            read_prompt(settings.prompts.question_path, "question.md"),
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
        return cls(
            retriever,
            chat,
            prompt,
            refusal=settings.prompts.refusal,
            condense=condense,
            key_variable=key_variable(settings),
            faq_direct=settings.retriever.faq_direct_match,
        )

    def _provider_errors(self, error: Exception) -> ProviderError | None:
        return openai_error(error, "the chat model API", self.key_variable)

    def search(self, query: str) -> list[Source]:
        """The chunks the retriever finds for ``query`` (after filters and the threshold),
        numbered as the answer would cite them; no chat model is called."""
        docs = self.retriever.invoke(query)
        return [to_source(n, doc) for n, doc in enumerate(docs, start=1)]

    def ask(self, question: str, history: History | None = None) -> Answer:
        """Answer one question (with optional earlier turns)."""
        try:
            return self.chain.invoke({"question": question, "history": list(history or [])})
        except Exception as e:
            wrapped = self._provider_errors(e)
            if wrapped is not None:
                raise wrapped from e
            raise

    def stream(self, question: str, history: History | None = None) -> Iterator[str | Answer]:
        """Yield the answer text piece by piece, then the final Answer."""
        inputs = {"question": question, "history": list(history or [])}
        pieces: list[str] = []
        try:
            prepared = self.prepare.invoke(inputs)
            direct = (
                faq_direct_answer(
                    prepared["standalone_question"], prepared["docs"], self.faq_direct
                )
                if self.faq_direct is not None
                else None
            )
            if direct is not None:
                pieces.append(direct)
                yield direct
            elif prepared["docs"]:
                generate = self.prompt | self.model | StrOutputParser()
                for piece in generate.stream(prompt_inputs(prepared)):
                    pieces.append(piece)
                    yield piece
            else:
                pieces.append(self.refusal)
                yield self.refusal
        except Exception as e:
            wrapped = self._provider_errors(e)
            if wrapped is not None:
                raise wrapped from e
            raise
        yield to_answer({**prepared, "answer": "".join(pieces)})
