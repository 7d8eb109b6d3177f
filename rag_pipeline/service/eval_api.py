"""The evaluation report of the served knowledge base, from the admin page (/v1/eval).

``POST /v1/eval`` (admin) runs ``rag eval`` on the knowledge base's own question files: the
``questions.jsonl`` at the top of each ingested folder of the served collection and of the
managed documents folder. It runs the default configuration only (no comparisons), in the
scratch folder ``<data_dir>/eval-scratch``, embedding through the data folder's cache and with
the service's own embedding model, so a collection that was ingested already embeds nothing
new (only the questions; the real local model embeds about 8 chunks a second, so a cold cache
on a large corpus takes minutes). The answers come from the served chat model: with a remote
model configured, every question is one paid call.

The page is kept as ``<data_dir>/reports/eval-<UTC time>.html`` and reachable for an hour at
``GET /v1/eval/reports/<token>`` without a key: a tab opened from the admin page cannot send
the bearer header, so the unguessable token is the capability. ``GET /v1/eval/latest``
(admin) gives the newest kept report to scripts.

The work is in ``Evaluations.run``, callable with a ``ServiceState`` and no HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from rag_pipeline.errors import RagError
from rag_pipeline.eval_report import render_report
from rag_pipeline.evaluation import evaluate, question_files
from rag_pipeline.service.auth import require_admin

if TYPE_CHECKING:
    from rag_pipeline.service.state import ServiceState

log = logging.getLogger(__name__)

QUESTIONS = "questions.jsonl"
OUT_OF_SCOPE = "out_of_scope.jsonl"
LINK_TTL = 3600.0  # seconds a report link stays valid
MAX_LINKS = 100  # links kept at most; the oldest go first
SUMMARY_FIGURES = ("n_queries", "hit@1", "hit@5", "hit@10", "mrr@10", "chunks")
SUMMARY_RATES = ("score_threshold", "refused_in_scope", "refused_out_of_scope", "n_out_of_scope")

# The report is one page with inline style and script that loads nothing: allow exactly that.
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REPORT_HEADERS = {
    "Content-Security-Policy": REPORT_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The token is in the URL: never hand it on to another site, never keep the page cached.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

NO_QUESTIONS = (
    "no questions.jsonl in the served knowledge base: put one (a JSON object per line with "
    '"question", "sources" and "answer_contains"; see the README, "Evaluation") at the top '
    "of an ingested folder or of the documents folder {folder}, with an out_of_scope.jsonl "
    "beside it for refusal rates, and list both in that folder's .ragignore"
)

router = APIRouter(prefix="/v1/eval", tags=["evaluation"])


class EvaluationRunningError(RagError):
    """A second evaluation while one runs (one at a time: each one is a full pass)."""


class NoQuestionsError(RagError):
    """The served knowledge base has no questions.jsonl to evaluate against."""


class BadQuestionsError(RagError):
    """A question file the evaluation cannot read (its path and line say where)."""


def check_question_file(path: Path, *, in_scope: bool) -> int:
    """The number of questions in ``path``; BadQuestionsError naming the first bad line. In
    scope: ``question`` (text) and ``sources`` (a list of file names, relative to the folder);
    out of scope: ``question`` alone. Checked here so the admin reads which line is wrong,
    not a 500 from deep inside the evaluation."""
    count = 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadQuestionsError(f"{where}: not JSON ({e.msg})") from e
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise BadQuestionsError(f'{where}: expected an object with a "question" text')
            sources = row.get("sources")
            if in_scope and not (
                isinstance(sources, list) and sources and all(isinstance(x, str) for x in sources)
            ):
                raise BadQuestionsError(
                    f'{where}: "sources" must be a list of file names (relative to the folder)'
                )
            count += 1
    return count


def _check_questions(folders: list[Path]) -> None:
    for folder in folders:
        for path in question_files(folder):
            check_question_file(path, in_scope=True)
        if (folder / OUT_OF_SCOPE).is_file():
            check_question_file(folder / OUT_OF_SCOPE, in_scope=False)


class ReportLinks:
    """Unguessable tokens for report files, each valid for ``ttl`` seconds.

    >>> links = ReportLinks()
    >>> token = links.issue(Path("reports/eval-1.html"))
    >>> links.resolve(token)
    PosixPath('reports/eval-1.html')
    """

    def __init__(self, ttl: float = LINK_TTL, max_links: int = MAX_LINKS) -> None:
        self.ttl = ttl
        self.max_links = max_links
        self._links: dict[str, tuple[Path, float]] = {}
        self._lock = threading.Lock()

    def issue(self, path: Path) -> str:
        token = secrets.token_urlsafe(32)  # 256 bits: the token is the whole access check
        with self._lock:
            self._drop_expired()
            while len(self._links) >= self.max_links:
                self._links.pop(next(iter(self._links)))  # insertion order: the oldest
            self._links[token] = (path, time.monotonic() + self.ttl)
        return token

    def resolve(self, token: str) -> Path | None:
        """The report file of ``token``; None when unknown or expired."""
        with self._lock:
            self._drop_expired()
            found = self._links.get(token)
        return found[0] if found else None

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for token in [t for t, (_, until) in self._links.items() if until <= now]:
            del self._links[token]


def question_folders(state: ServiceState) -> list[Path]:
    """The folders of the served knowledge base with a questions.jsonl at their top: every
    ingested root of the collection, and the managed documents folder."""
    from rag_pipeline.bookkeeping import Bookkeeping

    store = state.snapshot.store  # NotReadyError while loading
    roots = [Path(p) for p in Bookkeeping(state.settings, store.namespace).roots().values()]
    found: list[Path] = []
    for folder in [*roots, state.settings.documents_dir.resolve()]:
        if (folder / QUESTIONS).is_file() and folder not in found:
            found.append(folder)
    return found


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the admin page shows of an ``evaluate`` result."""
    figures: dict[str, Any] = {"config": result.get("config")}
    for name in (*SUMMARY_FIGURES, *SUMMARY_RATES):
        figures[name] = result.get(name)
    answers = result.get("answers") or {}
    figures["answer_contains"] = answers.get("answer_contains")
    figures["citations_valid"] = answers.get("citations_valid")
    # The whole assistant's refusals (the chat model may refuse too), beside the gate's.
    figures["answers_refused_in_scope"] = answers.get("refused_in_scope")
    run = result.get("details", {}).get("run", {})
    figures["datasets"] = [d.get("path") for d in run.get("datasets", [])]
    return figures


