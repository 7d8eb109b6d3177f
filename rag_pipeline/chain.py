"""Retriever + prompt + chat model -> an answer with numbered sources, in plain LCEL.

    condense follow-up -> retrieve -> number the context -> prompt -> model -> parse citations

When no chunk passes the relevance threshold the chain returns the configured refusal without
calling the model. ``rag_pipeline.assistant.Assistant`` puts the parts together from settings
for the CLI and for users' own bots.

>>> chain = build_rag_chain(retriever, model, prompt, refusal="抱歉")     # doctest: +SKIP
>>> chain.invoke({"question": "运费怎么算", "history": []}).answer       # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableBranch, RunnableLambda, RunnablePassthrough

from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    pass

History = Sequence[tuple[str, str]]  # (user question, assistant answer) pairs, oldest first

_CITATION = re.compile(r"\[(\d{1,2})\]")
# Follow-ups that lean on the previous turn (documented rule used by the extractive model).
_FOLLOW_UP = re.compile(
    r"^(那|那么|还有|另外|如果|要是|它|这个|那个|and |what about|how about|also)|呢[？?]?$",
    re.IGNORECASE,
)


@dataclass
class Source:
    """A retrieved chunk as shown to the user: its number in the context, where it comes from."""

    number: int
    source: str
    score: float
    content: str
    title: str | None = None
    headers: str | None = None
    page: int | None = None
    id: str | None = None
    rerank_score: float | None = None  # only when a reranker is configured


@dataclass
class Answer:
    """The chain's result; ``to_dict`` is the shape of ``ask --json``."""

    question: str
    standalone_question: str
    answer: str
    refused: bool
    sources: list[Source] = field(default_factory=list)  # cited ones (all, if none cited)
    context: list[Source] = field(default_factory=list)  # everything retrieved, numbered

    def to_dict(self, *, with_context: bool = False) -> dict[str, Any]:
        data = {
            "answer": self.answer,
            "refused": self.refused,
            "sources": [asdict(s) for s in self.sources],
            "question": self.question,
            "standalone_question": self.standalone_question,
        }
        if with_context:
            data["context"] = [asdict(s) for s in self.context]
        return data


def read_prompt(path: Path | None, default_name: str) -> str:
    """The prompt file ``path``, or the packaged prompt ``default_name`` (``prompts/`` in the
    repository, ``rag_pipeline.prompts`` in an install).

    >>> "{context}" in read_prompt(None, "question.md")
    True
    """
    if path is None:
        from importlib.resources import files

        return files("rag_pipeline.prompts").joinpath(default_name).read_text(encoding="utf-8")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigurationError(f"cannot read prompt file {path}: {e.strerror or e}") from e


def answer_prompt(system_text: str, question_text: str) -> ChatPromptTemplate:
    """System instructions stay in the system message; retrieved text only in the user turn."""
    return ChatPromptTemplate.from_messages(
        [
            ("system", system_text.replace("{", "{{").replace("}", "}}")),
            ("human", question_text),
        ]
    )


def to_source(number: int, doc: Document) -> Source:
    meta = doc.metadata
    return Source(
        number=number,
        source=str(meta.get("source", "?")),
        score=float(meta.get("score", 0.0)),
        content=doc.page_content,
        title=meta.get("title"),
        headers=meta.get("headers") or None,
        page=meta.get("page"),
        id=doc.id,
        rerank_score=meta.get("rerank_score"),
    )


def format_context(docs: Sequence[Document]) -> str:
    """Numbered passages for the prompt; the delimiter cannot be closed from inside a doc."""
    blocks = []
    for number, doc in enumerate(docs, start=1):
        where = doc.metadata.get("source", "?")
        heading = doc.metadata.get("headers") or doc.metadata.get("title") or ""
        label = f"[{number}] 来源：{where}" + (f"｜{heading}" if heading else "")
        text = doc.page_content.replace("<context>", "&lt;context&gt;").replace(
            "</context>", "&lt;/context&gt;"
        )
        blocks.append(f"{label}\n{text}")
    return "\n\n".join(blocks)


def cited(answer: str, docs: Sequence[Document]) -> list[Source]:
    """The sources the answer cites as [n]; every retrieved one when it cites none."""
    numbers = sorted({int(n) for n in _CITATION.findall(answer) if 1 <= int(n) <= len(docs)})
    if not numbers:
        numbers = list(range(1, len(docs) + 1))
    return [to_source(n, docs[n - 1]) for n in numbers]


