"""FAQ matching through the real ingest, retriever and chain, with fake embeddings: a typo'd
question is answered from the FAQ entry instead of being refused, a user synonym file beside
the documents is picked up, a bad one is a clear error, and the noisy question file is part
of ``rag eval`` on a knowledge base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_pipeline.assistant import Assistant
from rag_pipeline.chain import faq_direct_answer
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.evaluation import load_eval_set
from rag_pipeline.indexing import ingest
from tests.conftest import REPO
from tests.helpers import fake_settings, write_corpus

FILES = {
    "faq.csv": (
        "question,answer,alternatives\n"
        "优惠券可以叠加使用吗？,平台券可以和店铺券叠加，一个订单只能用一张平台券。,两张券能一起用吗\n"
        "退货运费谁出？,质量问题由商家承担运费，无理由退货由买家承担。,退货要自己付邮费吗\n"
        "电子发票怎么开？,在订单详情页点击申请开票，24小时内开具。,怎么开票\n"
    ),
    "shipping.md": "# 配送\n\n订单满99元包邮，不满99元收取运费8元。偏远地区运费另计。\n",
    ".ragignore": "synonyms.txt\n",
}
TYPO = "优惠卷可以叠加使用吗"


def _assistant(tmp_path: Path, kb: Path, **retriever: object) -> Assistant:
    settings = fake_settings(
        tmp_path / "data",
        llm={"provider": "extractive"},
        retriever={"score_threshold": 0.5, **retriever},
    )
    report = ingest([kb], settings)
    assert not report.files_failed
    return Assistant.from_settings(settings)


def test_a_typo_question_is_answered_from_the_faq(tmp_path: Path) -> None:
    kb = write_corpus(tmp_path / "kb", FILES)
    assistant = _assistant(tmp_path, kb)
    answer = assistant.ask(TYPO)
    assert not answer.refused
    # The near-exact FAQ match (after 优惠卷 -> 优惠券) answers without the chat model.
    assert answer.answer == "平台券可以和店铺券叠加，一个订单只能用一张平台券。 [1]"
    assert answer.sources[0].source == "faq.csv"
    correct = assistant.ask("优惠券可以叠加使用吗")
    assert correct.answer == answer.answer
    # The keyword side sees the same words for both spellings.
    (typo_hit,) = [s for s in assistant.search(TYPO) if s.source == "faq.csv"][:1]
    assert typo_hit.title == "优惠券可以叠加使用吗？"


def test_without_synonyms_the_typo_is_not_a_near_exact_match(tmp_path: Path) -> None:
    kb = write_corpus(tmp_path / "kb", FILES)
    on = _assistant(tmp_path / "on", kb)
    on_docs = on.retriever.invoke(TYPO)
    off = _assistant(tmp_path / "off", kb, default_synonyms=False)
    off_docs = off.retriever.invoke(TYPO)
    assert off_docs and on_docs
    assert on_docs[0].metadata["keyword_coverage"] > off_docs[0].metadata["keyword_coverage"]
    assert on_docs[0].metadata["score"] > off_docs[0].metadata["score"]
    # The near-exact FAQ match needs the synonyms (the extractive answerer may still quote
    # the FAQ entry, by its own looser match).
    assert faq_direct_answer(TYPO, off_docs, 0.8, off.synonyms) is None
    assert faq_direct_answer(TYPO, on_docs, 0.8, on.synonyms) is not None


def test_a_synonym_file_at_the_top_of_the_corpus_is_applied(tmp_path: Path) -> None:
    kb = write_corpus(tmp_path / "kb", FILES)
    (kb / "synonyms.txt").write_text("# our own words\n发票 小票单\n", encoding="utf-8")
    assistant = _assistant(tmp_path, kb)
    answer = assistant.ask("电子小票单怎么开？")
    assert answer.answer == "在订单详情页点击申请开票，24小时内开具。 [1]"


def test_a_bad_synonym_file_is_a_clear_error(tmp_path: Path) -> None:
    kb = write_corpus(tmp_path / "kb", FILES)
    bad = tmp_path / "words.txt"
    bad.write_text("发票\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"words\.txt, line 1"):
        _assistant(tmp_path, kb, synonyms=bad)


def test_rag_eval_reads_the_noisy_questions_of_a_knowledge_base() -> None:
    corpus = REPO / "corpus"
    noisy = [json.loads(line) for line in (corpus / "questions_noisy.jsonl").open(encoding="utf-8")]
    clean = [json.loads(line) for line in (corpus / "questions.jsonl").open(encoding="utf-8")]
    assert len(noisy) >= 40
    assert all(set(r) == set(clean[0]) for r in noisy)
    known = {s for r in clean for s in r["sources"]}
    assert all(set(r["sources"]) <= known for r in noisy)
    both = load_eval_set([corpus])
    assert len(both.queries) == len(clean) + len(noisy)
    assert len({q.id for q in both.queries}) == len(both.queries)
    alone = load_eval_set([corpus / "questions_noisy.jsonl"])
    assert [q.question for q in alone.queries] == [r["question"] for r in noisy]
    assert alone.corpus_dirs == [corpus.resolve()] and alone.out_of_scope
