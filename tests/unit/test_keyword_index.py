"""The on-disk keyword index: BM25 scores equal a hand computation and the in-memory oracle (the
earlier implementation, ``tests/bm25_oracle.py``) through adds, replaces, deletes and segment
merges; searches read only their own terms' posting lists; snapshots are pinned; synonym changes
re-tokenise only the chunks they touch; the one-table layout of earlier versions migrates."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from rag_pipeline import keyword_store as ks
from rag_pipeline import state_db
from rag_pipeline.bm25 import K1, B, KeywordSearcher, tokenize
from rag_pipeline.indexing import ingest
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.synonyms import Synonyms, default_synonyms
from tests.bm25_oracle import oracle
from tests.conftest import CORPUS
from tests.helpers import fake_settings

NAMESPACE = "chroma/persistent/kb"


def _index(tmp_path: Path, name: str = "keyword.sqlite") -> KeywordIndex:
    return KeywordIndex(tmp_path / name, NAMESPACE)


def _same_ranking(
    found: KeywordSearcher, expected: Any, queries: list[str], k: int = 8, **search: Any
) -> None:
    """Equal scores and coverage rank for rank (the oracle sums in float32), and the same
    chunks except within a tie (the oracle breaks ties by id, the index by insertion order)."""
    for query in queries:
        got = found.search(query, k, **search)
        want = expected.search(query, k, **search)
        assert [h.bm25 for h in got] == pytest.approx([h.bm25 for h in want], rel=1e-5), query
        assert [h.coverage for h in got] == pytest.approx([h.coverage for h in want], rel=1e-5)
        cut = want[-1].bm25 if want else None
        for hit in got:
            if cut is not None and hit.bm25 == pytest.approx(cut, rel=1e-5):
                continue  # a tie at the cut may keep other members of the tie
            tied = {w.document.id for w in want if w.bm25 == pytest.approx(hit.bm25, rel=1e-5)}
            assert hit.document.id in tied, (query, hit.document.id)


def test_scores_equal_the_formula_computed_by_hand(tmp_path: Path) -> None:
    index = _index(tmp_path)
    texts = ["apple apple banana", "banana cherry", "cherry"]
    index.add([Document(page_content=t) for t in texts], ["a", "b", "c"])
    searcher = index.load()
    # N = 3, lengths 3, 2, 1 (average 2); "apple" is in one chunk, twice.
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    tf, length = 2, 3
    expected = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / 2))
    (hit,) = searcher.search("apple", 5)
    assert hit.document.id == "a"
    assert hit.bm25 == pytest.approx(expected)
    assert hit.coverage == pytest.approx(1.0)
    # "cherry" is in two chunks: the shorter one scores higher; "durian" is in none.
    cherry = searcher.search("cherry durian", 5)
    assert [h.document.id for h in cherry] == ["c", "b"]
    idf_durian = math.log(1 + (3 + 0.5) / 0.5)
    idf_cherry = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    assert cherry[0].coverage == pytest.approx(idf_cherry / (idf_cherry + idf_durian))
    assert searcher.idf("cherry") == pytest.approx(idf_cherry)


@pytest.fixture(scope="module")
def sample_chunks(tmp_path_factory: pytest.TempPathFactory) -> list[Document]:
    """The sample corpus's chunks, as ingest makes them (fake embeddings)."""
    data = tmp_path_factory.mktemp("sample") / "data"
    settings = fake_settings(data)
    ingest([CORPUS], settings)
    index = KeywordIndex(settings.state_location, "probe")
    chunks = []
    with state_db.reading(index.engine) as conn:
        rows = conn.execute(ks.docs.select().order_by(ks.docs.c.docno)).mappings().all()
    for row in rows:
        chunks.append(
            Document(
                id=row["id"], page_content=row["content"], metadata=json.loads(row["metadata"])
            )
        )
    assert len(chunks) > 250
    return chunks


QUESTIONS = [
    "退货运费谁承担",
    "RP-2024-07 什么时候生效",
    "会员积分怎么兑换",
    "优惠卷能叠加吗",
    "帐号被锁定怎么办",
    "How do I reset my password",
    "发票 抬头 修改",
    "配送 偏远地区 几天",
    "不存在的词汇 量子纠缠",
]


