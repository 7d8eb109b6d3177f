"""The parts of the admin evaluation without HTTP: report links (expiry, bound), the question
file check, the summary of a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.service.eval_api import (
    BadQuestionsError,
    ReportLinks,
    check_question_file,
    summary,
)


def test_a_link_resolves_until_it_expires_and_unknown_tokens_never() -> None:
    links = ReportLinks(ttl=3600)
    token = links.issue(Path("a.html"))
    assert len(token) == 43 and links.resolve(token) == Path("a.html")
    assert links.issue(Path("a.html")) != token  # every run its own link
    assert links.resolve("") is None and links.resolve(token[:-1]) is None
    links.ttl = 0.0
    stale = links.issue(Path("b.html"))
    assert links.resolve(stale) is None


def test_the_oldest_links_go_first_beyond_the_bound() -> None:
    links = ReportLinks(max_links=2)
    first, second, third = (links.issue(Path(f"{n}.html")) for n in range(3))
    assert links.resolve(first) is None
    assert links.resolve(second) == Path("1.html") and links.resolve(third) == Path("2.html")


@pytest.mark.parametrize(
    ("line", "in_scope", "problem"),
    [
        ("{not json", True, "not JSON"),
        ('["a list"]', True, '"question" text'),
        ('{"question": "q"}', True, '"sources" must be a list'),
        ('{"question": "q", "sources": "a.md"}', True, '"sources" must be a list'),
        ('{"sources": ["a.md"]}', False, '"question" text'),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_number(
    tmp_path: Path, line: str, in_scope: bool, problem: str
) -> None:
    path = tmp_path / "questions.jsonl"
    good = '{"question": "q", "sources": ["a.md"]}'
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(BadQuestionsError) as caught:
        check_question_file(path, in_scope=in_scope)
    assert str(caught.value).startswith(f"{path}, line 3: ") and problem in str(caught.value)


def test_good_files_count_their_questions(tmp_path: Path) -> None:
    path = tmp_path / "out_of_scope.jsonl"
    path.write_text('{"question": "a"}\n{"question": "b"}\n', encoding="utf-8")
    assert check_question_file(path, in_scope=False) == 2


def test_the_summary_takes_the_answer_figures_and_leaves_out_what_a_run_lacks() -> None:
    result = {
        "config": "hybrid",
        "n_queries": 3,
        "hit@1": 0.6667,
        "hit@5": 1.0,
        "answers": {"answer_contains": 0.5, "refused_in_scope": 0.0, "citations_valid": 1.0},
        "details": {"run": {"datasets": [{"path": "/kb"}]}},
    }
    figures = summary(result)
    assert figures["config"] == "hybrid" and figures["hit@1"] == 0.6667
    assert figures["answer_contains"] == 0.5 and figures["answers_refused_in_scope"] == 0.0
    # No threshold configured: no refusal rates, shown as missing rather than as zero.
    assert figures["score_threshold"] is None and figures["refused_out_of_scope"] is None
    assert figures["datasets"] == ["/kb"]
