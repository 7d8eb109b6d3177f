import json
import math
from pathlib import Path

from rag_pipeline.evaluation import (
    EvalQuery,
    dedupe,
    hit_at,
    ndcg_at,
    percentile,
    recall_at,
    reciprocal_rank,
    summarise,
)

RANKED = ["d3", "d1", "d7", "d2"]


def test_hit_at_k() -> None:
    assert hit_at(RANKED, {"d1"}, 1) == 0.0
    assert hit_at(RANKED, {"d1"}, 2) == 1.0
    assert hit_at(RANKED, {"d9"}, 10) == 0.0


def test_reciprocal_rank_uses_the_first_relevant() -> None:
    assert reciprocal_rank(RANKED, {"d7", "d2"}) == 1 / 3
    assert reciprocal_rank(RANKED, {"d2"}, k=3) == 0.0


def test_recall_counts_every_relevant() -> None:
    assert recall_at(RANKED, {"d1", "d2", "d9", "d8"}) == 0.5


def test_ndcg_by_hand() -> None:
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal: 1/log2(2) + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert math.isclose(ndcg_at(RANKED, {"d1", "d2"}), expected)
    assert ndcg_at(["a"], {"a"}) == 1.0


def test_dedupe_keeps_first_occurrence() -> None:
    assert dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_percentile_nearest_rank() -> None:
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def test_summary_with_answer_recall() -> None:
    queries = [
        EvalQuery("q1", "?", {"d1"}, ["七天 无理由"]),
        EvalQuery("q2", "?", {"d2"}, ["不存在的答案"]),
    ]
    figures = summarise(
        [["d1", "d5"], ["d5", "d2"]],
        ["签收后七天无理由退货", "别的内容"],
        [0.010, 0.030],
        queries,
    )
    assert figures["n_queries"] == 2
    assert figures["hit@1"] == 0.5 and figures["hit@3"] == 1.0
    assert figures["mrr@10"] == 0.75
    assert figures["answer_recall"] == 0.5  # whitespace-insensitive match for q1 only
    assert figures["latency_ms_p50"] == 10.0


def test_answer_recall_and_context_length_by_k() -> None:
    from rag_pipeline.evaluation import by_context_size

    queries = [EvalQuery("q1", "?", {"d1"}, ["七天"]), EvalQuery("q2", "?", {"d2"}, ["包邮"])]
    chunks = [["退货政策", "七天无理由"], ["满99元包邮", "运费"]]
    figures = by_context_size(chunks, queries)
    assert figures["answer_recall_at_k"]["1"] == 0.5
    assert figures["answer_recall_at_k"]["2"] == figures["answer_recall_at_k"]["10"] == 1.0
    assert figures["context_chars_at_k"]["1"] == (4 + 6) / 2
    assert figures["context_chars_at_k"]["2"] == (4 + 1 + 5 + 6 + 1 + 2) / 2  # "\n" joins


def test_hit_against_k_and_the_first_relevant_rank() -> None:
    from rag_pipeline.evaluation import first_relevant_rank, hit_by_k

    queries = [EvalQuery("q1", "?", {"d1"}), EvalQuery("q2", "?", {"d2"})]
    figures = hit_by_k([RANKED, RANKED], queries)
    assert list(figures) == [str(k) for k in range(1, 11)]
    assert figures["1"] == 0.0 and figures["2"] == 0.5 and figures["4"] == figures["10"] == 1.0
    assert first_relevant_rank(RANKED, {"d7", "d2"}) == 3
    assert first_relevant_rank(RANKED, {"d9"}) is None
    assert first_relevant_rank([f"x{i}" for i in range(10)] + ["d1"], {"d1"}) is None  # past 10


def test_each_dataset_is_counted_after_the_limit(tmp_path: Path) -> None:
    from rag_pipeline.evaluation import load_eval_set

    for name, n in (("a", 3), ("b", 2)):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"question": f"{name}{i}", "sources": ["x.md"]} for i in range(n)]
        (folder / "questions.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
        )
        (folder / "out_of_scope.jsonl").write_text(
            "".join(json.dumps({"question": f"{name}-oos{i}"}) + "\n" for i in range(n)),
            encoding="utf-8",
        )
    eval_set = load_eval_set([tmp_path / "a", tmp_path / "b"], limit=2)
    assert [(d["name"], d["questions"], d["out_of_scope"]) for d in eval_set.datasets] == [
        ("a", 2, 2),
        ("b", 2, 0),  # the pooled out-of-scope list is cut at --limit, as before
    ]
    assert len(eval_set.out_of_scope) == 2
