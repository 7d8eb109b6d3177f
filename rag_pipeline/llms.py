"""Settings -> chat model: Qwen on DashScope, any OpenAI-compatible endpoint, or the offline
extractive answerer.

>>> from rag_pipeline.config import Settings
>>> model = build_chat_model(Settings())          # no key set: the extractive model
>>> type(model).__name__
'ExtractiveChatModel'
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from rag_pipeline.errors import MissingAPIKeyError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

DASHSCOPE_COMPATIBLE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DEFAULT_CHAT_MODELS = {"dashscope": "qwen-plus", "openai": "gpt-4o-mini"}

_CONTEXT = re.compile(r"<context>\s*(.*?)\s*</context>", re.DOTALL)
_ENTRY = re.compile(r"^\[(\d+)\][^\n]*\n", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|\n+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
_NOISE_LINE = re.compile(r"^\s*(【.*】|#+\s.*|\|?[\s:|-]+\|?)\s*$")

EXTRACT_NOTE_ZH = (
    "（抽取式回答：以下为知识库原文摘录，未经生成模型改写。设置 DASHSCOPE_API_KEY 使用通义千问，"
    "或设置 RAG_LLM__PROVIDER=openai 与 OPENAI_API_KEY 使用 OpenAI 兼容模型，可获得自然语言回答。）"
)
EXTRACT_NOTE_EN = (
    "(Extractive answer: quoted from the knowledge base, not written by a generative model. "
    "Set DASHSCOPE_API_KEY, or RAG_LLM__PROVIDER=openai with OPENAI_API_KEY, "
    "for generated answers.)"
)


def features(text: str) -> set[str]:
    """Character unigrams and bigrams of CJK text plus lower-cased words: cheap overlap units."""
    text = text.lower()
    chars = _CJK.findall(text)
    grams = set(chars) | {a + b for a, b in zip(chars, chars[1:], strict=False)}
    return grams | set(_WORD.findall(text))


def parse_context(text: str) -> tuple[list[tuple[int, str]], str]:
    """Split a rendered question turn into numbered passages and the question."""
    match = _CONTEXT.search(text)
    if match is None:
        return [], text.strip()
    body = match.group(1)
    starts = list(_ENTRY.finditer(body))
    passages = []
    for i, entry in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(body)
        passages.append((int(entry.group(1)), body[entry.end() : end].strip()))
    question = text[match.end() :].strip()
    question = re.sub(r"^[^\n：:]{0,12}[：:]\s*", "", question, count=1)
    return passages, question


def _units(passage: str) -> list[str]:
    """Candidate sentences of a passage; an FAQ entry's answer is one unit."""
    faq = re.search(r"^答[：:](.*)", passage, flags=re.MULTILINE | re.DOTALL)
    if passage.startswith("问") and faq:
        return [faq.group(1).strip()]
    lines = [ln for ln in passage.split("\n") if not _NOISE_LINE.match(ln)]
    pieces = _SENTENCE_END.split("\n".join(lines))
    return [p.strip(" -|\t") for p in pieces if p and len(p.strip()) >= 4]


def extract_answer(passages: list[tuple[int, str]], question: str, max_sentences: int = 3) -> str:
    """Pick the sentences that share most with the question, keep their [n] markers."""
    english = not _CJK.search(question)
    note = EXTRACT_NOTE_EN if english else EXTRACT_NOTE_ZH
    if not passages:
        return (
            "No passages were given to quote from. " if english else "没有可引用的资料。"
        ) + note
    wanted = features(question)
    scored: list[tuple[float, int, int, str]] = []
    for rank, (number, passage) in enumerate(passages):
        for position, unit in enumerate(_units(passage)):
            overlap = len(wanted & features(unit)) / (len(wanted) or 1)
            # Earlier passages ranked higher by retrieval get a small head start.
            scored.append((overlap + 0.05 / (rank + 1), number, position, unit))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    best = [s for s in scored[:max_sentences] if s[0] > 0.06] or scored[:1]
    best.sort(key=lambda s: (s[1], s[2]))
    lines = [f"{i}. {unit} [{number}]" for i, (_, number, _, unit) in enumerate(best, 1)]
    lead = "From the knowledge base:" if english else "根据知识库资料："
    return "\n".join([lead, *lines, "", note])


class ExtractiveChatModel(BaseChatModel):
    """Offline chat model that answers with quoted sentences from the numbered context.

    It reads the last message, finds the ``<context>`` block our prompt renders (entries
    ``[n] ...``), and returns the sentences most similar to the question with their ``[n]``
    markers, labelled as an extract. Deterministic, no network.

    >>> from langchain_core.messages import HumanMessage
    >>> text = "<context>\\n[1] 来源：a.md\\n满99元包邮。\\n</context>\\n用户问题：运费？"
    >>> msg = HumanMessage(text)
    >>> "[1]" in ExtractiveChatModel().invoke([msg]).content
    True
    """

    model_name: str = Field(default="rag-extractive", alias="model")
    max_sentences: int = 3

    @property
    def _llm_type(self) -> str:
        return "rag-extractive"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"max_sentences": self.max_sentences}

    def _answer(self, messages: list[BaseMessage]) -> str:
        last = messages[-1].content if messages else ""
        text = last if isinstance(last, str) else " ".join(str(part) for part in last)
        passages, question = parse_context(text)
        return extract_answer(passages, question, self.max_sentences)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self._answer(messages))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in re.split(r"(?<=\n)", self._answer(messages)):
            if not piece:
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


def build_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model in effect (see ``Settings.llm_provider``). No network at construction."""
    provider = settings.llm_provider()
    cfg = settings.llm
    if provider == "extractive":
        return ExtractiveChatModel()
    from langchain.chat_models import init_chat_model

    base_url: str | None
    if provider == "dashscope":
        key, variable = settings.dashscope_api_key, "DASHSCOPE_API_KEY"
        base_url = cfg.base_url or DASHSCOPE_COMPATIBLE_URL
    else:
        key, variable = settings.openai_api_key, "OPENAI_API_KEY"
        base_url = cfg.base_url or settings.openai_base_url
    if key is None:
        raise MissingAPIKeyError(variable, f"the {provider} chat model")
    import openai

    # Both providers speak the OpenAI wire format (DashScope through its compatible mode).
    model = init_chat_model(
        cfg.model or DEFAULT_CHAT_MODELS[provider],
        model_provider="openai",
        base_url=base_url,
        api_key=key,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        # Separate limits: a dead host fails in connect_timeout, a slow answer gets timeout.
        timeout=openai.Timeout(cfg.timeout, connect=cfg.connect_timeout),
        max_retries=cfg.max_retries,
    )
    # With a model named and no configurable fields, init_chat_model builds the model itself.
    return cast("BaseChatModel", model)


def key_variable(settings: Settings) -> str:
    """The environment variable holding the key of the chat provider in effect."""
    return "DASHSCOPE_API_KEY" if settings.llm_provider() == "dashscope" else "OPENAI_API_KEY"
