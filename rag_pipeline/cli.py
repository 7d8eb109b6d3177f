"""The ``rag`` command: ingest, ask, chat, eval, info, config, collections, migrate, serve,
gaps.

Exit codes: 0 success; 1 a remote API failed; 2 usage or configuration error (including "nothing
ingested yet" and an embedding-model mismatch); 3 ingest finished but some files failed; 4 a
vector store server is unreachable or a store file is locked by another process; 5 another
writer holds the collection's lock; 6 ``rag verify`` found problems.
Global options (``--data-dir``, ``--collection``, ``--json``, ``--debug``) go before or after
the command name.
Library errors become one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline.errors import (
    CollectionLockedError,
    ConfigurationError,
    EmbeddingMismatchError,
    EmptyIndexError,
    RagError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from rag_pipeline.chain import Answer
    from rag_pipeline.config import Settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_STORE, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INCONSISTENT = 6  # rag verify found problems


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after the subcommand name.

    On the top-level parser they have real defaults; on subcommands they default to
    SUPPRESS, so a value given after the subcommand wins and an absent one keeps the
    top-level value (``rag --debug ask Q`` and ``rag ask Q --debug`` are the same).
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default(None),
        help="data folder (default .rag; RAG_DATA_DIR)",
    )
    parser.add_argument(
        "--collection", default=default(None), help="collection name (RAG_STORE__COLLECTION)"
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the result as JSON (commands that have a report or an answer)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    _global_options(parser, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag", description="Retrieval-augmented answers over your own documents."
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="load, split, embed and store files (incremental)")
    p.add_argument("paths", nargs="*", type=Path, help="files or folders (default: corpus/)")
    p.add_argument("--rebuild", action="store_true", help="drop and re-create the collection")
    p.add_argument(
        "--no-prune",
        action="store_true",
        help="keep chunks of files that were deleted from an ingested folder",
    )
    _common(p)

    p = sub.add_parser("ask", help="answer one question with sources")
    p.add_argument("question", help="the question, e.g. 东西坏了能退吗")
    p.add_argument("--show-context", action="store_true", help="also print every retrieved chunk")
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the answer piece by piece as it is written (default: when stdout is a "
        "terminal; never with --json)",
    )
    _retrieval_options(p)
    _common(p)

    p = sub.add_parser("search", help="the chunks retrieval finds for a query (no answer)")
    p.add_argument("query", help="the question or keywords to search for")
    _retrieval_options(p)
    _common(p)

    p = sub.add_parser("chat", help="interactive conversation (/sources, /reset, /exit)")
    _retrieval_options(p, threshold=False)
    _common(p)

    p = sub.add_parser(
        "eval", help="measure retrieval and answer quality on QA sets or your own corpus"
    )
    p.add_argument("datasets", nargs="+", type=Path, help="dataset folders, pooled into one index")
    p.add_argument(
        "--compare",
        default="",
        help="more configurations, comma-separated: dense,bm25,hybrid,mmr,vanilla, top-chunk "
        "(the answer is the first retrieved chunk) or embedding models such as local, "
        "openai:text-embedding-3-small, huggingface:/path/to/model",
    )
    p.add_argument("--limit", type=int, help="at most N queries per dataset")
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH.html",
        help="also write a self-contained HTML report: the threshold picture, hit@k and answer "
        "recall against k, answer figures, the worst questions, the run's settings",
    )
    _common(p)

    p = sub.add_parser(
        "similarity", help="cosine similarity and L2 distance of texts to a query, ranked"
    )
    p.add_argument("query", help="the text the others are compared with")
    p.add_argument("texts", nargs="+", help="texts to compare with the query")
    _common(p)

    p = sub.add_parser("info", help="show the collection: backend, size, embedding model, sources")
    _common(p)

    p = sub.add_parser(
        "warmup", help="load the local embedding model now (builds the ONNX engine's cache)"
    )
    _common(p)

    p = sub.add_parser("serve", help="run the HTTP service (chat API, ask/search, uploads, page)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    _common(p)

    p = sub.add_parser("gaps", help="questions the knowledge base could not answer, grouped")
    p.add_argument(
        "--since", default=None, help="only entries from this date on (YYYY-MM-DD or ISO time)"
    )
    _common(p)

    p = sub.add_parser("config", help="print the effective settings (secrets masked)")
    _common(p)

    p = sub.add_parser(
        "verify",
        help="check that the store, the records and the keyword index agree (--repair fixes)",
        description="Check the configured collection: the chunk ids of the store, the record "
        "manager and the keyword index, sources whose files are gone, the embedding fingerprint "
        "and the index settings. Exit 0 when all is well, 6 when a problem is left.",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="fix what needs no re-embedding (holds the collection's write lock)",
    )
    _common(p)

    _add_collections_parser(sub)
    _add_migrate_parser(sub)
    _add_state_parser(sub)
    return parser


def _retrieval_options(parser: argparse.ArgumentParser, *, threshold: bool = True) -> None:
    parser.add_argument("--k", type=int, help="chunks to retrieve (RAG_RETRIEVER__K)")
    if threshold:
        parser.add_argument(
            "--threshold",
            type=float,
            help="relevance threshold 0..1 (RAG_RETRIEVER__SCORE_THRESHOLD)",
        )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE|JSON",
        help="only chunks whose metadata matches (repeatable, all must hold): KEY=VALUE, or a "
        'JSON filter such as \'{"page": {"$gte": 2}}\' ($eq $ne $gt $gte $lt $lte $in $nin, '
        "$and, $or)",
    )
    parser.add_argument(
        "--where-document-contains",
        action="append",
        default=[],
        metavar="TEXT",
        help="only chunks whose text contains TEXT (repeatable: all must occur), e.g. 运费; "
        "RAG_RETRIEVER__WHERE_DOCUMENT takes a full filter",
    )


def _add_collections_parser(sub: Any) -> None:
    p = sub.add_parser(
        "collections",
        help="list, peek into, count, get, rename or delete collections and chunks",
    )
    _common(p)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("list", help="every collection at the configured location")
    _common(c)
    c = actions.add_parser("peek", help="show a few chunks of the collection")
    c.add_argument("n", nargs="?", type=int, default=5, help="how many (default 5)")
    _common(c)
    c = actions.add_parser("count", help="number of chunks in the collection")
    _common(c)
    c = actions.add_parser(
        "rename", help="rename the collection, keeping its records and keyword index"
    )
    c.add_argument("new_name", help="letters, digits, underscores; 3-63 characters")
    _common(c)
    c = actions.add_parser("get", help="show chunks by id (text and metadata)")
    c.add_argument("ids", nargs="+", metavar="ID", help="chunk ids, as `peek` or `search` show")
    _common(c)
    c = actions.add_parser(
        "delete-docs",
        help="delete chunks by id, metadata filter or source file, from the store, the keyword "
        "index and the records alike",
    )
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", metavar="ID", help="chunk ids")
    which.add_argument(
        "--where", metavar="JSON", help='a metadata filter, e.g. \'{"doc_type": "faq"}\''
    )
    which.add_argument(
        "--source", metavar="PATH", help="every chunk of one source, as `rag info` lists it"
    )
    _common(c)
    c = actions.add_parser("delete", help="drop the collection and its records (needs --yes)")
    c.add_argument("--yes", action="store_true", help="confirm: there is no undo")
    _common(c)


def _add_migrate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="copy the collection (vectors included, nothing re-embedded) to another store",
        description="Copy chunk ids, texts, metadata and vectors of the configured collection "
        "to another store, with its record manager, source manifest and keyword index, so a "
        "later `rag ingest` there is incremental. Unset --to-* values are the source's; "
        "records and keyword index go to the target's data folder (default: the source's).",
    )
    p.add_argument("--to-backend", choices=["chroma", "milvus"], help="target backend")
    p.add_argument("--to-mode", choices=["persistent", "memory", "http"], help="Chroma mode")
    p.add_argument(
        "--to-uri",
        help="Milvus: a milvus-lite .db path or http://host:19530 (default DATA_DIR/milvus.db)",
    )
    p.add_argument("--to-collection", help="target collection name")
    p.add_argument("--to-host", help="Chroma http: server host")
    p.add_argument("--to-port", type=int, help="Chroma http: server port")
    p.add_argument("--to-data-dir", type=Path, help="target data folder")
    p.add_argument(
        "--to-settings",
        type=Path,
        metavar="FILE",
        help="a rag.toml whose [store] table (and data_dir) describe the target; --to-* win",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="drop an existing non-empty target (or one built with other embeddings) first",
    )
    p.add_argument("--batch-size", type=int, default=500, help="chunks per batch (default 500)")
    _common(p)


def _add_state_parser(sub: Any) -> None:
    p = sub.add_parser(
        "state", help="the state database (records, sources, keyword index, gap log, sessions)"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser(
        "migrate",
        help="copy the whole state database to another one (SQLite <-> PostgreSQL), checked",
        description="Copy every table of the state database (all collections) to the database "
        "--to names, in one snapshot of the source, then compare row counts and run `rag "
        "verify` against the copy. Stop ingest workers and services first; afterwards point "
        "RAG_STATE__URL at the target.",
    )
    c.add_argument(
        "--to",
        required=True,
        metavar="URL|PATH",
        help="postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH, or a file path",
    )
    c.add_argument(
        "--replace", action="store_true", help="empty a target that already holds rows first"
    )
    _common(c)


def _json_filter(option: str, text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigurationError(
            f"{option} {text!r}: not valid JSON ({e.msg} at column {e.colno})"
        ) from e
    if not isinstance(parsed, dict):
        raise ConfigurationError(f'{option} {text!r}: expected a JSON object, e.g. {{"page": 2}}')
    return parsed


def _parse_filters(items: Sequence[str]) -> dict[str, Any]:
    """``--filter`` values (KEY=VALUE or a JSON filter), all of which must hold."""
    flat: dict[str, Any] = {}  # KEY=VALUE pairs, ANDed as one object
    parts: list[dict[str, Any]] = []
    for item in items:
        if item.strip().startswith("{"):
            parts.append(_json_filter("--filter", item))
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"--filter {item!r}: expected KEY=VALUE (e.g. source=faq.csv) or a JSON filter "
                '(e.g. \'{"page": {"$gte": 2}}\')'
            )
        text = value.strip()
        flat[key.strip()] = int(text) if text.lstrip("-").isdigit() else text
    if flat:
        parts.insert(0, flat)
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _settings(args: argparse.Namespace) -> Settings:
    from rag_pipeline.config import load_settings

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.collection:
        overrides["store"] = {"collection": args.collection}
    retriever: dict[str, Any] = {}
    if getattr(args, "k", None) is not None:
        retriever["k"] = args.k
    if getattr(args, "threshold", None) is not None:
        retriever["score_threshold"] = args.threshold
    if getattr(args, "filter", None):
        retriever["filter"] = _parse_filters(args.filter)
    contains = getattr(args, "where_document_contains", None)
    if contains:
        clauses = [{"$contains": text} for text in contains]
        retriever["where_document"] = clauses[0] if len(clauses) == 1 else {"$and": clauses}
    if retriever:
        overrides["retriever"] = retriever
    return load_settings(**overrides)


def _settings_preloading(args: argparse.Namespace) -> Settings:
    """``_settings``, and the local ONNX model starts opening in the background, so that it
    overlaps the imports the command is about to pay for (see ``onnx_e5.engine.preload``)."""
    settings = _settings(args)
    cfg = settings.embeddings
    if cfg.provider == "local" and cfg.engine == "onnx":
        from rag_pipeline.onnx_e5.engine import preload

        preload(precision=cfg.precision, threads=cfg.threads, cache_dir=cfg.cache_dir)
    return settings


def _progress_bar(total_hint: str) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = None

    def update(source: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="file", desc=total_hint, file=sys.stderr)
        bar.set_postfix_str(source[-40:], refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag_pipeline.indexing import ingest

    settings = _settings(args)
    paths = args.paths or [Path("corpus")]
    if not args.paths and not Path("corpus").is_dir():
        raise ConfigurationError("no corpus/ folder here: pass the files or folders to ingest")
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        # A typo in a path would otherwise "succeed" with nothing ingested.
        raise ConfigurationError(
            f"no such file or folder: {', '.join(missing)}: check the path(s) given to rag ingest"
        )
    report = ingest(
        paths,
        settings,
        rebuild=args.rebuild,
        prune=not args.no_prune,
        progress=_progress_bar("ingest"),
    )
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(
            f"{report.files_ingested}/{report.files_seen} files ingested in {report.seconds:.1f}s: "
            f"{report.chunks_added} chunks added, {report.chunks_unchanged} unchanged, "
            f"{report.chunks_deleted} deleted"
        )
        for failure in report.files_failed:
            print(f"  failed  {failure['path']}: {failure['reason']}")
        for skipped in report.files_skipped:
            print(f"  skipped {skipped['path']}: {skipped['reason']}")
    return EXIT_PARTIAL if report.files_failed else EXIT_OK


def _print_sources(answer: Answer, *, show_context: bool) -> None:
    if answer.refused:
        return
    print("\n来源 / Sources:")
    for s in answer.sources:
        where = s.source + (f" p.{s.page}" if s.page else "")
        heading = f" | {s.headers or s.title}" if (s.headers or s.title) else ""
        print(f"  [{s.number}] {where}{heading} (relevance {s.score:.2f})")
    if show_context:
        print("\n检索到的上下文 / Retrieved context:")
        for s in answer.context:
            print(f"--- [{s.number}] {s.source} (relevance {s.score:.2f})\n{s.content}")


def _note_wanted(settings: Settings, answer: Answer) -> bool:
    """Whether the extractive note follows ``answer`` on the terminal: the configured model is
    the extractive one (a fallback answer has its own notice) and it answered."""
    return (
        settings.llm.extractive_note
        and settings.llm_provider() == "extractive"
        and not (answer.generated or answer.refused or answer.degraded)
    )


def _warn_degraded(settings: Settings, answer: Answer) -> None:
    if answer.degraded:
        print(
            f"warning: {answer.degraded_reason}; answered with the fallback "
            f"(RAG_LLM__FALLBACK={settings.llm.fallback})",
            file=sys.stderr,
        )


def _stream_answer(pieces: Any) -> Answer:
    """Print the text pieces of ``Assistant.stream`` as they come; the final Answer."""
    from rag_pipeline.chain import Answer

    final: Answer | None = None
    text = ""
    for piece in pieces:
        if isinstance(piece, Answer):
            final = piece
        else:
            text += piece
            print(piece, end="", flush=True)
    if not text.endswith("\n"):
        print()
    if final is None:  # the stream always ends with its Answer
        raise RagError("the answer stream ended without an answer")
    return final


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings_preloading(args)
    from rag_pipeline.assistant import Assistant, extractive_note

    assistant = Assistant.from_settings(settings)
    # JSON is one object printed at once; on a pipe the answer comes at once as before.
    stream = not args.json and (args.stream if args.stream is not None else sys.stdout.isatty())
    if stream:
        answer = _stream_answer(assistant.stream(args.question))
    else:
        answer = assistant.ask(args.question)
    _warn_degraded(settings, answer)
    if args.json:
        print(json.dumps(answer.to_dict(with_context=args.show_context), ensure_ascii=False))
        return EXIT_OK
    if not stream:
        print(answer.answer)
    if _note_wanted(settings, answer):
        print(f"\n{extractive_note(answer.standalone_question)}")
    _print_sources(answer, show_context=args.show_context)
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    settings = _settings_preloading(args)
    from rag_pipeline.assistant import Assistant

    assistant = Assistant.from_settings(settings)
    found = assistant.search(args.query)
    if args.json:
        _print_json([asdict(s) for s in found])
        return EXIT_OK
    if not found:
        print("(nothing passed the relevance threshold)")
    for s in found:
        where = s.source + (f" p.{s.page}" if s.page else "")
        print(f"[{s.number}] {where} (relevance {s.score:.2f}) id={s.id}")
        print("    " + s.content.replace("\n", " ")[:200])
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings_preloading(args)
    from rag_pipeline.assistant import Assistant, extractive_note, history_text

    assistant = Assistant.from_settings(settings)
    history: list[tuple[str, str]] = []
    last: Answer | None = None
    noted = False  # the extractive note is shown once per session, after the first answer
    print("输入问题开始对话；/sources 查看上一答案的来源，/reset 清空对话，/exit 退出。")
    while True:
        try:
            line = input("\n你> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return EXIT_OK
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return EXIT_OK
        if line == "/reset":
            history, last = [], None
            print("（对话已清空）")
            continue
        if line == "/sources":
            if last is None:
                print("（还没有回答）")
            else:
                _print_sources(last, show_context=False)
            continue
        print("客服> ", end="", flush=True)
        last = _stream_answer(assistant.stream(line, history))
        _warn_degraded(settings, last)
        if not noted and _note_wanted(settings, last):
            print(f"\n{extractive_note(last.standalone_question)}")
            noted = True
        history.append((last.standalone_question, history_text(last)))


def _check_report_path(path: Path) -> None:
    """Refuse a report path that cannot be written before the (long) run, not after it."""
    folder = path.parent
    if path.is_dir():
        raise ConfigurationError(
            f"--report {path}: is a folder; give a file name such as report.html"
        )
    if not folder.is_dir():
        raise ConfigurationError(f"--report {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigurationError(f"--report {path}: not writable")


def cmd_eval(args: argparse.Namespace) -> int:
    from rag_pipeline.evaluation import DETAILS, evaluate, format_table

    if args.limit is not None and args.limit < 1:
        raise ConfigurationError(f"--limit {args.limit}: give a positive number of queries")
    if args.report is not None:
        _check_report_path(args.report)

    def progress() -> Any:
        """One bar per stage (ingest, queries, answers) on a terminal; otherwise a line to stderr
        at each quarter, so a long run in a log still shows it is moving."""
        bars: dict[str, Any] = {}
        tty = sys.stderr.isatty()

        def update(stage: str, done: int, total: int) -> None:
            if tty:
                from tqdm import tqdm

                if stage not in bars:
                    bars[stage] = tqdm(total=total, desc=f"eval {stage}", file=sys.stderr)
                bar = bars[stage]
                bar.update(done - bar.n)
                if done >= total:
                    bar.close()
            elif done == total or (total >= 4 and done % max(1, total // 4) == 0):
                print(f"eval {stage}: {done}/{total}", file=sys.stderr, flush=True)

        return update

    # --data-dir names the scratch folder here; the settings keep the configured data folder,
    # whose embedding cache the scratch index embeds through (a new scratch folder is cheap).
    settings = _settings(argparse.Namespace(**{**vars(args), "data_dir": None}))
    # Scratch index beside, never inside, the main one (default .rag-eval/).
    scratch = args.data_dir or Path(".rag-eval")
    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    result = evaluate(
        args.datasets,
        settings,
        compare,
        scratch=scratch,
        limit=args.limit,
        progress=progress(),
    )
    if args.report is not None:
        from rag_pipeline.eval_report import render_report

        try:
            args.report.write_text(render_report(result, settings), encoding="utf-8")
        except OSError as e:
            raise ConfigurationError(f"--report {args.report}: cannot write it ({e})") from e
        print(f"eval report written to {args.report}", file=sys.stderr)
    # The per-query details feed the report only: --json stays the figures, a size that does
    # not grow with the questions' text, and the keys scripts already read.
    figures = {k: v for k, v in result.items() if k != DETAILS}
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, indent=2))
    else:
        print(format_table(figures))
    return EXIT_OK


def cmd_similarity(args: argparse.Namespace) -> int:
    from rag_pipeline.embeddings import build_embedding_model, similarities

    model = build_embedding_model(_settings(args))
    rows = similarities(model.embeddings, args.query, list(args.texts))
    if args.json:
        data = [{"text": t, "cosine": round(c, 4), "l2": round(d, 4)} for t, c, d in rows]
        print(json.dumps({"model": model.fingerprint, "results": data}, ensure_ascii=False))
    else:
        print(f"embeddings: {model.fingerprint}")
        print(f"{'cosine':>8} {'L2':>8}  text")
        for text, cosine, l2 in rows:
            print(f"{cosine:8.4f} {l2:8.4f}  {text}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from rag_pipeline.bookkeeping import Bookkeeping
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.state_db import describe as describe_state
    from rag_pipeline.stores import open_store

    settings = _settings(args)
    model = build_embedding_model(settings)
    store = open_store(settings, model, create=False)
    info = {
        "backend": settings.store.backend,
        "mode": settings.store.mode if settings.store.backend == "chroma" else None,
        "collection": settings.store.collection,
        **store.describe(),
        "configured_embeddings": model.fingerprint,
        **_engine_info(model),
        "state": describe_state(settings.state_location),
        "roots": Bookkeeping(settings, store.namespace).roots(),
        "sources": store.sources(),
    }
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        for key, value in info.items():
            if key not in ("sources", "roots"):
                print(f"{key:>22}: {value}")
        print(f"{'roots':>22}:")
        for label, path in info["roots"].items():
            print(f"{'':>24}{label}: {path}")
        print(f"{'sources':>22}:")
        for source, count in info["sources"].items():
            print(f"{count:>26}  {source}")
    return EXIT_OK


def _engine_info(model: Any) -> dict[str, str]:
    """The local provider's engine and precision (what ``rag info`` adds for it)."""
    from rag_pipeline.embeddings import LocalE5Embeddings

    inner = getattr(model.embeddings, "inner", model.embeddings)
    return {"embeddings_engine": inner.label} if isinstance(inner, LocalE5Embeddings) else {}