def _write_atomically(path: Path, text: str) -> None:
    """A reader sees the whole page or no file (a crash leaves a hidden temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Evaluations:
    """The evaluation runs of one service process: one at a time, their report links."""

    def __init__(self, ttl: float = LINK_TTL) -> None:
        self.links = ReportLinks(ttl)
        self._running = threading.Lock()

    def run(self, state: ServiceState) -> dict[str, Any]:
        """Evaluate the served knowledge base; ``{"report_url", "report", "summary"}``.
        EvaluationRunningError while another run is going, NoQuestionsError without a
        questions.jsonl."""
        # Taken and released in the worker thread that does the work: a client that goes
        # away mid-run cannot free the slot while the run goes on.
        if not self._running.acquire(blocking=False):
            raise EvaluationRunningError("an evaluation is already running; try again when done")
        try:
            return self._run(state)
        finally:
            self._running.release()

    def _run(self, state: ServiceState) -> dict[str, Any]:
        snapshot = state.snapshot  # NotReadyError while loading
        settings = state.settings
        folders = question_folders(state)
        if not folders:
            raise NoQuestionsError(NO_QUESTIONS.format(folder=settings.documents_dir))
        _check_questions(folders)
        started = time.perf_counter()
        log.info("evaluation of %s started", ", ".join(map(str, folders)))
        result = evaluate(
            folders, settings, (), scratch=settings.data_dir / "eval-scratch", model=snapshot.model
        )
        page = render_report(result, settings)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = reports_dir(state) / f"eval-{stamp}.html"
        _write_atomically(path, page)
        seconds = round(time.perf_counter() - started, 2)
        log.info("evaluation done in %.1f s: %s", seconds, path)
        token = self.links.issue(path)
        return {
            "report_url": f"{router.prefix}/reports/{token}",
            "report": path.name,
            "summary": {**summary(result), "seconds": seconds},
        }


def reports_dir(state: ServiceState) -> Path:
    return state.settings.data_dir / "reports"


def latest_report(state: ServiceState) -> Path | None:
    """The newest kept report (names sort by their UTC time), None when there is none."""
    folder = reports_dir(state)
    if not folder.is_dir():
        return None
    pages = sorted(p for p in folder.glob("eval-*.html") if p.is_file())
    return pages[-1] if pages else None


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _report_page(path: Path | None, missing: str) -> Response:
    if path is None or not path.is_file():
        raise HTTPException(404, missing)
    return Response(
        path.read_bytes(), media_type="text/html; charset=utf-8", headers=REPORT_HEADERS
    )


@router.post("", dependencies=[Depends(require_admin)])
async def run_evaluation(request: Request) -> dict[str, Any]:
    """Evaluate the served knowledge base on its questions.jsonl (the default configuration);
    the summary figures and ``report_url``, a link to the HTML report valid for an hour.
    404 without a questions.jsonl, 422 for a malformed line in one, 409 while another
    evaluation runs. Takes as long as embedding what the cache lacks (the local model: about
    8 chunks a second) plus one answer per question."""
    state = _state(request)
    try:
        # Off the event loop: an evaluation is seconds to minutes of embedding and answering.
        return await run_in_threadpool(state.evaluations.run, state)
    except EvaluationRunningError as e:
        raise HTTPException(409, str(e)) from e
    except NoQuestionsError as e:
        raise HTTPException(404, str(e)) from e
    except BadQuestionsError as e:
        raise HTTPException(422, str(e)) from e


@router.get("/latest", dependencies=[Depends(require_admin)])
def latest(request: Request) -> Response:
    """The newest evaluation report's HTML (for scripts, with the admin key)."""
    return _report_page(latest_report(_state(request)), "no evaluation report yet: POST /v1/eval")


@router.get("/reports/{token}")
def report(token: str, request: Request) -> Response:
    """A report by the token of its ``report_url`` (no key: the token is the access)."""
    path = _state(request).evaluations.links.resolve(token)
    return _report_page(path, "no such report link (links expire after an hour): run it again")
