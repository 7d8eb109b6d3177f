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

from rag_pipeline.config import DEFAULT_ASSISTANT_NAME
from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.synonyms import Synonyms

History = Sequence[tuple[str, str]]  # (user question, assistant answer) pairs, oldest first

_CITATION = re.compile(r"\[(\d{1,2})\]")
_SPACED_CITATION = re.compile(r"([ \t]?)\[(\d{1,2})\]")
# Follow-ups that lean on the previous turn (documented rule used by the extractive model).
FOLLOW_UP_CHARS = 4  # "多少钱", "要多久": no topic of their own
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
    # False when no generative model wrote the text: the extractive model (configured or as
    # the fallback), an FAQ answer given directly, or the refusal.
    generated: bool = True
    # True when the chat model failed and the answer is the configured fallback (or ends with a
    # notice that it was cut short); ``degraded_reason`` says why, in one line without secrets.
    degraded: bool = False
    degraded_reason: str | None = None

    def to_dict(self, *, with_context: bool = False) -> dict[str, Any]:
        data = {
            "answer": self.answer,
            "refused": self.refused,
            "generated": self.generated,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
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


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def answer_prompt(
    system_text: str,
    question_text: str,
    *,
    assistant_name: str = DEFAULT_ASSISTANT_NAME,
    company: str | None = None,
) -> ChatPromptTemplate:
    """System instructions stay in the system message; retrieved text only in the user turn.

    The system text may name the assistant and the company it speaks for: ``{assistant_name}``,
    ``{company}`` (empty when unset) and ``{company_prefix}`` (「COMPANY」的, or empty), filled
    in here. Every other brace stays literal, so a system prompt quoting JSON needs no escaping
    and no setting's value can become a template variable.

    >>> prompt = answer_prompt("你是{company_prefix}{assistant_name}。{json}", "{question}")
    >>> prompt.format_messages(question="?")[0].content
    '你是客服助手。{json}'
    """
    values = {
        "assistant_name": assistant_name,
        "company": company or "",
        "company_prefix": f"「{company}」的" if company else "",
    }
    system = _literal(system_text)
    for name, value in values.items():
        system = system.replace("{{" + name + "}}", _literal(value))
    return ChatPromptTemplate.from_messages([("system", system), ("human", question_text)])


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


def renumber(answer: str, n_docs: int) -> tuple[str, list[int]]:
    """Citations renumbered 1..m in order of first use, and the context numbers in that order.

    A model cites the context numbers of the prompt; a reader expects [1] first, so [3] ... [1]
    becomes [1] ... [2]. Markers outside 1..n_docs cite nothing that exists and are dropped.

    >>> renumber("a [3] b [1] c [3]", 4)
    ('a [1] b [2] c [1]', [3, 1])
    >>> renumber("x [9]", 2)
    ('x', [])
    """
    order: list[int] = []

    def new_number(match: re.Match[str]) -> str:
        number = int(match.group(2))
        if not 1 <= number <= n_docs:
            return ""  # with the space before it
        if number not in order:
            order.append(number)
        return f"{match.group(1)}[{order.index(number) + 1}]"

    return _SPACED_CITATION.sub(new_number, answer), order


class StreamRenumberer:
    """``renumber`` for text that arrives in pieces: each citation is renumbered as soon as it
    is complete (a piece ending inside ``[12`` waits for the rest), so a streamed answer shows
    the numbers the final Answer and its source list use.

    >>> r = StreamRenumberer(4)
    >>> [r.feed(p) for p in ["a [", "3] b [1", "] c"]] + [r.flush()]
    ['a', ' [1] b', ' [2] c', '']
    """

    def __init__(self, n_docs: int) -> None:
        self.n_docs = n_docs
        self.order: list[int] = []
        self.held = ""

    def _renumber(self, text: str) -> str:
        def new_number(match: re.Match[str]) -> str:
            number = int(match.group(2))
            if not 1 <= number <= self.n_docs:
                return ""
            if number not in self.order:
                self.order.append(number)
            return f"{match.group(1)}[{self.order.index(number) + 1}]"

        return _SPACED_CITATION.sub(new_number, text)

    def feed(self, piece: str) -> str:
        text = self.held + piece
        start = text.rfind("[")
        # An opening bracket with no closing one yet, near the end: maybe a marker in two parts.
        if start != -1 and "]" not in text[start:] and len(text) - start <= 3:
            start -= 1 if start > 0 and text[start - 1] in " \t" else 0
            self.held, text = text[start:], text[:start]
        else:
            self.held = ""
        return self._renumber(text)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return self._renumber(text)


def cited(answer: str, docs: Sequence[Document]) -> list[Source]:
    """The sources the model's answer cites (context numbers), listed and numbered 1..m in
    order of first citation as ``renumber`` rewrites the text; every retrieved one when it
    cites none."""
    _, order = renumber(answer, len(docs))
    if not order:
        return [to_source(n, d) for n, d in enumerate(docs, start=1)]
    return [to_source(new, docs[old - 1]) for new, old in enumerate(order, start=1)]


def rule_based_condense(inputs: dict[str, Any]) -> str:
    """Make a follow-up standalone without a model: prefix the previous user question when
    the new one is very short (<= FOLLOW_UP_CHARS) or starts/ends like a follow-up (那…,
    还有…, …呢？). Short questions such as 优惠券怎么用 stand alone in customer service: a
    longer limit (it was 8) glued them to the previous topic and answered that again."""
    question: str = inputs["question"].strip()
    history: History = inputs.get("history") or []
    if not history:
        return question
    if len(question) <= FOLLOW_UP_CHARS or _FOLLOW_UP.search(question):
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


def _bigrams(text: str, synonyms: Synonyms | None = None) -> set[str]:
    # Synonym/typo groups first (rag_pipeline.synonyms): "优惠卷" and "优惠券" give one bigram set.
    if synonyms is not None:
        text = synonyms.normalise(text)
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)} or set(chars)