@pytest.mark.parametrize("question_weight", [0.0, 0.6])
def test_scores_equal_the_oracle_on_the_sample_corpus(
    tmp_path: Path, sample_chunks: list[Document], question_weight: float
) -> None:
    groups = default_synonyms()
    index = _index(tmp_path)
    ids = [d.id or "" for d in sample_chunks]
    index.add(sample_chunks, ids)
    searcher = index.load(synonyms=groups, question_weight=question_weight)
    expected = oracle(sample_chunks, ids, synonyms=groups, question_weight=question_weight)
    _same_ranking(searcher, expected, QUESTIONS)
    _same_ranking(searcher, expected, QUESTIONS[:3], where={"doc_type": "faq"})


def test_random_adds_replaces_and_deletes_stay_equal_to_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_chunks: list[Document]
) -> None:
    # Small merge factor: merges of every level and rewrites of mostly-dead segments happen.
    monkeypatch.setattr(ks, "MERGE_FACTOR", 2)
    rng = random.Random(13)
    index = _index(tmp_path)
    live: dict[str, Document] = {}
    pool = sample_chunks[:120]
    for step in range(40):
        action = rng.random()
        if action < 0.55 or not live:
            picked = rng.sample(pool, rng.randint(1, 12))
            docs = []
            for doc in picked:
                text = doc.page_content if rng.random() < 0.7 else doc.page_content[::-1]
                docs.append(Document(page_content=text, metadata=doc.metadata))
            ids = [f"c{rng.randint(0, 80)}" for _ in docs]
            index.add(docs, ids)
            for doc, id_ in zip(docs, ids, strict=True):
                live[id_] = doc
        else:
            gone = rng.sample(sorted(live), min(len(live), rng.randint(1, 6)))
            index.delete([*gone, "never-stored"])
            for id_ in gone:
                del live[id_]
        if step % 8 == 7 or step == 39:
            assert index.count() == len(live)
            assert index.ids() == set(live)
            searcher = index.load()
            expected = oracle(list(live.values()), list(live))
            _same_ranking(searcher, expected, QUESTIONS, k=10)
    with state_db.reading(index.engine) as conn:
        levels = conn.execute(ks.segments.select()).mappings().all()
    assert max(r["level"] for r in levels) >= 2  # merges of merged segments happened


def test_a_search_reads_only_its_own_terms_posting_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_chunks: list[Document]
) -> None:
    index = _index(tmp_path)
    index.add(sample_chunks, [d.id or "" for d in sample_chunks])
    searcher = index.load()
    decoded: list[int] = []
    real_decode = ks.decode

    def counting(*columns: bytes) -> ks.PostingList:
        postings = real_decode(*columns)
        decoded.append(len(postings))
        return postings

    monkeypatch.setattr(ks, "decode", counting)
    query = "退货运费谁承担"
    terms = set(tokenize(query))
    searcher.search(query, 5)
    with state_db.reading(index.engine) as conn:
        rows = conn.execute(ks.postings.select()).mappings().all()
    total = sum(r["count"] for r in rows)
    own = sum(r["count"] for r in rows if r["term"] in terms and r["field"] == ks.BODY)
    assert sum(decoded) == own
    assert own < total / 20
    # The posting rows are found through the term index, not by scanning the table.
    with sqlite3.connect(str(index.engine.url.database)) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT term, live, docnos, freqs, lengths FROM keyword_postings "
            "WHERE namespace = ? AND field = ? AND term IN (?, ?)",
            (index.id, ks.BODY, "退", "退货"),
        ).fetchall()
    assert any("ix_keyword_postings_term" in str(step) for step in plan), plan


def test_a_searcher_is_pinned_to_the_chunks_stored_when_it_was_made(tmp_path: Path) -> None:
    index = _index(tmp_path)
    index.add([Document(page_content="运费8元"), Document(page_content="运费另计")], ["a", "b"])
    searcher = index.load()
    index.add([Document(page_content="运费全免")], ["late"])
    index.add([Document(page_content="运费改为10元")], ["a"])  # replaced: a new chunk number
    assert {h.document.id for h in searcher.search("运费", 5)} == {"b"}
    assert searcher.visible(["a", "b", "late"]) == {"b"}
    index.delete(["b"])
    assert searcher.search("运费", 5) == []
    assert {h.document.id for h in index.load().search("运费", 5)} == {"a", "late"}