def cmd_warmup(args: argparse.Namespace) -> int:
    """Load the local embedding model now, building the ONNX engine's cached model file if it
    is missing (e.g. in a Docker build step, or right after pip install)."""
    from rag_pipeline.embeddings import LocalE5Embeddings, build_embedding_model

    model = build_embedding_model(_settings(args))
    inner = getattr(model.embeddings, "inner", model.embeddings)
    if not isinstance(inner, LocalE5Embeddings):
        print(f"nothing to warm up: embeddings provider {model.provider!r} has no local model")
        return EXIT_OK
    seconds = inner.warm_up()
    where = ""
    if inner.engine == "onnx":
        loaded = inner._e5().load()
        kept = f"cached in {loaded.path}" if loaded.path else "built in memory (cache not writable)"
        where = f", {'built' if loaded.built else 'opened'}: {kept}"
    print(f"local embeddings ready: {inner.label} in {seconds:.1f}s{where}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from rag_pipeline.verify import verify

    report = verify(_settings(args), repair=args.repair)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(
            f"collection {report.collection!r} at {report.location}: {report.chunks} chunks, "
            f"{report.records} records, {report.keyword_rows} keyword rows, "
            f"{report.sources} sources"
        )
        for problem in report.problems:
            done = f", repaired {problem.repaired}" if report.repaired else ""
            print(f"  {problem.kind}: {problem.count}{done}")
            for example in problem.examples[:3]:
                print(f"      {example}")
            if problem.needs:
                print(f"    needs: {problem.needs}")
        if not report.problems:
            print("  everything agrees")
        elif not report.repaired and report.problems:
            print("run `rag verify --repair` to fix what needs no re-embedding")
    return EXIT_OK if report.ok else EXIT_INCONSISTENT


def cmd_serve(args: argparse.Namespace) -> int:
    from rag_pipeline.service.run import serve

    settings = _settings(args)
    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def cmd_gaps(args: argparse.Namespace) -> int:
    from rag_pipeline.gaps import print_report

    return print_report(_settings(args), since=args.since, as_json=args.json)


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).masked(), ensure_ascii=False, indent=2))
    return EXIT_OK


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def cmd_collections(args: argparse.Namespace) -> int:
    from rag_pipeline import admin

    settings = _settings(args)
    if args.action == "delete" and not args.yes:
        admin.delete(settings, confirm=False)  # raises: says to pass --yes
    if args.action == "list":
        listing = admin.list_collections(settings)
        if args.json:
            _print_json(listing)
            return EXIT_OK
        print(f"{listing['backend']} at {listing['location']}:")
        for row in listing["collections"]:
            mark = "*" if row["current"] else " "
            size = "?" if row["count"] is None else row["count"]
            note = row.get("error") or row["fingerprint"] or "(no embedding fingerprint)"
            print(f" {mark} {row['name']:<30} {size:>8} chunks  {note}")
        if not listing["collections"]:
            print("  (no collections: `rag ingest PATH` creates one)")
    elif args.action == "peek":
        chunks = admin.peek(settings, args.n)
        if args.json:
            _print_json(chunks)
            return EXIT_OK
        for chunk in chunks:
            text = chunk["text"].replace("\n", " ")
            if len(text) > admin.PEEK_TEXT:
                text = text[: admin.PEEK_TEXT] + "…"
            print(f"{chunk['id']}  {chunk['metadata'].get('source', '?')}\n    {text}")
    elif args.action == "get":
        got = admin.get_docs(settings, args.ids)
        if args.json:
            _print_json(got)
            return EXIT_OK
        for chunk in got["chunks"]:
            meta = json.dumps(chunk["metadata"], ensure_ascii=False)
            print(f"{chunk['id']}\n  metadata: {meta}\n  {chunk['text']}")
        for missing in got["missing"]:
            print(f"{missing}: no such chunk")
    elif args.action == "delete-docs":
        where = _json_filter("--where", args.where) if args.where else None
        deleted = admin.delete_docs(settings, ids=args.ids, where=where, source=args.source)
        if args.json:
            _print_json(deleted)
            return EXIT_OK
        print(
            f"deleted {deleted['deleted']} chunks from {deleted['collection']!r} at "
            f"{deleted['location']} (store, keyword index and records); "
            f"{deleted['count']} chunks left"
        )
        if deleted["missing"]:
            print(f"  not found: {', '.join(deleted['missing'])}")
    elif args.action == "count":
        counted = admin.count(settings)
        if args.json:
            _print_json(counted)
        else:
            print(counted["count"])
    elif args.action == "rename":
        renamed = admin.rename(settings, args.new_name)
        if args.json:
            _print_json(renamed)
            return EXIT_OK
        moved = renamed["moved"]
        print(
            f"renamed {renamed['collection']!r} to {renamed['renamed_to']!r} at "
            f"{renamed['location']} ({renamed['count']} chunks; moved {moved['records']} "
            f"records, {moved['sources']} sources, {moved['keyword_chunks']} keyword rows)"
        )
        print(f"next: {renamed['next']}")
    else:
        deleted = admin.delete(settings, confirm=True)
        if args.json:
            _print_json(deleted)
            return EXIT_OK
        removed = deleted["removed"]
        state = "deleted" if deleted["existed"] else "did not exist;"
        print(
            f"collection {deleted['collection']!r} at {deleted['location']} {state} "
            f"({deleted['deleted_chunks']} chunks, {removed['records']} records, "
            f"{removed['sources']} sources, {removed['keyword_chunks']} keyword rows removed)"
        )
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from rag_pipeline.admin import migrate, target_settings

    settings = _settings(args)
    target = target_settings(
        settings,
        backend=args.to_backend,
        mode=args.to_mode,
        uri=args.to_uri,
        collection=args.to_collection,
        host=args.to_host,
        port=args.to_port,
        data_dir=args.to_data_dir,
        settings_file=args.to_settings,
    )
    report = migrate(settings, target, replace=args.replace, batch_size=args.batch_size)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    src, dst = report.source, report.target
    print(
        f"copied {report.chunks_copied} chunks in {report.batches} batches "
        f"({report.seconds:.1f}s, nothing re-embedded)\n"
        f"  from {src['backend']} {src['location']} / {src['collection']}\n"
        f"  to   {dst['backend']} {dst['location']} / {dst['collection']} "
        f"({dst['count']} chunks, {report.fingerprint})"
    )
    if report.replaced:
        print("  the target's previous contents were dropped (--replace)")
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    from rag_pipeline.state_db import describe
    from rag_pipeline.state_migrate import migrate_state, target_location

    settings = _settings(args)
    target = target_location(args.to)
    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(table: str, rows: int) -> None:
            print(f"\r  {table}: {rows:,} rows", end="", file=sys.stderr, flush=True)

    report = migrate_state(settings, target, replace=args.replace, progress=progress)
    if progress is not None:
        print(file=sys.stderr)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_INCONSISTENT
    print(f"copied the state database\n  from {report.source}\n  to   {report.target}")
    for table, rows in report.tables.items():
        if rows:
            print(f"  {table}: {rows:,} rows")
    for table, (want, got) in report.mismatched.items():
        print(f"  MISMATCH {table}: {want} rows in the source, {got} in the copy")
    if report.verify_ok is not None:
        verdict = (
            "agrees" if report.verify_ok else "DISAGREES: " + "; ".join(report.verify_problems)
        )
        print(f"  rag verify of collection {settings.store.collection!r} on the copy: {verdict}")
    if report.ok:
        where = describe(target) if isinstance(target, str) else f"sqlite:///{target}"
        print(
            f"now use it: RAG_STATE__URL={where}"
            + (" (with its password)" if "***" in where else "")
        )
    return EXIT_OK if report.ok else EXIT_INCONSISTENT


