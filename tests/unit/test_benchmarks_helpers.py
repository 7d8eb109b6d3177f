"""The shared benchmark helpers in scripts/benchmarks/common.py: the one percentile definition
and how results record paths. No timings are asserted."""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path

import pytest

# scripts/ has no __init__.py: with the repository root on the path (pytest's pythonpath)
# it is a namespace package, so the benchmarks import without touching sys.path.
from scripts.benchmarks.common import (
    REPO,
    latency_stats,
    percentile,
    portable_path,
    scrub_paths,
    target,
    write_results,
)


def test_percentile_interpolates_linearly_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5  # position 1.5: halfway between 2 and 3
    assert percentile(values, 95) == pytest.approx(3.85)  # position 2.85: 3 + 0.85 * (4 - 3)
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 25) == 20.0  # position exactly 1


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 95) == 7.0


def test_percentile_matches_the_inclusive_quantiles_of_the_standard_library() -> None:
    values = [0.3, 9.1, 2.2, 5.5, 5.5, 1.0, 8.8, 4.4, 7.7, 6.6, 3.3]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 5, 25, 50, 75, 95, 99):
        assert math.isclose(percentile(values, q), cuts[q - 1])
    assert percentile(values, 50) == statistics.median(values)


def test_percentile_rejects_no_values_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_in_milliseconds() -> None:
    stats = latency_stats([0.001, 0.002, 0.003, 0.6])
    assert stats["n"] == 4
    assert stats["p50_ms"] == 2.5
    assert stats["min_ms"] == 1.0
    assert stats["max_ms"] == 600.0
    assert stats["n_over_500ms"] == 1


def test_target_reports_without_asserting() -> None:
    assert target(0.95, ">=", 0.9)["met"] is True
    assert target(1.3, "<=", 1.2) == {"value": 1.3, "target": "<= 1.2", "met": False}
    with pytest.raises(ValueError):
        target(1.0, "==", 1.0)


def test_paths_are_recorded_relative_to_the_repository_root() -> None:
    assert portable_path(REPO / "corpus") == "corpus"
    assert portable_path(REPO / "bench-results" / "ask.json") == "bench-results/ask.json"
    assert portable_path(REPO) == "."
    # a sibling folder of the checkout, like the shared evaluation data
    assert portable_path(REPO.parent / "shared" / "eval") == "../shared/eval"


def test_temp_folders_are_recorded_as_a_placeholder() -> None:
    tmp = Path(tempfile.gettempdir())
    repo = Path("/srv/checkout")  # a checkout in the temp folder would make it ".." instead
    assert portable_path(tmp / "rag-bench-x" / "data", repo=repo) == "<tmp>/rag-bench-x/data"


def test_other_absolute_paths_keep_only_their_name() -> None:
    repo = Path("/srv/checkout")  # a repository root elsewhere: nothing of this machine leaks
    assert portable_path("/opt/models/e5", repo=repo) == "<abs>/e5"
    assert portable_path("/srv/shared/eval", repo=repo) == "../shared/eval"


def test_scrub_paths_rewrites_paths_inside_nested_values_and_messages() -> None:
    tmp = Path(tempfile.gettempdir())
    repo = Path("/srv/checkout")  # a checkout in the temp folder would make it ".." instead
    results = {
        "data": {"eval_dir": str(repo.parent / "shared" / "eval"), "n": 3},
        "failed": [f"{repo / 'corpus' / 'a.md'}: not UTF-8"],
        "folder": str(tmp / "rb10k"),
        "url": "https://example.invalid/tmp/x",
    }
    assert scrub_paths(results, repo=repo) == {
        "data": {"eval_dir": "../shared/eval", "n": 3},
        "failed": ["corpus/a.md: not UTF-8"],
        "folder": "<tmp>/rb10k",
        "url": "https://example.invalid/tmp/x",
    }


def test_write_results_leaves_no_absolute_path(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    write_results(out, {"data_dir": str(tmp_path / "data"), "repo": str(REPO)}, quiet=True)
    text = out.read_text(encoding="utf-8")
    assert str(tmp_path) not in text
    assert str(REPO) not in text
    assert json.loads(text)["repo"] == "."


def test_the_ocr_benchmark_scores_by_edit_distance() -> None:
    from scripts.benchmarks.ocr import levenshtein, normalise

    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("退货运费", "退款运费") == 1
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("第一行第二行", "第二行第一行") == 2  # lines out of order cost edits
    assert normalise(" 第一 行\n第二行 ") == "第一行第二行"
