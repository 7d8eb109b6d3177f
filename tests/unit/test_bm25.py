"""The keyword (BM25) index: tokens, the SQLite index per namespace, search and coverage, and
the mirror that keeps it on the vector store's ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from rag_pipeline.bm25 import TOKENIZER_VERSION, tokenize
from rag_pipeline.embeddings import HashingEmbeddings
from rag_pipeline.keyword_index import KeywordIndex, KeywordMirror

DOCS = [
    Document(
        page_content="退货政策编号 RP-2024-07，签收后7天内可退货。", metadata={"source": "r.md"}
    ),
    Document(page_content="订单满99元包邮，不满99元收取运费8元。", metadata={"source": "s.txt"}),
    Document(
        page_content="会员积分可以抵扣现金，100积分抵1元。", metadata={"source": "m.md", "page": 2}
    ),
    Document(
        page_content="We ship to 30 countries; shipping takes a week.", metadata={"source": "en.md"}
    ),
]
IDS = ["r", "s", "m", "e"]


@pytest.fixture
def index(tmp_path: Path) -> KeywordIndex:
    index = KeywordIndex(tmp_path / "keyword.sqlite", "chroma/persistent/kb")
    index.add(DOCS, IDS)
    return index


def test_chinese_gives_unigrams_and_bigrams() -> None:
    assert tokenize("运费") == ["运", "费", "运费"]
    assert sorted(tokenize("包邮运费")) == sorted(["包", "邮", "运", "费", "包邮", "邮运", "运费"])


def test_function_words_split_and_vanish() -> None:
    tokens = tokenize("运费是什么")
    assert "是" not in tokens and "什么" not in tokens and "费是" not in tokens
    assert tokenize("是什么") == []


def test_codes_stay_whole_and_give_their_parts() -> None:
    tokens = tokenize("RP-2024-07 什么时候生效")
    assert "rp-2024-07" in tokens  # lower-cased, whole
    assert {"rp", "2024", "07"} <= set(tokens)


def test_english_stop_words_are_dropped() -> None:
    assert tokenize("How do I return the shoes") == ["return", "shoes"]


def test_traditional_characters_are_tokens_too() -> None:
    assert "運費" in tokenize("運費多少")


def test_index_counts_ids_and_namespaces(tmp_path: Path, index: KeywordIndex) -> None:
    assert index.count() == 4 and index.ids() == set(IDS)
    assert index.namespace.endswith(f"#tokens-v{TOKENIZER_VERSION}")
    other = KeywordIndex(tmp_path / "keyword.sqlite", "chroma/persistent/other")
    assert other.count() == 0  # same file, another collection
    index.delete(["s", "nope"])
    assert index.ids() == {"r", "m", "e"}
    assert index.clear() == 3 and index.count() == 0


def test_adding_an_id_again_replaces_it(index: KeywordIndex) -> None:
    index.add([Document(page_content="全新的内容：发票", metadata={})], ["s"])
    assert index.count() == 4
    hits = index.load().search("发票", 5)
    assert [h.document.id for h in hits] == ["s"]
    assert index.load().search("包邮", 5) == []


def test_move_to_hands_every_chunk_over(tmp_path: Path, index: KeywordIndex) -> None:
    leftover = KeywordIndex(tmp_path / "keyword.sqlite", "chroma/persistent/new")
    leftover.add([Document(page_content="旧的", metadata={})], ["old"])
    assert index.move_to("chroma/persistent/new") == 4
    assert KeywordIndex(tmp_path / "keyword.sqlite", "chroma/persistent/kb").count() == 0
    moved = KeywordIndex(tmp_path / "keyword.sqlite", "chroma/persistent/new")
    assert moved.ids() == set(IDS)  # the stale row went first
    assert index.ids() == set(IDS)  # the object follows its rows


def test_search_ranks_the_document_with_the_exact_code_first(index: KeywordIndex) -> None:
    hits = index.load().search("RP-2024-07 是什么", 3)
    assert hits[0].document.id == "r"
    assert hits[0].document.metadata == {"source": "r.md"}
    # every query term occurs in it; float32 sums may land a hair above 1
    assert hits[0].bm25 > 0 and hits[0].coverage == pytest.approx(1.0)
    assert all(0 < h.coverage <= 1 + 1e-6 for h in hits)


def test_search_returns_only_matching_chunks_best_first(index: KeywordIndex) -> None:
    hits = index.load().search("不满99元运费", 5)
    assert hits[0].document.id == "s"
    scores = [h.bm25 for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.bm25 > 0 for h in hits)


def test_coverage_is_the_share_of_the_query_found(index: KeywordIndex) -> None:
    searcher = index.load()
    full = searcher.search("运费", 1)[0]
    assert full.coverage == pytest.approx(1.0)
    partial = searcher.search("运费 股票", 1)[0]
    assert partial.document.id == "s" and 0 < partial.coverage < 1
    assert searcher.search("股票", 5) == []


def test_rarer_terms_weigh_more(index: KeywordIndex) -> None:
    searcher = index.load()
    assert searcher.idf("积分") > searcher.idf("元")  # 元 occurs in two chunks


def test_search_with_a_metadata_filter_and_k(index: KeywordIndex) -> None:
    searcher = index.load()
    assert [h.document.id for h in searcher.search("元", 5, where={"page": 2})] == ["m"]
    assert len(searcher.search("元", 1)) == 1
    assert searcher.search("", 5) == []


def test_an_empty_index_finds_nothing(tmp_path: Path) -> None:
    assert KeywordIndex(tmp_path / "k.sqlite", "x").load().search("运费", 5) == []


def test_mirror_writes_and_deletes_on_both_stores(tmp_path: Path) -> None:
    keyword = KeywordIndex(tmp_path / "k.sqlite", "memory/kb")
    inner = InMemoryVectorStore(HashingEmbeddings(64))
    mirror = KeywordMirror(inner, keyword)
    ids = mirror.add_documents(DOCS[:2], ids=["r", "s"])
    assert ids == ["r", "s"] and keyword.ids() == {"r", "s"}
    assert [d.id for d in mirror.get_by_ids(["s"])] == ["s"]
    assert mirror.embeddings is inner.embeddings
    mirror.add_texts(["发票在订单详情下载"], metadatas=[{"source": "i.md"}], ids=["i"])
    assert keyword.ids() == {"r", "s", "i"}
    mirror.delete(["r"])
    assert keyword.ids() == {"s", "i"} and inner.get_by_ids(["r"]) == []
    with pytest.raises(NotImplementedError):
        KeywordMirror.from_texts(["x"], HashingEmbeddings(8))