def test_changed_synonyms_retokenise_only_the_chunks_holding_a_changed_variant(
    tmp_path: Path,
) -> None:
    texts = {"a": "帐号被锁定后30分钟自动解锁。", "b": "运费8元。", "c": "优惠卷可以叠加。"}
    docs = [Document(page_content=t) for t in texts.values()]
    index = _index(tmp_path)
    index.add(docs, list(texts))
    before = Synonyms({"帐号": "账号"})
    assert index.ensure_synonyms(before) == 1  # only "a" holds 帐号
    assert index.ensure_synonyms(before) == 0  # nothing changed: nothing read again
    after = Synonyms({"帐号": "账号", "优惠卷": "优惠券"})
    assert index.ensure_synonyms(after) == 1  # only "c" holds the new variant
    fresh = _index(tmp_path, "fresh.sqlite")
    fresh.add(docs, list(texts))
    for query in ["账号被锁定", "优惠券叠加", "运费"]:
        got = index.load(synonyms=after).search(query, 3)
        want = fresh.load(synonyms=after).search(query, 3)
        assert [(h.document.id, round(h.bm25, 6)) for h in got] == [
            (h.document.id, round(h.bm25, 6)) for h in want
        ]
    assert index.load(synonyms=after).search("优惠券", 1)[0].coverage == pytest.approx(1.0)


def test_the_one_table_layout_of_earlier_versions_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "keyword.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE keyword_chunks (namespace TEXT NOT NULL, id TEXT NOT NULL, "
            "content TEXT NOT NULL, metadata TEXT NOT NULL, terms TEXT NOT NULL, "
            "PRIMARY KEY (namespace, id))"
        )
        rows = [
            (
                f"{NAMESPACE}#tokens-v3",
                "a",
                "订单满99元包邮。",
                json.dumps({"source": "s.md"}),
                "{}",
            ),
            (f"{NAMESPACE}#tokens-v3", "b", "退货运费由买家承担。", "{}", "{}"),
            ("chroma/persistent/other#tokens-v3", "x", "别的集合", "{}", "{}"),
        ]
        db.executemany("INSERT INTO keyword_chunks VALUES (?, ?, ?, ?, ?)", rows)
    index = KeywordIndex(path, NAMESPACE)
    assert index.ids() == {"a", "b"}
    (hit,) = index.load().search("包邮", 5)
    assert hit.document.id == "a" and hit.document.metadata == {"source": "s.md"}
    with sqlite3.connect(path) as db:
        left = db.execute("SELECT namespace FROM keyword_chunks").fetchall()
    assert left == [("chroma/persistent/other#tokens-v3",)]  # other collections wait for theirs
    KeywordIndex(path, "chroma/persistent/other")
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "keyword_chunks" not in tables


def test_a_content_filter_is_applied_before_the_cut_to_k(tmp_path: Path) -> None:
    index = _index(tmp_path)
    texts = [f"运费规则第{n}条：{'偏远地区' if n % 5 == 0 else '普通地区'}" for n in range(30)]
    index.add([Document(page_content=t) for t in texts], [f"r{n}" for n in range(30)])
    hits = index.load().search("运费规则", 3, accept=lambda d: "偏远" in d.page_content)
    assert len(hits) == 3 and all("偏远" in h.document.page_content for h in hits)


def test_recount_mends_rows_changed_behind_the_index(
    tmp_path: Path, sample_chunks: list[Document]
) -> None:
    index = _index(tmp_path)
    chunks = sample_chunks[:60]
    index.add(chunks, [d.id or "" for d in chunks])
    assert index.statistics_agree()
    with sqlite3.connect(str(index.engine.url.database)) as db:
        gone = {r[0] for r in db.execute("SELECT id FROM keyword_docs LIMIT 5")}
        db.execute("DELETE FROM keyword_docs WHERE id IN (SELECT id FROM keyword_docs LIMIT 5)")
    assert not index.statistics_agree()
    index.recount()
    assert index.statistics_agree()
    kept = [d for d in chunks if d.id not in gone]
    _same_ranking(index.load(), oracle(kept, [d.id or "" for d in kept]), QUESTIONS)
