"""The HTML report of ``rag eval --report``, rendered from hand-made results."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.config import Settings
from rag_pipeline.eval_report import (
    bin_counts,
    histogram_range,
    histogram_svg,
    line_chart_svg,
    refusal_at,
    render_report,
)

VOID = {"meta", "input", "br", "img", "link", "hr", "wbr", "col", "source"}


class _Checker(HTMLParser):
    """Every element closed in order; collects the attributes that could load something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.links: list[str] = []
        self.svgs = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "action", "xmlns")]


def _check(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert page.startswith("<!DOCTYPE html>")
    assert not checker.problems, checker.problems
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


def _query(qid: str, question: str, rank: int | None, top: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": qid,
        "question": question,
        "expected": ["returns.md"],
        "rank": rank,
        "top_relevance": top,
        "top_sources": [
            {"source": "faq.csv", "score": 0.81},
            {"source": "returns.md", "score": 0.8},
        ],
        "refused": extra.get("refused", False),
    }


IN_SCOPE = [0.95, 0.91, 0.88, 0.86, 0.79]  # one below 0.80: refused
OUT_OF_SCOPE = [0.70, 0.74, 0.78, 0.81]  # one at or above 0.80: answered


def _by_k(start: float) -> dict[str, float]:
    return {str(k): round(min(1.0, start + 0.05 * k), 4) for k in range(1, 11)}


def _result(out_of_scope: bool = True) -> dict[str, Any]:
    queries = [
        _query("q1", "七天无理由退货怎么算", 1, IN_SCOPE[0]),
        _query("q2", "<script>alert('x')</script> 运费多少", None, IN_SCOPE[1]),
        _query("q3", "发票在哪下载", 3, IN_SCOPE[2]),
        _query("q4", "积分怎么用", 2, IN_SCOPE[3]),
        _query("q5", "会员等级", 1, IN_SCOPE[4], refused=True),
    ]
    oos = [{"question": f"天气 {v}", "top_relevance": v} for v in OUT_OF_SCOPE]
    figures = {
        "n_queries": 5,
        "hit@1": 0.4,
        "hit@3": 0.8,
        "hit@5": 0.8,
        "hit@10": 0.8,
        "mrr@10": 0.567,
        "recall@10": 0.8,
        "ndcg@10": 0.6,
        "latency_ms_p50": 20.0,
        "latency_ms_p95": 30.0,
        "answer_recall": 0.8,
        "chunks": 12,
        "answer_recall_at_k": _by_k(0.3),
        "context_chars_at_k": {str(k): 150.0 * k for k in range(1, 11)},
        "hit_at_k": _by_k(0.35),
        "score_threshold": 0.8,
        "refused_in_scope": 0.2,
    }
    if out_of_scope:
        figures.update(refused_out_of_scope=0.75, n_out_of_scope=4)
    dense = {**figures, "hit_at_k": _by_k(0.2)}
    answers = {
        "n_queries": 5,
        "answer_contains": 0.6,
        "answer_chars_mean": 80.5,
        "answer_chars_p95": 170.0,
        "citations_valid": 1.0,
        "cites_relevant": 0.75,
        "refused_in_scope": 0.2,
    }
    details = {"embeddings": "fake:hashed-char-ngrams:256", "retrieval": "hybrid"}
    return {
        **figures,
        "answers": answers,
        "config": "hybrid",
        "compare": {"dense": dense, "bm25": {**figures, "hit_at_k": _by_k(0.1)}},
        "details": {
            "run": {
                "started": "2026-12-01T22:00:00+00:00",
                "version": "0.1.0",
                "key": "source",
                "datasets": [{"name": "kb", "path": "/data/kb", "questions": 5, "out_of_scope": 4}],
                "n_out_of_scope": 4 if out_of_scope else 0,
            },
            "configs": {
                "hybrid": {
                    **details,
                    "queries": queries,
                    "out_of_scope": oos if out_of_scope else [],
                },
                "dense": {**details, "retrieval": "dense", "queries": queries, "out_of_scope": []},
                "bm25": {**details, "retrieval": "bm25", "queries": queries, "out_of_scope": []},
            },
        },
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, embeddings={"provider": "fake"}, openai_api_key="sk-secret")


def test_the_page_is_balanced_html_that_loads_nothing(settings: Settings) -> None:
    page = render_report(_result(), settings)
    checker = _check(page)
    assert checker.links == []  # no src, href, action, not even an SVG namespace URL
    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert checker.svgs == 5  # two histograms, three curves against k


def test_the_page_shows_threshold_rates_and_every_configuration(settings: Settings) -> None:
    page = render_report(_result(), settings)
    text = "".join(_check(page).texts)
    assert "threshold 0.80" in text
    # 1 of 5 in scope refused; 1 of 4 out of scope answered (measured: 75% refused)
    assert "20.0% of 5 in-scope questions refused" in text
    assert "25.0% of 4 out-of-scope questions answered" in text
    for name in ("hybrid", "dense", "bm25"):
        assert f"<td>{name}</td>" in page
    assert "how" in page and "top relevance" in text
    assert "sk-secret" not in page and "***" in page  # settings masked
    assert "fake:hashed-char-ngrams:256" in text and "0.1.0" in text


def test_data_text_is_escaped(settings: Settings) -> None:
    page = render_report(_result(), settings)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; 运费多少" in page
    # The only scripts are the report's own: the slider's data and code.
    assert page.count("<script") == 2


def test_the_worst_question_comes_first(settings: Settings) -> None:
    page = render_report(_result(), settings)
    worst = page[page.index('id="worst"') :]
    assert worst.index("运费多少") < worst.index("发票在哪下载") < worst.index("积分怎么用")
    assert "七天无理由退货怎么算" not in worst  # ranked first: not among the worst
    assert "not in top 10" in worst
    assert "1 of 5 in-scope questions were refused" in worst and "会员等级" in worst


def test_without_out_of_scope_questions_a_note_replaces_the_histograms(
    settings: Settings,
) -> None:
    page = render_report(_result(out_of_scope=False), settings)
    checker = _check(page)
    assert "no out-of-scope questions" in "".join(checker.texts)
    assert 'class="chart histogram"' not in page and "threshold-input" not in page
    assert checker.svgs == 3


def test_a_result_without_details_still_renders(settings: Settings) -> None:
    result = _result()
    del result["details"]
    page = render_report(result, settings)
    _check(page)
    assert "No per-question details" in page


def test_bin_counts_for_known_scores() -> None:
    # bins [0.7, 0.8) [0.8, 0.9) [0.9, 1.0]: a score on an edge counts in the bin above it
    assert bin_counts([0.70, 0.75, 0.80, 0.85, 0.899, 0.9, 1.0], 0.7, 1.0, 3) == [2, 3, 2]
    assert bin_counts([0.1, 1.5], 0.5, 1.0, 5) == [1, 0, 0, 0, 1]  # beyond the ends: clamped
    assert bin_counts([], 0.0, 1.0, 4) == [0, 0, 0, 0]


def test_histogram_edges_fall_on_the_threshold() -> None:
    lo, hi, bins = histogram_range([0.71, 0.79, 0.80, 0.93], 0.80)
    assert bins == round((hi - lo) / 0.02)
    assert lo <= 0.71 and hi > 0.93
    edges = [lo + i * (hi - lo) / bins for i in range(bins + 1)]
    assert any(abs(edge - 0.80) < 1e-9 for edge in edges)
    svg = histogram_svg(
        [0.71, 0.79, 0.80, 0.93],
        lo=lo,
        hi=hi,
        bins=bins,
        threshold=0.8,
        title="t",
        wrong_below=True,
    )
    # In scope: the bars below the line are the mistakes (red), one of them not empty.
    red = re.findall(r'height="([\d.]+)" fill="#dc2626"', svg)
    assert len(red) == round((0.80 - lo) / 0.02) and sum(float(h) > 0 for h in red) == 2
    assert svg.count("<rect") == bins


def test_refusal_at_matches_the_retriever_rule() -> None:
    assert refusal_at(IN_SCOPE, OUT_OF_SCOPE, 0.80) == (0.2, 0.25)
    assert refusal_at([0.8], [0.8], 0.8) == (0.0, 1.0)  # ">= threshold" passes


def test_line_chart_has_one_line_per_series() -> None:
    svg = line_chart_svg(
        {"a<b": {1: 0.5, 2: 0.75}, "c": {1: 0.25, 2: 1.0}}, title="hit@k", y_label="share"
    )
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4
    assert "a&lt;b" in svg and "a<b" not in svg


def test_without_a_threshold_the_picture_has_no_line_and_says_so(settings: Settings) -> None:
    result = _result()
    for key in ("score_threshold", "refused_in_scope", "refused_out_of_scope"):
        del result[key]
    page = render_report(result, settings)
    _check(page)
    assert "No refusal threshold is configured" in page
    assert 'class="chart histogram"' in page and 'class="threshold-line"' not in page
    assert "threshold-input" not in page  # no slider: nothing to compare it with
