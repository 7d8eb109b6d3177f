"""`rag eval --report` as a user runs it, and the page it writes in a real headless Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.cli import main
from tests.helpers import write_corpus
from tests.integration.browser import Screenshots, launch_chromium
from tests.integration.processes import clean_env, run_python


def _knowledge_base(folder: Path) -> Path:
    kb = write_corpus(folder)
    rows = [
        {"question": "退货运费谁承担", "sources": ["returns.md"], "answer_contains": "买家承担"},
        {"question": "不满99元运费多少", "sources": ["shipping.txt"], "answer_contains": "8元"},
        {"question": "<b>退款</b>多久到账", "sources": ["returns.md"], "answer_contains": "3个"},
    ]
    (kb / "questions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (kb / "out_of_scope.jsonl").write_text(
        '{"question": "今天天气怎么样"}\n{"question": "股票明天会涨吗"}\n', encoding="utf-8"
    )
    (kb / ".ragignore").write_text("questions.jsonl\nout_of_scope.jsonl\n", encoding="utf-8")
    return kb


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The report of one real `rag eval` subprocess: (its path, the --json figures, stderr)."""
    root = tmp_path_factory.mktemp("eval-report")
    kb = _knowledge_base(root / "kb")
    report = root / "out" / "report.html"
    report.parent.mkdir()
    env = clean_env(
        RAG_EMBEDDINGS__PROVIDER="fake",
        RAG_RETRIEVER__SCORE_THRESHOLD="0.3",
        RAG_DATA_DIR=str(root / "main"),
    )
    done = run_python(
        ["-m", "rag_pipeline.cli", "eval", str(kb), "--data-dir", str(root / "scratch")]
        + ["--compare", "dense,bm25", "--report", str(report), "--json"],
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return report, json.loads(done.stdout), done.stderr


def test_the_report_is_written_beside_the_json(written: tuple[Path, dict[str, Any], str]) -> None:
    report, figures, stderr = written
    assert f"eval report written to {report}" in stderr
    # --json keeps to the figures: the per-query details feed the report only.
    assert "details" not in figures and figures["n_queries"] == 3
    assert figures["hit_at_k"]["10"] == 1.0
    page = report.read_text(encoding="utf-8")
    for name in ("hybrid", "dense", "bm25"):
        assert f"<td>{name}</td>" in page
    assert "&lt;b&gt;退款&lt;/b&gt;多久到账" in page and "<b>退款" not in page
    # The table's row at the configured threshold, computed from each question's top
    # relevance, agrees with the rates measured with the threshold on, as `ask` runs.
    row = re.search(r'<tr class="current"><td>0.30</td><td>([\d.]+)%</td><td>([\d.]+)%</td>', page)
    assert row is not None
    assert float(row[1]) / 100 == pytest.approx(figures["refused_in_scope"], abs=1e-3)
    assert 1 - float(row[2]) / 100 == pytest.approx(figures["refused_out_of_scope"], abs=1e-3)


def test_a_report_path_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kb = _knowledge_base(tmp_path / "kb")
    base = ["eval", str(kb), "--data-dir", str(tmp_path / "s")]
    for bad in (tmp_path / "missing" / "report.html", tmp_path):
        assert main([*base, "--report", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --report {bad}") and err.count("\n") == 1
    assert not (tmp_path / "s").exists()  # refused before any work


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


def test_the_page_shows_its_charts_in_chromium(
    written: tuple[Path, dict[str, Any], str], chromium: Any, tmp_path: Path
) -> None:
    report, _, _ = written
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    sizes = page.eval_on_selector_all(
        "svg.chart",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height] })",
    )
    assert len(sizes) == 5  # two histograms, three curves against k
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    assert page.locator("svg.histogram rect").count() > 0
    # The slider is shown once its script has run, and moving it recomputes both rates.
    assert page.locator("#slider").is_visible()
    page.eval_on_selector(
        "#threshold-input", "e => { e.value = e.max; e.dispatchEvent(new Event('input')) }"
    )
    assert page.locator("#slider-in").inner_text() == "100.0%"
    shot = Screenshots(tmp_path).take(page, "eval-report", full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()
    assert problems == []
    assert requests == [report.as_uri()]  # the page itself, nothing else
