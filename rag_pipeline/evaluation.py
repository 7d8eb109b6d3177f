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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

CUTOFF = 10
RETRIEVAL_CONFIGS = ("hybrid", "dense", "bm25", "mmr", "rrf", "vanilla")
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
    for given in dirs:
        given = Path(given)
        folder = given.parent if given.is_file() and given.suffix == ".jsonl" else given
        folders.append(folder)
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
    if len(kinds) > 1:
        raise ConfigurationError("cannot pool QA sets and knowledge-base folders in one run")
    key = "record_id" if kinds == {"qa"} else "source"
    return EvalSet([d.resolve() for d in folders], queries, key, out_of_scope[:limit])


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
    return type(base)(**{**base.model_dump(), **overrides}), mode


def _run_config(
    name: str,
    base: Settings,
    eval_set: EvalSet,
    scratch: Path,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, float]:
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.indexing import ingest
    from rag_pipeline.retrieval import KeywordRetriever, build_retriever, load_keyword_index
    from rag_pipeline.stores import open_store

    settings, mode = _config_settings(base, name, scratch)
    model = build_embedding_model(settings)
    report = ingest(_stage_corpus(eval_set, scratch), settings, model=model)
    if report.files_failed:
        raise ConfigurationError(f"eval corpus files failed to load: {report.files_failed}")
    store = open_store(settings, model, create=False)
    # Loaded once, shared by the ranking run and the refusal run.
    keyword = load_keyword_index(settings, store) if mode in ("bm25", "hybrid") else None
    if keyword is not None and mode == "bm25":
        retriever: Any = KeywordRetriever(searcher=keyword, k=settings.retriever.k)
    else:
        search_type = {"dense": "similarity", "mmr": "mmr", "hybrid": "hybrid"}[mode]
        settings.retriever.search_type = search_type  # type: ignore[assignment]
        retriever = build_retriever(settings, store, model.embeddings, keyword)
    answer_k = base.retriever.k if name != "vanilla" else 4
    rankings, latencies, chunk_texts = [], [], []
    total = len(eval_set.queries)
    for done, query in enumerate(eval_set.queries, start=1):
        started = time.perf_counter()
        docs: list[Document] = retriever.invoke(query.question)
        latencies.append(time.perf_counter() - started)
        rankings.append(dedupe([str(d.metadata.get(eval_set.key, "")) for d in docs]))
        chunk_texts.append([d.page_content for d in docs])
        if progress is not None:
            progress(name, done, total)
    contexts = ["\n".join(texts[:answer_k]) for texts in chunk_texts]
    figures: dict[str, Any] = dict(summarise(rankings, contexts, latencies, eval_set.queries))
    figures["chunks"] = store.count()
    figures.update(by_context_size(chunk_texts, eval_set.queries))
    threshold = base.retriever.score_threshold
    if eval_set.key == "source" and threshold is not None and mode != "bm25" and name != "vanilla":
        gated = settings.model_copy(
            update={
                "retriever": settings.retriever.model_copy(update={"score_threshold": threshold})
            }
        )
        gated_retriever = build_retriever(gated, store, model.embeddings, keyword)
        figures.update(refusal_rates(gated_retriever, eval_set, threshold))
    return figures


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
) -> dict[str, Any]:
    """Figures of the default configuration at the top level, others under ``compare``."""
    eval_set = load_eval_set(dirs, limit)
    scratch = scratch or settings.data_dir
    default = settings.retriever.search_type
    default_name: str = "dense" if default == "similarity" else default
    if settings.rerank.provider is not None:
        default_name = "rerank"
    result: dict[str, Any] = _run_config(default_name, settings, eval_set, scratch, progress)
    result["config"] = default_name
    result["compare"] = {}
    for name in compare:
        if name == default_name:
            result["compare"][name] = {k: v for k, v in result.items() if k not in ("compare",)}
            continue
        result["compare"][name] = _run_config(name, settings, eval_set, scratch, progress)
    return result


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
    return "\n".join(lines)