def rule_based_condense(inputs: dict[str, Any]) -> str:
    """Make a follow-up standalone without a model: prefix the previous user question when
    the new one is short (<= 8 chars) or starts/ends like a follow-up (那…, 还有…, …呢？)."""
    question: str = inputs["question"].strip()
    history: History = inputs.get("history") or []
    if not history:
        return question
    if len(question) <= 8 or _FOLLOW_UP.search(question):
        return f"{history[-1][0].strip()} {question}"
    return question


def render_history(history: History) -> str:
    return "\n".join(f"用户：{q}\n客服：{a}" for q, a in history[-6:])


def prepare_step(
    retriever: BaseRetriever, condense: Runnable[dict[str, Any], str] | None = None
) -> Runnable[dict[str, Any], dict[str, Any]]:
    """Adds ``standalone_question``, the retrieved ``docs`` and the numbered ``context``."""
    return (
        RunnablePassthrough.assign(
            standalone_question=condense or RunnableLambda(rule_based_condense)
        )
        | RunnablePassthrough.assign(docs=itemgetter("standalone_question") | retriever)
        | RunnablePassthrough.assign(context=lambda x: format_context(x["docs"]))
    )


def prompt_inputs(x: dict[str, Any]) -> dict[str, Any]:
    return {"context": x["context"], "question": x["standalone_question"]}


def _bigrams(text: str) -> set[str]:
    # Synonym/typo groups first (rag_pipeline.synonyms): "优惠卷" and "优惠券" give one bigram set.
    from rag_pipeline.synonyms import active

    chars = [c for c in active().normalise(text) if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)} or set(chars)


def faq_direct_answer(question: str, docs: Sequence[Document], threshold: float) -> str | None:
    """The answer of the top FAQ entry when the question is a near-exact match of its question
    or one of its phrasings (character-bigram Jaccard >= ``threshold``), else None. Both sides
    are normalised with the synonym groups in force (``rag_pipeline.synonyms.active``)."""
    if not docs or docs[0].metadata.get("doc_type") != "faq":
        return None
    meta = docs[0].metadata
    phrasings = [meta.get("faq_question", ""), *str(meta.get("faq_alternatives") or "").split("|")]
    asked = _bigrams(question)
    for phrasing in filter(None, phrasings):
        known = _bigrams(phrasing)
        if asked and known and len(asked & known) / len(asked | known) >= threshold:
            return f"{meta['faq_answer']} [1]"
    return None


def build_rag_chain(
    retriever: BaseRetriever,
    model: BaseChatModel,
    prompt: ChatPromptTemplate,
    *,
    refusal: str,
    condense: Runnable[dict[str, Any], str] | None = None,
    faq_direct: float | None = None,
) -> Runnable[dict[str, Any], Answer]:
    """The whole chain: input ``{"question": str, "history": [(q, a), ...]}`` -> Answer.

    ``condense`` turns a follow-up into a standalone question (default: the documented rule).
    ``faq_direct``: answer a near-exact FAQ question match from the FAQ without the model.
    """
    generate = prompt | model | StrOutputParser()

    def direct(x: dict[str, Any]) -> str | None:
        if faq_direct is None:
            return None
        return faq_direct_answer(x["standalone_question"], x["docs"], faq_direct)

    respond = RunnableBranch(
        (lambda x: not x["docs"], RunnableLambda(lambda x: {**x, "answer": refusal})),
        (lambda x: direct(x) is not None, RunnableLambda(lambda x: {**x, "answer": direct(x)})),
        RunnablePassthrough.assign(answer=RunnableLambda(prompt_inputs) | generate),
    )
    # RunnableBranch is typed as returning object; the chain's output is the Answer.
    answered: Any = prepare_step(retriever, condense) | respond
    return answered | RunnableLambda(to_answer)


def to_answer(x: dict[str, Any]) -> Answer:
    docs: list[Document] = x["docs"]
    refused = not docs
    return Answer(
        question=x["question"],
        standalone_question=x["standalone_question"],
        answer=x["answer"],
        refused=refused,
        sources=[] if refused else cited(x["answer"], docs),
        context=[to_source(n, d) for n, d in enumerate(docs, start=1)],
    )
