"""At 30,000 chunks a keyword search still reads only its own terms' posting lists and the rows
of the chunks it returns, never the whole index (short synthetic chunks keep the build quick)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from langchain_core.documents import Document

from rag_pipeline import keyword_store as ks
from rag_pipeline import state_db
from rag_pipeline.bm25 import KeywordSearcher, tokenize
from rag_pipeline.keyword_index import KeywordIndex

CHUNKS = 30_000
CHARACTERS = [chr(0x4E00 + n) for n in range(120)]  # 120 CJK code points


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> KeywordIndex:
    rng = random.Random(11)
    built = KeywordIndex(tmp_path_factory.mktemp("scale") / "keyword.sqlite", "scale/kb")
    for start in range(0, CHUNKS, 1000):
        texts = ["".join(rng.choices(CHARACTERS, k=8)) for _ in range(1000)]
        built.add([Document(page_content=t) for t in texts], [f"c{start + i}" for i in range(1000)])
    assert built.count() == CHUNKS
    return built


def test_a_search_at_30k_chunks_reads_its_own_posting_lists_only(
    index: KeywordIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    fetched: list[int] = []
    real_decode, real_rows = ks.decode, KeywordSearcher._rows

    def counting_decode(*columns: bytes) -> ks.PostingList:
        postings = real_decode(*columns)
        decoded.append(len(postings))
        return postings

    def counting_rows(self: KeywordSearcher, conn: Any, numbers: list[int]) -> Any:
        fetched.append(len(numbers))
        return real_rows(self, conn, numbers)

    monkeypatch.setattr(ks, "decode", counting_decode)
    monkeypatch.setattr(KeywordSearcher, "_rows", counting_rows)
    query = "".join(CHARACTERS[:4])
    hits = index.load().search(query, 10)
    assert len(hits) == 10
    with state_db.reading(index.engine) as conn:
        rows = conn.execute(
            ks.postings.select().with_only_columns(
                ks.postings.c.term, ks.postings.c.field, ks.postings.c.count
            )
        ).all()
    total = sum(count for _, _, count in rows)
    terms = set(tokenize(query))
    own = sum(count for term, field, count in rows if term in terms and field == ks.BODY)
    assert sum(decoded) == own
    assert own < total / 50, (own, total)
    assert sum(fetched) <= 64  # one batch of candidate rows for ten hits
