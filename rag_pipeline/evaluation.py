"""Retrieval evaluation: ``rag eval DATASET_DIR [...]`` on your own data or public QA sets.

A dataset folder is either
- a QA set: ``corpus.jsonl`` (``id, title, text``) + ``queries.jsonl`` (``id, question,
  answers, positive_ids``); a retrieved chunk is relevant when its passage id is positive; or
- a knowledge base like ``corpus/`` with ``questions.jsonl`` (``question, sources,
  answer_contains``) and any ``questions_*.jsonl`` beside it; a chunk is relevant when its
  file is one of the question's sources. ``corpus/questions_noisy.jsonl`` alone: pass the file.

Several folders are pooled into one index. Everything goes through the normal ingest path into
a scratch data folder (vectors cached by content hash, so a second run embeds nothing) and every
query through the same retriever code that ``ask`` uses, without the refusal threshold.

>>> data = [Path("../shared/eval/cmrc2018")]
>>> report = evaluate(data, load_settings(), ["dense", "hybrid"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import PrivateAttr

from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import EmbeddingModel
    from rag_pipeline.synonyms import Synonyms

CUTOFF = 10
RETRIEVAL_CONFIGS = ("hybrid", "dense", "bm25", "mmr", "rrf", "vanilla")
# Answer-only configurations: the default retrieval, a different answer step.
TOP_CHUNK = "top-chunk"
# The result key of the per-query details the HTML report draws from (``eval_report``).
DETAILS = "details"
RERANK_PROVIDERS = ("dashscope", "huggingface", "http")
EMBEDDING_PREFIXES = ("local", "fake", "openai", "dashscope", "huggingface")


@dataclass
class EvalQuery:
    id: str
    question: str
    relevant: set[str]  # passage ids or source paths
    answers: list[str] = field(default_factory=list)


@dataclass
class EvalSet:
    """The folders to index (under a scratch root) and the pooled queries."""

    corpus_dirs: list[Path]
    queries: list[EvalQuery]
    key: str  # the metadata key that identifies a relevant chunk: record_id or source
    # Knowledge bases only: questions it cannot answer (out_of_scope.jsonl), for refusal rates.
    out_of_scope: list[str] = field(default_factory=list)
    # One entry per dataset given: name, path, questions and out-of-scope questions used.
    datasets: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------- metrics


def dedupe(keys: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return [k for k in keys if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]


def hit_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return float(any(key in relevant for key in ranked[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], k: int = CUTOFF) -> float:
    for rank, key in enumerate(ranked[:k], start=1):
        if key in relevant:
            return 1.0 / rank
    return 0.0


def recall_at(ranked: Sequence[str], relevant: set[str], k: int = CUTOFF) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = CUTOFF) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, key in enumerate(ranked[:k], 1) if key in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def answer_recall_of(contexts: Sequence[str], queries: Sequence[EvalQuery]) -> float:
    """Share of the queries with gold answers whose answer appears in their context."""
    with_answers = [(c, q) for c, q in zip(contexts, queries, strict=True) if q.answers]
    if not with_answers:
        return 0.0
    found = sum(any(_normalise(a) in _normalise(c) for a in q.answers) for c, q in with_answers)
    return found / len(with_answers)


def by_context_size(
    chunk_texts: list[list[str]], queries: Sequence[EvalQuery]
) -> dict[str, dict[str, float]]:
    """Answer recall and mean context length (characters) when the answer sees the top k
    chunks, for k = 1..10: what choosing ``retriever.k`` trades."""
    recall, chars = {}, {}
    for k in range(1, CUTOFF + 1):
        contexts = ["\n".join(texts[:k]) for texts in chunk_texts]
        recall[str(k)] = round(answer_recall_of(contexts, queries), 4)
        chars[str(k)] = round(sum(len(c) for c in contexts) / max(len(contexts), 1), 1)
    return {"answer_recall_at_k": recall, "context_chars_at_k": chars}


def hit_by_k(rankings: Sequence[Sequence[str]], queries: Sequence[EvalQuery]) -> dict[str, float]:
    """hit@k for k = 1..10, for the curve of hit against k."""
    n = len(queries) or 1
    return {
        str(k): round(
            sum(hit_at(r, q.relevant, k) for r, q in zip(rankings, queries, strict=True)) / n, 4
        )
        for k in range(1, CUTOFF + 1)
    }


def first_relevant_rank(ranked: Sequence[str], relevant: set[str]) -> int | None:
    """1-based rank of the first relevant key in the top 10, None when there is none."""
    return next((i for i, key in enumerate(ranked[:CUTOFF], 1) if key in relevant), None)


def summarise(
    rankings: list[list[str]],
    contexts: list[str],
    latencies: list[float],
    queries: list[EvalQuery],
) -> dict[str, float]:
    """The figures of one configuration over all queries."""
    n = len(queries) or 1

    def mean(fn: Callable[[list[str], EvalQuery], float]) -> float:
        return round(sum(fn(r, q) for r, q in zip(rankings, queries, strict=True)) / n, 4)

    answer_recall = answer_recall_of(contexts, queries)
    return {
        "n_queries": len(queries),
        "hit@1": mean(lambda r, q: hit_at(r, q.relevant, 1)),
        "hit@3": mean(lambda r, q: hit_at(r, q.relevant, 3)),
        "hit@5": mean(lambda r, q: hit_at(r, q.relevant, 5)),
        "hit@10": mean(lambda r, q: hit_at(r, q.relevant, 10)),
        "mrr@10": mean(lambda r, q: reciprocal_rank(r, q.relevant)),
        "recall@10": mean(lambda r, q: recall_at(r, q.relevant)),
        "ndcg@10": mean(lambda r, q: ndcg_at(r, q.relevant)),
        "latency_ms_p50": round(percentile(latencies, 0.5) * 1000, 2),
        "latency_ms_p95": round(percentile(latencies, 0.95) * 1000, 2),
        "answer_recall": round(answer_recall, 4),
    }


# ------------------------------------------------------------------------------- answers

_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass
class AnswerRecord:
    """What the assistant said to one query, as the answer metrics need it."""

    text: str
    refused: bool
    source_numbers: list[int]  # the listed sources' numbers, in the order listed
    cited_keys: list[str]  # relevance keys (record_id / source) of the listed sources
    seconds: float | None = None  # the answer step alone (ask minus retrieval), if it ran


def contains_answer(text: str, golds: Sequence[str]) -> bool:
    """A gold string occurs in the answer, ignoring whitespace and case.

    >>> contains_answer("满 99 元包邮 [1]", ["满99元包邮"])
    True
    """
    found = _normalise(text)
    return any(_normalise(g) and _normalise(g) in found for g in golds)


def citations_valid(text: str, source_numbers: Sequence[int]) -> bool:
    """Every [n] names a listed source, the sources are numbered 1..m as listed, and when the
    answer cites, they are exactly the cited ones in order of first citation.

    >>> citations_valid("a [1] b [2] a [1]", [1, 2])
    True
    >>> citations_valid("a [2] b [1]", [1, 2])
    False
    """
    if list(source_numbers) != list(range(1, len(source_numbers) + 1)):
        return False
    first_use = dedupe(_MARKER.findall(text))
    if not first_use:
        return True
    return [int(n) for n in first_use] == list(source_numbers)


def answer_figures(records: Sequence[AnswerRecord], queries: Sequence[EvalQuery]) -> dict[str, Any]:
    """Answer-level figures over the queries (in scope by construction).

    answer_contains: share of the queries with gold answers whose answer contains one (a
    refusal contains none); answer_chars_mean / _p95: length of the answers given (refusals
    left out); citations_valid: share of answers whose citations are valid; cites_relevant:
    share of answers given where a listed source is a relevant passage or file;
    refused_in_scope: share refused.
    """
    pairs = list(zip(records, queries, strict=True))
    gold = [(r, q) for r, q in pairs if q.answers]
    given = [r for r, _ in pairs if not r.refused]
    relevant = [any(k in q.relevant for k in r.cited_keys) for r, q in pairs if not r.refused]
    lengths = [float(len(r.text)) for r in given]
    n = len(pairs) or 1
    figures: dict[str, Any] = {
        "n_queries": len(pairs),
        "answer_contains": round(
            sum(contains_answer(r.text, q.answers) for r, q in gold) / (len(gold) or 1), 4
        ),
        "answer_chars_mean": round(sum(lengths) / (len(lengths) or 1), 1),
        "answer_chars_p95": round(percentile(lengths, 0.95), 1),
        "citations_valid": round(
            sum(citations_valid(r.text, r.source_numbers) for r, _ in pairs) / n, 4
        ),
        "cites_relevant": round(sum(relevant) / (len(relevant) or 1), 4),
        "refused_in_scope": round(sum(r.refused for r, _ in pairs) / n, 4),
    }
    seconds = [r.seconds for r in given if r.seconds is not None]
    if seconds:  # the top-chunk baseline has no answer step to time
        figures["answer_ms_p50"] = round(percentile(seconds, 0.5) * 1000, 2)
        figures["answer_ms_p95"] = round(percentile(seconds, 0.95) * 1000, 2)
    return figures


# ------------------------------------------------------------------------------- datasets


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def question_files(folder: Path) -> list[Path]:
    """A knowledge base's question files: ``questions.jsonl``, then every
    ``questions_*.jsonl`` beside it (e.g. ``questions_noisy.jsonl``: typos, colloquial and
    English variants), in name order."""
    main = folder / "questions.jsonl"
    extra = sorted(p for p in folder.glob("questions_*.jsonl") if p.is_file())
    return ([main] if main.is_file() else []) + extra


def load_eval_set(dirs: Sequence[Path], limit: int | None = None) -> EvalSet:
    """Read one or several dataset folders (all of the same kind) into an EvalSet.

    A knowledge-base folder contributes all its question files (``question_files``); a single
    question file (``corpus/questions_noisy.jsonl``) stands for its folder with that file's
    questions only. Question ids are prefixed with their file's name past the first file, so
    they stay unique."""
    kinds = set()
    queries: list[EvalQuery] = []
    out_of_scope: list[str] = []
    folders: list[Path] = []
    datasets: list[dict[str, Any]] = []
    for given in dirs:
        given = Path(given)
        folder = given.parent if given.is_file() and given.suffix == ".jsonl" else given
        folders.append(folder)
        before = (len(queries), len(out_of_scope))
        files = [given] if folder != given else question_files(folder)
        if (folder / "queries.jsonl").is_file() and (folder / "corpus.jsonl").is_file():
            kinds.add("qa")
            rows = _read_jsonl(folder / "queries.jsonl")[:limit]
            queries += [
                EvalQuery(
                    r["id"], r["question"], set(r["positive_ids"]), list(r.get("answers", []))
                )
                for r in rows
            ]
        elif files:
            kinds.add("kb")
            for file in files:
                rows = _read_jsonl(file)[:limit]
                prefix = "" if file.name == "questions.jsonl" else f"{file.stem}:"
                queries += [
                    EvalQuery(
                        prefix + str(r.get("id", i)),
                        r["question"],
                        {f"{folder.name}/{s}" if len(dirs) > 1 else s for s in r["sources"]},
                        [r["answer_contains"]] if r.get("answer_contains") else [],
                    )
                    for i, r in enumerate(rows)
                ]
            if (folder / "out_of_scope.jsonl").is_file():
                out_of_scope += [r["question"] for r in _read_jsonl(folder / "out_of_scope.jsonl")]
        else:
            raise ConfigurationError(
                f"{given}: not a dataset folder; expected corpus.jsonl + queries.jsonl, "
                "or a knowledge base with questions.jsonl"
            )
        datasets.append(
            {
                "name": given.name,
                "path": str(given),  # as given: a shared report names no folder of this machine
                "questions": len(queries) - before[0],
                "out_of_scope": len(out_of_scope) - before[1],
            }
        )
    if len(kinds) > 1:
        raise ConfigurationError("cannot pool QA sets and knowledge-base folders in one run")
    key = "record_id" if kinds == {"qa"} else "source"
    # --limit cuts the pooled out-of-scope list; count what each dataset still contributes.
    remaining = len(out_of_scope[:limit])
    for entry in datasets:
        entry["out_of_scope"] = min(entry["out_of_scope"], remaining)
        remaining -= entry["out_of_scope"]
    return EvalSet([d.resolve() for d in folders], queries, key, out_of_scope[:limit], datasets)


def _stage_corpus(eval_set: EvalSet, scratch: Path) -> list[Path]:
    """The paths to ingest. QA sets are linked under one scratch root, one folder per dataset,
    so their corpus.jsonl files get distinct source names."""
    if eval_set.key == "source" and len(eval_set.corpus_dirs) == 1:
        return eval_set.corpus_dirs
    root = scratch / "corpus"
    for folder in eval_set.corpus_dirs:
        # Real folders with linked files: a linked folder would not be walked.
        target = root / folder.name
        names = (
            ["corpus.jsonl"]
            if eval_set.key == "record_id"
            else [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        )
        for name in names:
            link = target / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(folder / name)
    return [root]


# ------------------------------------------------------------------------------- configs


def _config_settings(base: Settings, name: str, scratch: Path) -> tuple[Settings, str]:
    """Settings for one --compare entry and the retrieval mode to run on them."""
    collection = "eval_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:50]
    overrides: dict[str, Any] = {
        "data_dir": scratch / "data",
        "store": {**base.store.model_dump(), "collection": collection},
        "retriever": {**base.retriever.model_dump(), "score_threshold": None, "k": CUTOFF},
        # The scratch corpus links to the dataset files, which live outside it.
        "ingest": {**base.ingest.model_dump(), "follow_symlinks": True},
        # Scratch bookkeeping stays in the scratch folder, never in a shared state database.
        "state": {"url": None, "cache": "local"},
    }
    mode = name
    if name in RETRIEVAL_CONFIGS:
        # The retrieval configs are measured without a reranker, so one can compare against it.
        overrides["rerank"] = {**base.rerank.model_dump(), "provider": None}
    if name == "vanilla":
        # The LangChain tutorial setup: RecursiveCharacterTextSplitter(1000, 200), default
        # separators, dense top-4.
        overrides["split"] = {"chunk_size": 1000, "chunk_overlap": 200, "strategy": "langchain"}
        overrides["retriever"]["k"] = 4
        mode = "dense"
    elif name in ("hybrid", "dense", "bm25", "mmr", "rrf"):
        overrides["store"]["collection"] = "eval_default"
        if name == "rrf":  # hybrid with reciprocal rank fusion instead of score fusion
            overrides["retriever"]["fusion"] = "rrf"
            mode = "hybrid"
    elif name == "rerank" or name.startswith("rerank:"):
        # The default retrieval, then a reranker: the configured one, or rerank:PROVIDER[:MODEL].
        overrides["store"]["collection"] = "eval_default"
        provider, _, model = name.removeprefix("rerank").removeprefix(":").partition(":")
        rerank = base.rerank.model_dump()
        if provider:
            if provider not in RERANK_PROVIDERS:
                raise ConfigurationError(
                    f"--compare {name!r}: the reranker provider must be one of "
                    f"{', '.join(RERANK_PROVIDERS)}, e.g. rerank:dashscope:gte-rerank-v2"
                )
            rerank.update(provider=provider, model=model or None)
        elif rerank["provider"] is None:
            raise ConfigurationError(
                "--compare rerank: no reranker is configured; set RAG_RERANK__PROVIDER or "
                "name one, e.g. rerank:dashscope or rerank:huggingface:/path/to/bge-reranker"
            )
        overrides["rerank"] = rerank
        mode = {"similarity": "dense"}.get(base.retriever.search_type, base.retriever.search_type)
    else:
        provider, _, model = name.partition(":")
        if provider not in EMBEDDING_PREFIXES:
            raise ConfigurationError(
                f"--compare {name!r}: expected one of {', '.join(RETRIEVAL_CONFIGS)}, an "
                "embedding model such as local, openai:text-embedding-3-small, "
                "dashscope:text-embedding-v4, huggingface:/path/to/model, or a reranker: "
                "rerank, rerank:dashscope[:MODEL], rerank:huggingface:/path, rerank:http[:MODEL]"
            )
        overrides["embeddings"] = {
            **base.embeddings.model_dump(),
            "provider": provider,
            "model": model or None,
        }
        mode = "hybrid" if base.retriever.search_type == "hybrid" else "dense"
    settings = _eval_settings_type(type(base))(**{**base.model_dump(), **overrides})
    # The scratch index still embeds through the configured data folder's cache, so vectors
    # of the same chunks are shared with `rag ingest` and across scratch folders.
    settings._main_cache = base.cache_dir  # type: ignore[attr-defined]
    return settings, mode


_EVAL_TYPES: dict[type, type] = {}


def _eval_settings_type(base_type: type[Settings]) -> type[Settings]:
    """``base_type`` whose ``cache_dir`` can point outside its own data folder."""
    if base_type in _EVAL_TYPES:
        return _EVAL_TYPES[base_type]
    if getattr(base_type, "_is_eval_settings", False):
        return base_type

    class EvalSettings(base_type):  # type: ignore[valid-type,misc]
        _is_eval_settings = True
        _main_cache: Path | None = PrivateAttr(default=None)

        @property
        def cache_dir(self) -> Path:
            return self._main_cache or self.data_dir / "embedding-cache"

    _EVAL_TYPES[base_type] = EvalSettings
    return EvalSettings


class _Recording(BaseRetriever):
    """Passes queries to ``inner`` and keeps the last result and its time, so the answer run
    can tell which cited chunks are relevant and how long the answer step took."""

    inner: BaseRetriever
    _last: list[Document] = PrivateAttr(default_factory=list)
    _seconds: float = PrivateAttr(default=0.0)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        started = time.perf_counter()
        docs = self.inner.invoke(query)
        self._seconds = time.perf_counter() - started
        self._last = list(docs)
        return self._last


def _answer_run(
    settings: Settings,
    retriever: BaseRetriever,
    eval_set: EvalSet,
    label: str,
    progress: Callable[[str, int, int], None] | None,
    synonyms: Synonyms | None = None,
) -> tuple[list[AnswerRecord], list[AnswerRecord]]:
    """Every query through the whole assistant (retrieval with the refusal threshold, the
    configured chat model), and the top-chunk answers from the same retrieval."""
    from rag_pipeline.assistant import Assistant
    from rag_pipeline.chain import answer_prompt, read_prompt
    from rag_pipeline.llms import build_chat_model

    recording = _Recording(inner=retriever)
    prompt = answer_prompt(
        read_prompt(settings.prompts.system_path, "system.md"),
        read_prompt(settings.prompts.question_path, "question.md"),
    )
    assistant = Assistant(
        recording,
        build_chat_model(settings),
        prompt,
        refusal=settings.prompts.refusal,
        faq_direct=settings.retriever.faq_direct_match,
        synonyms=synonyms,
    )
    records, top = [], []
    total = len(eval_set.queries)
    for done, query in enumerate(eval_set.queries, start=1):
        started = time.perf_counter()
        answer = assistant.ask(query.question)
        seconds = time.perf_counter() - started - recording._seconds
        docs = recording._last
        key_of = {d.id or d.page_content: str(d.metadata.get(eval_set.key, "")) for d in docs}
        records.append(
            AnswerRecord(
                answer.answer,
                answer.refused,
                [s.number for s in answer.sources],
                [key_of.get(s.id or s.content, "") for s in answer.sources],
                seconds,
            )
        )
        top.append(
            AnswerRecord(
                docs[0].page_content if docs else answer.answer,
                not docs,
                [1] if docs else [],
                [str(docs[0].metadata.get(eval_set.key, ""))] if docs else [],
            )
        )
        if progress is not None:
            progress(label, done, total)
    return records, top


def _run_config(
    name: str,
    base: Settings,
    eval_set: EvalSet,
    scratch: Path,
    progress: Callable[[str, int, int], None] | None,
    *,
    answers: bool = False,
    threshold_picture: bool = False,
    model: EmbeddingModel | None = None,
) -> dict[str, Any]:
    """Retrieval figures of one configuration; with ``answers``, also the answer figures of
    the whole assistant (``answers``) and of the top-chunk answer (``top_chunk_answers``);
    per-query details under ``DETAILS``, with ``threshold_picture`` also the top relevance of
    every out-of-scope question. ``model``: an embedding model already built for ``base``
    (the service's), used when this configuration keeps ``base``'s embeddings."""
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.indexing import ingest
    from rag_pipeline.retrieval import (
        KeywordRetriever,
        build_retriever,
        load_keyword_index,
        load_synonyms_for,
    )
    from rag_pipeline.stores import open_store

    settings, mode = _config_settings(base, name, scratch)
    if model is None or settings.embeddings != base.embeddings:
        # A local model loads its weights again: worth avoiding in a process that has one.
        model = build_embedding_model(settings)
    report = ingest(
        _stage_corpus(eval_set, scratch),
        settings,
        model=model,
        progress=None if progress is None else lambda _, d, t: progress(f"{name} ingest", d, t),
    )
    if report.files_failed:
        raise ConfigurationError(f"eval corpus files failed to load: {report.files_failed}")
    if not report.files_ingested:
        raise ConfigurationError(
            f"the eval corpus yielded no file to index (skipped: {report.files_skipped})"
        )
    store = open_store(settings, model, create=False)
    # Loaded once, shared by the ranking, refusal and answer runs.
    groups = load_synonyms_for(settings, store.namespace)
    keyword = load_keyword_index(settings, store, groups) if mode in ("bm25", "hybrid") else None
    if keyword is not None and mode == "bm25":
        retriever: Any = KeywordRetriever(searcher=keyword, k=settings.retriever.k)
    else:
        search_type = {"dense": "similarity", "mmr": "mmr", "hybrid": "hybrid"}[mode]
        settings.retriever.search_type = search_type  # type: ignore[assignment]
        retriever = build_retriever(settings, store, model.embeddings, keyword)
    answer_k = base.retriever.k if name != "vanilla" else 4
    rankings, latencies, chunk_texts, details = [], [], [], []
    total = len(eval_set.queries)
    for done, query in enumerate(eval_set.queries, start=1):
        started = time.perf_counter()
        top, docs = _scored_retrieve(retriever, query.question)
        latencies.append(time.perf_counter() - started)
        if top is None:
            top = _gate_relevance(retriever, query.question)  # outside the timing: a reranker
        rankings.append(dedupe([str(d.metadata.get(eval_set.key, "")) for d in docs]))
        chunk_texts.append([d.page_content for d in docs])
        details.append(_query_detail(query, rankings[-1], docs, top, eval_set.key))
        if progress is not None:
            progress(name, done, total)
    contexts = ["\n".join(texts[:answer_k]) for texts in chunk_texts]
    figures: dict[str, Any] = dict(summarise(rankings, contexts, latencies, eval_set.queries))
    figures["chunks"] = store.count()
    figures.update(by_context_size(chunk_texts, eval_set.queries))
    figures["hit_at_k"] = hit_by_k(rankings, eval_set.queries)
    out_of_scope: list[dict[str, Any]] = []
    if threshold_picture and eval_set.out_of_scope:
        for question in eval_set.out_of_scope:
            top = _gate_relevance(retriever, question)
            out_of_scope.append({"question": question, "top_relevance": _rounded(top)})
    threshold = base.retriever.score_threshold
    # As `ask` runs: the configured threshold on.
    gated = settings.model_copy(
        update={"retriever": settings.retriever.model_copy(update={"score_threshold": threshold})}
    )
    if eval_set.key == "source" and threshold is not None and mode != "bm25" and name != "vanilla":
        gated_retriever = build_retriever(gated, store, model.embeddings, keyword)
        figures.update(refusal_rates(gated_retriever, eval_set, threshold))
    if answers and any(q.answers for q in eval_set.queries):
        # Whatever the dataset kind, answers are measured with the threshold on.
        answer_retriever = build_retriever(gated, store, model.embeddings, keyword)
        records, top_chunk = _answer_run(
            gated, answer_retriever, eval_set, f"{name} answers", progress, groups
        )
        figures["answers"] = answer_figures(records, eval_set.queries)
        figures["top_chunk_answers"] = answer_figures(top_chunk, eval_set.queries)
        for detail, record in zip(details, records, strict=True):
            detail["refused"] = record.refused
    figures[DETAILS] = {
        "embeddings": model.fingerprint,
        "retrieval": mode,
        "queries": details,
        "out_of_scope": out_of_scope,
    }
    return figures


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _scored_retrieve(retriever: Any, question: str) -> tuple[float | None, list[Document]]:
    """The chunks and, where the retriever has one, the relevance its threshold is compared
    with, from one retrieval."""
    from rag_pipeline.retrieval import DenseRetriever, HybridRetriever

    if isinstance(retriever, DenseRetriever | HybridRetriever):
        return retriever.scored(question)
    return None, retriever.invoke(question)


def _gate_relevance(retriever: Any, question: str) -> float | None:
    """The relevance the threshold is compared with; behind a reranker, that of the retrieval
    it reranks (the threshold gates that one). None for BM25 alone, which has no threshold."""
    from rag_pipeline.retrieval import DenseRetriever, HybridRetriever

    inner = getattr(retriever, "base_retriever", retriever)
    if isinstance(inner, DenseRetriever | HybridRetriever):
        return inner.scored(question)[0]
    return None


def _shown_score(doc: Document) -> float | None:
    """The score a chunk was ranked by: the reranker's, the relevance, or BM25 alone."""
    for key in ("relevance_score", "score", "bm25"):
        if isinstance(doc.metadata.get(key), int | float):
            return round(float(doc.metadata[key]), 4)
    return None


def _query_detail(
    query: EvalQuery, ranked: list[str], docs: list[Document], top: float | None, key: str
) -> dict[str, Any]:
    """What the report shows of one query: where its expected source ranks, the first three
    distinct sources retrieved with the best score of each, and its top relevance."""
    shown: dict[str, float | None] = {}
    for doc in docs:
        source = str(doc.metadata.get(key, ""))
        if source not in shown and len(shown) < 3:
            shown[source] = _shown_score(doc)
    return {
        "id": query.id,
        "question": query.question,
        "expected": sorted(query.relevant),
        "rank": first_relevant_rank(ranked, query.relevant),
        "top_relevance": _rounded(top),
        "top_sources": [{"source": s, "score": v} for s, v in shown.items()],
        "refused": None,  # set by the answer run, when there is one
    }


def refusal_rates(retriever: Any, eval_set: EvalSet, threshold: float) -> dict[str, float]:
    """With the refusal threshold on, as ``ask`` runs: the share of in-scope questions that get
    no chunk (refused), and of the out-of-scope ones (out_of_scope.jsonl) that do get one."""
    refused = sum(not retriever.invoke(q.question) for q in eval_set.queries)
    figures = {
        "score_threshold": threshold,
        "refused_in_scope": round(refused / max(len(eval_set.queries), 1), 4),
    }
    if eval_set.out_of_scope:
        answered = sum(bool(retriever.invoke(q)) for q in eval_set.out_of_scope)
        figures["refused_out_of_scope"] = round(1 - answered / len(eval_set.out_of_scope), 4)
        figures["n_out_of_scope"] = len(eval_set.out_of_scope)
    return figures


def evaluate(
    dirs: Sequence[Path],
    settings: Settings,
    compare: Sequence[str] = (),
    *,
    scratch: Path | None = None,
    limit: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    model: EmbeddingModel | None = None,
) -> dict[str, Any]:
    """Figures of the default configuration at the top level, others under ``compare``.

    ``model``: the embedding model of ``settings`` when the caller holds one already (the
    service), reused by every configuration that keeps those embeddings.

    ``result[DETAILS]`` holds what the HTML report needs beyond the figures: ``run`` (date,
    package version, datasets) and, per configuration name, its per-query details."""
    started = datetime.now(UTC)
    eval_set = load_eval_set(dirs, limit)
    scratch = scratch or settings.data_dir
    default = settings.retriever.search_type
    default_name: str = "dense" if default == "similarity" else default
    if settings.rerank.provider is not None:
        default_name = "rerank"
    result: dict[str, Any] = _run_config(
        default_name,
        settings,
        eval_set,
        scratch,
        progress,
        answers=True,
        threshold_picture=True,
        model=model,
    )
    top_chunk = result.pop("top_chunk_answers", None)
    configs = {default_name: result.pop(DETAILS)}
    result["config"] = default_name
    result["compare"] = {}
    for name in compare:
        if name == default_name:
            result["compare"][name] = {k: v for k, v in result.items() if k not in ("compare",)}
        elif name == TOP_CHUNK:
            # The default retrieval, answered by quoting its first chunk verbatim.
            same = {k: v for k, v in result.items() if k not in ("compare", "answers", "config")}
            result["compare"][name] = {**same, **({"answers": top_chunk} if top_chunk else {})}
            configs[name] = configs[default_name]
        else:
            figures = _run_config(name, settings, eval_set, scratch, progress, model=model)
            configs[name] = figures.pop(DETAILS)
            result["compare"][name] = figures
    result[DETAILS] = {
        "run": {
            "started": started.isoformat(timespec="seconds"),
            "version": _package_version(),
            "key": eval_set.key,
            "datasets": eval_set.datasets,
            "n_out_of_scope": len(eval_set.out_of_scope),
        },
        "configs": configs,
    }
    return result


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rag-pipeline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def format_table(result: dict[str, Any]) -> str:
    columns = [
        "hit@1",
        "hit@3",
        "hit@5",
        "hit@10",
        "mrr@10",
        "recall@10",
        "ndcg@10",
        "answer_recall",
        "latency_ms_p50",
        "latency_ms_p95",
    ]
    rows = {result["config"] + " (default)": result, **result.get("compare", {})}
    header = f"{'config':<28}" + "".join(f"{c:>15}" for c in columns)
    lines = [f"{result['n_queries']} queries", header]
    for name, figures in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{figures[c]:>15}" for c in columns))
    for name, figures in rows.items():
        if "refused_in_scope" in figures:
            line = (
                f"{name}: at threshold {figures['score_threshold']}, "
                f"{figures['refused_in_scope']:.1%} of in-scope questions refused"
            )
            if "refused_out_of_scope" in figures:
                line += (
                    f", {figures['refused_out_of_scope']:.1%} of "
                    f"{figures['n_out_of_scope']} out-of-scope questions refused"
                )
            lines.append(line)
    answer_columns = [
        "answer_contains",
        "answer_chars_mean",
        "answer_chars_p95",
        "citations_valid",
        "cites_relevant",
        "refused_in_scope",
        "answer_ms_p50",
    ]
    answered = {name: f["answers"] for name, f in rows.items() if "answers" in f}
    if answered:
        lines.append("answers (the whole assistant, refusal threshold on)")
        lines.append(f"{'config':<28}" + "".join(f"{c:>19}" for c in answer_columns))
        for name, figures in answered.items():
            cells = [figures.get(c, "-") for c in answer_columns]
            lines.append(f"{name:<28}" + "".join(f"{c:>19}" for c in cells))
    return "\n".join(lines)
