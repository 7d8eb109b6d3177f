"""Answer-level eval metrics and citation renumbering, checked by hand on tiny inputs."""

from rag_pipeline.chain import renumber
from rag_pipeline.evaluation import (
    AnswerRecord,
    EvalQuery,
    answer_figures,
    citations_valid,
    contains_answer,
)


def test_contains_answer_ignores_whitespace_and_case() -> None:
    assert contains_answer("Credit cards take 7 - 15 business days [1]", ["7-15 Business"])
    assert contains_answer("满 99 元\n包邮", ["满99元包邮"])
    assert not contains_answer("满88元包邮", ["满99元包邮"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", ["  "])  # a blank gold string matches nothing


def test_citations_valid_needs_first_use_order_and_listed_sources() -> None:
    assert citations_valid("a [1] b [2] c [1]", [1, 2])
    assert citations_valid("no markers", [1, 2, 3])  # the chain lists all when none is cited
    assert citations_valid("refused", [])
    assert not citations_valid("a [2] b [1]", [1, 2])  # not numbered in order of first use
    assert not citations_valid("a [1] b [3]", [1, 2])  # [3] is not a listed source
    assert not citations_valid("a [1]", [1, 2])  # a listed source that is never cited
    assert not citations_valid("a [1] b [2]", [2, 1])  # sources not listed as numbered


def test_answer_figures_by_hand() -> None:
    queries = [
        EvalQuery("1", "q1", {"a.md"}, ["满99元包邮"]),
        EvalQuery("2", "q2", {"b.md"}, ["7天"]),
        EvalQuery("3", "q3", {"c.md"}, ["30分钟"]),
        EvalQuery("4", "q4", {"d.md"}, []),  # no gold answer: counts for everything else
    ]
    records = [
        AnswerRecord("满99元包邮 [1]", False, [1], ["a.md"], 0.010),  # right, relevant
        AnswerRecord("十五天 [2] 见 [1]", False, [1, 2], ["x.md", "b.md"], 0.030),  # wrong order
        AnswerRecord("抱歉", True, [], [], 0.0),  # refused
        AnswerRecord("abcdefghij", False, [1], ["z.md"], 0.020),  # cites nothing relevant
    ]
    figures = answer_figures(records, queries)
    assert figures["n_queries"] == 4
    assert figures["answer_contains"] == round(1 / 3, 4)  # of the 3 queries with gold answers
    # Lengths of the three answers given: 10, 13, 10 characters (the refusal left out).
    assert figures["answer_chars_mean"] == 11.0
    assert figures["answer_chars_p95"] == 13.0
    assert figures["citations_valid"] == 0.75
    assert figures["cites_relevant"] == round(2 / 3, 4)
    assert figures["refused_in_scope"] == 0.25
    assert figures["answer_ms_p50"] == 20.0


def test_renumber_in_order_of_first_use_and_drops_unknown_markers() -> None:
    assert renumber("运费 [3]，退货 [1]，运费 [3]。", 3) == (
        "运费 [1]，退货 [2]，运费 [1]。",
        [3, 1],
    )
    assert renumber("见 [0] 与 [2]", 2) == ("见 与 [1]", [2])
    assert renumber("没有引用", 2) == ("没有引用", [])


def test_streamed_citations_get_the_numbers_of_the_final_answer() -> None:
    from rag_pipeline.chain import StreamRenumberer, renumber

    text = "退货 [3]，运费[1] 由买家承担 [3]，另见 [9] 和 [12]。"
    for size in (1, 2, 3, 5, len(text)):
        shown = StreamRenumberer(12)
        pieces = [shown.feed(text[i : i + size]) for i in range(0, len(text), size)]
        assert "".join(pieces) + shown.flush() == renumber(text, 12)[0], size