def faq_direct_answer(
    question: str,
    docs: Sequence[Document],
    threshold: float,
    synonyms: Synonyms | None = None,
) -> str | None:
    """The answer of the top FAQ entry when the question is a near-exact match of its question
    or one of its phrasings (character-bigram Jaccard >= ``threshold``), else None. Both sides
    are normalised with ``synonyms`` (the collection's groups, ``retrieval.load_synonyms_for``)
    when given."""
    if not docs or docs[0].metadata.get("doc_type") != "faq":
        return None
    meta = docs[0].metadata
    phrasings = [meta.get("faq_question", ""), *str(meta.get("faq_alternatives") or "").split("|")]
    asked = _bigrams(question, synonyms)
    for phrasing in filter(None, phrasings):
        known = _bigrams(phrasing, synonyms)
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
    synonyms: Synonyms | None = None,
) -> Runnable[dict[str, Any], Answer]:
    """The whole chain: input ``{"question": str, "history": [(q, a), ...]}`` -> Answer.

    ``condense`` turns a follow-up into a standalone question (default: the documented rule).
    ``faq_direct``: answer a near-exact FAQ question match from the FAQ without the model.
    """
    generate = prompt | model | StrOutputParser()

    def direct(x: dict[str, Any]) -> str | None:
        if faq_direct is None:
            return None
        return faq_direct_answer(x["standalone_question"], x["docs"], faq_direct, synonyms)

    respond = RunnableBranch(
        (lambda x: not x["docs"], RunnableLambda(lambda x: {**x, "answer": refusal})),
        (lambda x: direct(x) is not None, RunnableLambda(lambda x: {**x, "answer": direct(x)})),
        RunnablePassthrough.assign(answer=RunnableLambda(prompt_inputs) | generate),
    )
    # RunnableBranch is typed as returning object; the chain's output is the Answer.
    answered: Any = prepare_step(retriever, condense) | respond
    return answered | RunnableLambda(to_answer)


def to_answer(x: dict[str, Any]) -> Answer:
    """The Answer of a chain step's output. Optional keys: ``refused`` (default: nothing was
    retrieved), ``generated`` (default: not refused), ``degraded`` and ``degraded_reason``."""
    docs: list[Document] = x["docs"]
    refused = bool(x.get("refused", not docs))
    reason = x.get("degraded_reason")
    text = x["answer"] if refused else renumber(x["answer"], len(docs))[0]
    return Answer(
        question=x["question"],
        standalone_question=x["standalone_question"],
        answer=text,
        refused=refused,
        sources=[] if refused else cited(x["answer"], docs),
        context=[to_source(n, d) for n, d in enumerate(docs, start=1)],
        generated=bool(x.get("generated", not refused)),
        degraded=bool(x.get("degraded", reason is not None)),
        degraded_reason=reason,
    )
