"""The pure parts of ``bench.py scaleout``: the synthetic corpus, the ask statistics and the
targets. The benchmark itself starts servers and is run by hand; no timings are asserted."""

from __future__ import annotations

from pathlib import Path

from rag_pipeline.config import Settings
from scripts.benchmarks.ingest import load_and_split
from scripts.benchmarks.scaleout import Ask, ask_stats, targets_of, write_corpus


def test_the_corpus_has_the_planned_chunks_and_no_repeated_text(tmp_path: Path) -> None:
    split = Settings().split
    one = write_corpus(tmp_path / "h1", 60, 4, seed=1, first=0, split=split)
    two = write_corpus(tmp_path / "h2", 60, 4, seed=2, first=50000, split=split)
    for root, files in ((tmp_path / "h1", one), (tmp_path / "h2", two)):
        chunks = load_and_split(root, split)
        assert len(chunks) == sum(f.chunks for f in files) >= 60
        assert all(1 <= f.chunks <= 8 for f in files)  # a few chunks a file
    texts = [
        c.page_content for root in ("h1", "h2") for c in load_and_split(tmp_path / root, split)
    ]
    assert len(texts) == len(set(texts))  # no cache hit, no shared id between the halves
    assert {f.path.name for f in one}.isdisjoint(f.path.name for f in two)
    assert len({f.question for f in one + two}) == len(one + two)


def test_ask_stats_leave_errors_out_of_the_latencies() -> None:
    asks = [Ask(0.0, s, 200, False, None) for s in (0.1, 0.2, 0.3, 1.5)]
    asks.append(Ask(0.0, 9.0, 500, None, "boom"))
    stats = ask_stats(asks)
    assert stats["n"] == 4 and stats["errors"] == 1 and stats["n_over_1s"] == 1
    assert stats["p50_ms"] == 250.0 and stats["max_ms"] == 1500.0
    assert stats["error_examples"] == ["500: boom"]


def test_targets_compare_two_workers_with_one_and_busy_with_idle() -> None:
    one = {"chunks_per_s": 40.0, "chunks_per_s_process": 38.0}
    two = {"chunks_per_s": 70.0, "chunks_per_s_process": 60.0}
    served = {
        "idle_before": {"p50_ms": 100.0},
        "idle_after": {"p50_ms": 120.0},
        "during_ingest": {"asks_while_all_workers_ingest": {"p50_ms": 160.0}},
    }
    found = targets_of(one, two, served)
    assert found["two_over_one_worker_chunks_per_s"]["value"] == 1.75
    assert found["two_over_one_worker_chunks_per_s"]["met"]
    assert not found["replica_p50_during_over_idle"]["met"]  # 1.6 > 1.5
    assert found["replica_p50_during_over_idle_after (info)"]["met"]  # 1.33
    assert targets_of({}, {}, {}) == {}  # a failed phase gives no target, not an error
