"""`rag eval` end to end on a tiny dataset whose right answers are known."""

import json
import os
from pathlib import Path

import pytest

from rag_pipeline.cli import main

PASSAGES = [
    ("p1", "退货政策", "签收后七天内可以申请无理由退货，商品需保持完好。"),
    ("p2", "运费标准", "订单满九十九元包邮，偏远地区运费另计。"),
    ("p3", "发票说明", "电子发票在确认收货后开具，可在订单详情下载。"),
    ("p4", "会员积分", "每消费一元得一个积分，一百积分抵扣一元。"),
]
QUERIES = [
    ("q1", "七天无理由退货", ["七天内可以申请无理由退货"], ["p1"]),
    ("q2", "满多少包邮", ["满九十九元包邮"], ["p2"]),
    ("q3", "电子发票在哪下载", ["订单详情下载"], ["p3"]),
    ("q4", "积分怎么抵扣", ["一百积分抵扣一元"], ["p4"]),
]


def _dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for pid, title, text in PASSAGES:
            f.write(
                json.dumps({"id": pid, "title": title, "text": text}, ensure_ascii=False) + "\n"
            )
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, question, answers, positives in QUERIES:
            row = {"id": qid, "question": question, "answers": answers, "positive_ids": positives}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def test_eval_json_on_a_known_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    data = _dataset(tmp_path / "tiny")
    args = ["eval", str(data), "--data-dir", str(tmp_path / "scratch"), "--json"]
    assert main([*args, "--compare", "dense,bm25,vanilla"]) == 0
    result = json.loads(capsys.readouterr().out)
    keys = {
        "n_queries",
        "hit@1",
        "hit@3",
        "hit@5",
        "hit@10",
        "mrr@10",
        "recall@10",
        "ndcg@10",
        "latency_ms_p50",
        "latency_ms_p95",
        "answer_recall",
    }
    assert keys <= set(result)
    assert result["n_queries"] == 4 and result["config"] == "hybrid"
    assert result["hit@1"] == 1.0 and result["answer_recall"] == 1.0
    assert set(result["compare"]) == {"dense", "bm25", "vanilla"}
    assert result["compare"]["bm25"]["hit@1"] == 1.0
    assert result["chunks"] == 4  # queries.jsonl was not indexed

    # second run: everything cached, nothing re-embedded, same figures
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["hit@1"] == result["hit@1"] and again["chunks"] == 4
    assert not os.path.exists(tmp_path / "scratch" / "corpus" / "tiny" / "queries.jsonl")


def test_eval_rejects_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), "--data-dir", str(tmp_path / "s")]) == 2


@pytest.mark.slow  # the real local model
def test_similarity_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["similarity", "快递多久能到", "会员积分可以抵扣现金。", "订单2到4天内送达。", "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "local:multilingual-e5-small-q4:384"
    assert [r["text"] for r in result["results"]][0] == "订单2到4天内送达。"


@pytest.mark.slow  # the real local model
def test_eval_compares_embedding_models_in_their_own_collections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    data = _dataset(tmp_path / "tiny")
    args = ["eval", str(data), "--data-dir", str(tmp_path / "s"), "--json", "--compare", "local"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compare"]["local"]["n_queries"] == 4
    assert result["compare"]["local"]["hit@1"] == 1.0
    assert main(["collections", "list", "--data-dir", str(tmp_path / "s" / "data"), "--json"]) == 0
    listed = capsys.readouterr().out
    assert "eval_default" in listed and "eval_local" in listed


def test_eval_reports_refusals_on_a_knowledge_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import write_corpus

    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.3")
    kb = write_corpus(tmp_path / "kb")
    rows = [
        {"question": "退货运费谁承担", "sources": ["returns.md"], "answer_contains": "买家承担"},
        {"question": "不满99元运费多少", "sources": ["shipping.txt"], "answer_contains": "8元"},
    ]
    (kb / "questions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (kb / "out_of_scope.jsonl").write_text(
        '{"question": "今天天气怎么样"}\n{"question": "股票明天会涨吗"}\n', encoding="utf-8"
    )
    (kb / ".ragignore").write_text("questions.jsonl\nout_of_scope.jsonl\n", encoding="utf-8")
    args = ["eval", str(kb), "--data-dir", str(tmp_path / "scratch"), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hit@1"] == 1.0 and result["chunks"] > 0
    assert result["score_threshold"] == 0.3 and result["n_out_of_scope"] == 2
    assert result["refused_in_scope"] == 0.0
    assert result["refused_out_of_scope"] == 1.0
    # The table says the same in words.
    assert main(args[:-1]) == 0
    assert "100.0% of 2 out-of-scope questions refused" in capsys.readouterr().out
