"""The keyword index on a real PostgreSQL (the testing kit's ``postgres_server``): the same schema
and statements as on SQLite give the same counts, ids and BM25 rankings through adds, replaces,
deletes and merges; concurrent writers to one collection lose nothing; snapshots are pinned."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from rag_pipeline import keyword_store as ks
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.synonyms import default_synonyms

NAMESPACE = "chroma/http/kb"
QUESTIONS = ["退货运费谁承担", "会员积分兑换", "帐号被锁定", "配送 偏远地区", "invoice title"]
WORDS = (
    "退货 运费 买家 承担 会员 积分 兑换 商品 账号 帐号 锁定 解锁 配送 偏远 地区 发票 抬头".split()
)


def _texts(rng: random.Random, count: int) -> list[str]:
    return [
        "".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
        + rng.choice(["", " invoice title", " shipping"])
        for _ in range(count)
    ]


def _ranking(index: KeywordIndex, **load: Any) -> list[list[tuple[str | None, float]]]:
    searcher = index.load(**load)
    return [[(h.document.id, round(h.bm25, 9)) for h in searcher.search(q, 10)] for q in QUESTIONS]


def test_postgresql_and_sqlite_agree_through_random_writes(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ks, "MERGE_FACTOR", 3)
    both = [
        KeywordIndex(postgres_server.fresh_database(), NAMESPACE),
        KeywordIndex(tmp_path / "keyword.sqlite", NAMESPACE),
    ]
    rng = random.Random(7)
    for _ in range(30):
        if rng.random() < 0.6:
            texts = _texts(rng, rng.randint(1, 15))
            ids = [f"c{rng.randint(0, 60)}" for _ in texts]
            docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(texts)]
            for index in both:
                index.add(docs, ids)
        else:
            gone = [f"c{rng.randint(0, 60)}" for _ in range(rng.randint(1, 5))]
            for index in both:
                index.delete(gone)
    postgres, sqlite = both
    assert postgres.count() == sqlite.count() > 0
    assert postgres.ids() == sqlite.ids()
    groups = default_synonyms()
    assert _ranking(postgres, synonyms=groups, question_weight=0.6) == _ranking(
        sqlite, synonyms=groups, question_weight=0.6
    )


def test_concurrent_writers_to_one_collection_lose_nothing(
    postgres_server: Any, tmp_path: Path
) -> None:
    url = postgres_server.fresh_database()
    rng = random.Random(3)
    batches = {
        worker: [(_texts(rng, 8), [f"{worker}-{b}-{i}" for i in range(8)]) for b in range(12)]
        for worker in ("a", "b", "c")
    }
    errors: list[BaseException] = []

    def write(worker: str) -> None:
        try:
            index = KeywordIndex(url, NAMESPACE)  # each writer its own connection
            for texts, ids in batches[worker]:
                index.add([Document(page_content=t) for t in texts], ids)
            index.delete([ids[0] for _, ids in batches[worker][:4]])
        except BaseException as e:  # reported below: a thread's exception is lost otherwise
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    shared = KeywordIndex(url, NAMESPACE)
    reference = KeywordIndex(tmp_path / "reference.sqlite", NAMESPACE)
    for worker in batches:
        for texts, ids in batches[worker]:
            reference.add([Document(page_content=t) for t in texts], ids)
        reference.delete([ids[0] for _, ids in batches[worker][:4]])
    assert shared.ids() == reference.ids()
    assert shared.count() == reference.count() == 3 * (12 * 8 - 4)
    # Same statistics, so the same scores; the order of tied chunks may differ.
    for got, want in zip(_ranking(shared), _ranking(reference), strict=True):
        assert sorted(score for _, score in got) == sorted(score for _, score in want)


def test_a_postgresql_searcher_is_pinned_to_its_snapshot(postgres_server: Any) -> None:
    index = KeywordIndex(postgres_server.fresh_database(), NAMESPACE)
    index.add([Document(page_content="运费8元"), Document(page_content="运费另计")], ["a", "b"])
    searcher = index.load()
    index.add([Document(page_content="运费全免")], ["late"])
    assert {h.document.id for h in searcher.search("运费", 5)} == {"a", "b"}
    assert searcher.visible(["a", "late"]) == {"a"}
    index.delete(["a"])
    assert {h.document.id for h in searcher.search("运费", 5)} == {"b"}
    assert index.move_to("chroma/http/renamed") == 2
    assert KeywordIndex(index.engine, "chroma/http/renamed").ids() == {"b", "late"}
    assert KeywordIndex(index.engine, NAMESPACE).count() == 0