COMMANDS = {
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "search": cmd_search,
    "chat": cmd_chat,
    "eval": cmd_eval,
    "similarity": cmd_similarity,
    "info": cmd_info,
    "warmup": cmd_warmup,
    "config": cmd_config,
    "serve": cmd_serve,
    "gaps": cmd_gaps,
    "verify": cmd_verify,
    "collections": cmd_collections,
    "migrate": cmd_migrate,
    "state": cmd_state,
}


def main(argv: Sequence[str] | None = None) -> int:
    # The local model's OpenMP runtime reads this once when it loads. With the default (active)
    # policy idle threads spin, and when other processes shared the cores a third of
    # single-query calls stalled for ~1.7 s (bench-results/ask-busy-*.json). Set here, by the
    # entry point, so that a user's own process keeps its own choice; a value set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    # Parsers log every oddity of a broken file; the report already says what failed and why.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not args.debug:
        # milvus-lite logs an "AllocTimestamp: Method not implemented" gRPC traceback on open and
        # migrate, which pymilvus recovers from; errors that matter reach us as exceptions.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    try:
        return COMMANDS[args.command](args)
    except (ConfigurationError, EmptyIndexError, EmbeddingMismatchError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailableError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_STORE
    except CollectionLockedError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except RagError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:
        message = _database_failure(e)
        if message is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_STORE


def _database_failure(error: Exception) -> str | None:
    """One line for a state database that went away mid-command (PostgreSQL restarted, the
    network dropped); None for anything else, which stays a bug report with its traceback."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(error, OperationalError | InterfaceError):
        return None
    first = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
    return (
        f"the state database failed ({type(error.orig).__name__}: {first}): check that it "
        "runs and RAG_STATE__URL is right, then run the command again (a file group is "
        "written whole or not at all)"
    )


if __name__ == "__main__":
    sys.exit(main())
