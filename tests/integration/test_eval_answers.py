"""`rag eval` answer figures end to end on a tiny QA set whose right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_pipeline.cli import main

# Each passage: a filler sentence, the answer sentence, another filler; the extract should
# quote the answer sentence alone, the top chunk all three.
PASSAGES = [
    ("p1", "退货政策", "本页说明售后规则。签收后七天内可以申请无理由退货。客服全天在线为您服务。"),
    ("p2", "运费标准", "配送由合作快递完成。订单满九十九元包邮，偏远地区另计。包裹通常两天送达。"),
    ("p3", "发票说明", "发票分电子和纸质两种。电子发票可在订单详情页下载。纸质发票另行邮寄。"),
    ("p4", "会员积分", "会员可以参加各种活动。每一百积分可以抵扣一元现金。积分每年年底清零。"),
]
QUERIES = [
    ("q1", "多少天内可以申请无理由退货", ["七天内可以申请无理由退货"], ["p1"]),
    ("q2", "订单满多少包邮", ["满九十九元包邮"], ["p2"]),
    ("q3", "电子发票在哪下载", ["订单详情页下载"], ["p3"]),
    ("q4", "多少积分可以抵扣一元", ["一百积分可以抵扣一元"], ["p4"]),
]


def _dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [{"id": p, "title": t, "text": x} for p, t, x in PASSAGES]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    queries = [
        {"id": q, "question": text, "answers": a, "positive_ids": pos}
        for q, text, a, pos in QUERIES
    ]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in queries), encoding="utf-8"
    )
    return folder


def test_eval_reports_answer_figures_and_the_top_chunk_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "main"))
    # Fake vectors score low; with no threshold every query is answered, as the figures expect.
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0")
    data = _dataset(tmp_path / "tiny")
    scratch = tmp_path / "scratch"
    args = ["eval", str(data), "--data-dir", str(scratch), "--compare", "top-chunk"]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    answers = result["answers"]
    assert answers["n_queries"] == 4
    assert answers["answer_contains"] == 1.0
    assert answers["citations_valid"] == 1.0 and answers["cites_relevant"] == 1.0
    assert answers["refused_in_scope"] == 0.0
    top = result["compare"]["top-chunk"]
    assert top["hit@1"] == result["hit@1"]  # the same retrieval
    assert top["answers"]["answer_contains"] == 1.0
    # The extract quotes one sentence of three: well under the chunk's length.
    assert answers["answer_chars_mean"] < 0.6 * top["answers"]["answer_chars_mean"]
    assert answers["answer_chars_p95"] <= top["answers"]["answer_chars_p95"]
    # Progress went to stderr, one stage after another.
    assert "eval hybrid answers: 4/4" in captured.err
    # Vectors were cached in the configured data folder, not in the scratch one.
    assert any((tmp_path / "main" / "embedding-cache").rglob("*"))
    assert not (scratch / "data" / "embedding-cache").exists()

    assert main(args) == 0
    table = capsys.readouterr().out
    assert "answer_contains" in table and "top-chunk" in table


def test_eval_without_gold_answers_has_no_answer_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("签收后七天内可以申请无理由退货。", encoding="utf-8")
    (folder / ".ragignore").write_text("questions.jsonl\n", encoding="utf-8")
    (folder / "questions.jsonl").write_text(
        json.dumps({"question": "能退货吗", "sources": ["a.md"]}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    assert main(["eval", str(folder), "--data-dir", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "answers" not in result and result["hit@1"] == 1.0
