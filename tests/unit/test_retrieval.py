"""Retrievers: dense (similarity / MMR, threshold), keyword (BM25 with filters), hybrid fusion
and its refusal gate, and ``build_retriever`` choosing among them from settings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever
from langchain_core.documents import Document

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import HashingEmbeddings
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.retrieval import (
    DenseRetriever,
    HybridRetriever,
    KeywordRetriever,
    build_retriever,
    load_keyword_index,
    maximal_marginal_relevance,
)
from rag_pipeline.stores.base import Hit, Record, VectorBackend
from rag_pipeline.stores.filters import check_where, matches, text_matches


class ScriptedBackend(VectorBackend):
    """A backend whose search returns fixed hits (best first), filtered like a real one."""

    def __init__(self, hits: list[Hit], namespace: str = "test/kb") -> None:
        self.hits = hits
        self.name, self.namespace, self.location = "kb", namespace, "test"
        self.searches: list[dict[str, Any]] = []

    def search(
        self,
        vector: list[float],
        k: int,
        where: Any = None,
        *,
        with_vectors: bool = False,
        where_document: Any = None,
    ) -> list[Hit]:
        self.searches.append({"k": k, "where": where, "where_document": where_document})
        found = [
            Hit(
                Document(
                    id=h.document.id,
                    page_content=h.document.page_content,
                    metadata=dict(h.document.metadata),
                ),
                h.relevance,
                h.vector if with_vectors else None,
            )
            for h in self.hits
            if matches(h.document.metadata, check_where(where))
            and text_matches(h.document.page_content, where_document)
        ]
        return found[:k]

    def count(self) -> int:
        return len(self.hits)

    def scan(self, batch_size: int = 500) -> Iterator[list[Record]]:
        records = [
            Record(
                h.document.id or "", h.document.page_content, h.document.metadata, h.vector or []
            )
            for h in self.hits
        ]
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]

    def get(self, ids: list[str]) -> list[Document]:
        return [h.document for h in self.hits if h.document.id in ids]

    # The rest of the contract is not used by the retrievers.

    def stored_fingerprint(self) -> str | None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def create(self, settings: Settings, fingerprint: str) -> None:
        raise NotImplementedError

    def attach(self) -> None:
        raise NotImplementedError

    def sources(self) -> dict[str, int]:
        raise NotImplementedError

    def list_collections(self) -> list[str]:
        raise NotImplementedError

    def peek(self, n: int) -> list[Document]:
        raise NotImplementedError

    def rename(self, new_name: str) -> None:
        raise NotImplementedError

    def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError


def _hit(id_: str, relevance: float, vector: list[float] | None = None, **meta: Any) -> Hit:
    return Hit(Document(id=id_, page_content=f"chunk {id_}", metadata=meta), relevance, vector)


def test_mmr_first_pick_is_the_most_relevant_then_diversity() -> None:
    query = [1.0, 0.0]
    candidates = [[1.0, 0.0], [0.99, 0.14], [0.6, 0.8]]
    assert maximal_marginal_relevance(query, candidates, lambda_mult=0.3, k=2) == [0, 2]
    assert maximal_marginal_relevance(query, candidates, lambda_mult=1.0, k=3) == [0, 1, 2]


def test_mmr_edge_cases() -> None:
    assert maximal_marginal_relevance([1, 0], [], lambda_mult=0.5, k=3) == []
    assert maximal_marginal_relevance([1, 0], [[1, 0]], lambda_mult=0.5, k=0) == []
    assert maximal_marginal_relevance([1, 0], [[0, 1], [1, 0]], lambda_mult=0.5, k=5) == [1, 0]
    # unnormalised vectors: cosine, not dot product
    assert maximal_marginal_relevance([1, 0], [[5, 5], [0.1, 0]], lambda_mult=1.0, k=1) == [1]


def test_dense_similarity_sets_score_and_applies_the_threshold() -> None:
    store = ScriptedBackend([_hit("a", 0.93), _hit("b", 0.81), _hit("c", 0.42)])
    retriever = DenseRetriever(
        store=store, embeddings=HashingEmbeddings(8), k=3, score_threshold=0.8
    )
    docs = retriever.invoke("运费")
    assert [d.id for d in docs] == ["a", "b"]
    assert [d.metadata["score"] for d in docs] == [0.93, 0.81]
    assert store.searches == [{"k": 3, "where": None, "where_document": None}]


def test_dense_passes_filters_to_the_store() -> None:
    store = ScriptedBackend([_hit("a", 0.9, source="x.md"), _hit("b", 0.8, source="y.md")])
    retriever = DenseRetriever(
        store=store,
        embeddings=HashingEmbeddings(8),
        filter={"source": "y.md"},
        where_document={"$contains": "chunk"},
    )
    assert [d.id for d in retriever.invoke("q")] == ["b"]
    assert store.searches[0]["where"] == {"source": "y.md"}
    assert store.searches[0]["where_document"] == {"$contains": "chunk"}


def test_dense_mmr_fetches_more_and_reorders_for_diversity() -> None:
    embeddings = HashingEmbeddings(8)
    query = embeddings.embed_query("q")
    near_duplicate = [x + 1e-3 for x in query]
    other = [-x for x in query]
    store = ScriptedBackend(
        [_hit("a", 0.99, query), _hit("b", 0.98, near_duplicate), _hit("c", 0.5, other)]
    )
    retriever = DenseRetriever(
        store=store, embeddings=embeddings, k=2, search_type="mmr", fetch_k=10, lambda_mult=0.1
    )
    assert [d.id for d in retriever.invoke("q")] == ["a", "c"]
    assert store.searches[0]["k"] == 10


def test_keyword_side_filters_on_content(tmp_path: Path) -> None:
    index = KeywordIndex(tmp_path / "keyword.sqlite", "ns")
    docs = [
        Document(page_content="退货运费由买家承担。", metadata={"source": "returns.md"}),
        Document(page_content="退货退款需要3个工作日，退货地址见订单。", metadata={"source": "r2"}),
        Document(page_content="订单满99元包邮，运费8元。", metadata={"source": "shipping.txt"}),
        Document(page_content="退货时请保留包装。", metadata={"source": "returns.md"}),
    ]
    index.add(docs, ["a", "b", "c", "d"])
    searcher = index.load()
    unfiltered = KeywordRetriever(searcher=searcher, k=2).invoke("退货")
    assert [d.id for d in unfiltered][0] == "b"  # the best BM25 hit has no 运费
    hits = KeywordRetriever(searcher=searcher, k=2, where_document={"$contains": "运费"}).invoke(
        "退货"
    )
    assert [d.id for d in hits] == ["a"]  # only chunks with 运费 that match the query
    hits = KeywordRetriever(
        searcher=searcher,
        k=5,
        filter={"source": "returns.md"},
        where_document={"$not_contains": "运费"},
    ).invoke("退货")
    assert [d.id for d in hits] == ["d"]


def _keyword(tmp_path: Path, texts: dict[str, str]) -> KeywordRetriever:
    index = KeywordIndex(tmp_path / "keyword.sqlite", "test/kb")
    index.add(
        [Document(page_content=t, metadata={"source": i}) for i, t in texts.items()], list(texts)
    )
    return KeywordRetriever(searcher=index.load(), k=4)


def test_keyword_retriever_reports_bm25_and_coverage(tmp_path: Path) -> None:
    retriever = _keyword(tmp_path, {"a": "退货运费由买家承担。", "b": "会员积分规则。"})
    docs = retriever.invoke("退货运费")
    assert [d.id for d in docs] == ["a"]
    assert docs[0].metadata["keyword_coverage"] == pytest.approx(1.0)
    assert docs[0].metadata["bm25"] > 0


def _hybrid(
    tmp_path: Path, dense: list[Hit], texts: dict[str, str], **kwargs: Any
) -> HybridRetriever:
    store = ScriptedBackend(dense)
    return HybridRetriever(
        dense=DenseRetriever(store=store, embeddings=HashingEmbeddings(8), k=10),
        keyword=_keyword(tmp_path, texts),
        k=kwargs.pop("k", 3),
        **kwargs,
    )


TEXTS = {"a": "退货政策", "b": "发票编号 FP-2024-03 的说明", "c": "会员积分"}


def test_hybrid_puts_the_exact_keyword_match_first(tmp_path: Path) -> None:
    dense = [_hit("a", 0.9), _hit("c", 0.88), _hit("b", 0.87)]
    docs = _hybrid(tmp_path, dense, TEXTS).invoke("FP-2024-03 是什么")
    assert docs[0].id == "b"
    assert {d.id for d in docs} == {"a", "b", "c"}  # each chunk once
    assert docs[0].metadata["keyword_coverage"] > 0 and docs[0].metadata["dense_relevance"] == 0.87


def test_hybrid_relevance_is_dense_plus_gated_coverage(tmp_path: Path) -> None:
    retriever = _hybrid(tmp_path, [], TEXTS, gate_keyword_weight=0.25)
    assert retriever.relevance(0.8, 1.0) == pytest.approx((0.8 + 0.25) / 1.25)
    assert retriever.relevance(0.8, 0.0) == pytest.approx(0.8 / 1.25)


def test_hybrid_refuses_when_the_best_relevance_is_below_the_threshold(tmp_path: Path) -> None:
    dense = [_hit("a", 0.85), _hit("c", 0.84)]
    gated = _hybrid(tmp_path, dense, TEXTS, score_threshold=0.8)
    assert gated.invoke("今天天气怎么样") == []  # no keyword coverage: 0.85 / 1.2 < 0.8
    assert [d.id for d in gated.invoke("退货政策")][:1] == ["a"]  # coverage lifts it over


def test_scored_gives_the_relevance_the_threshold_is_compared_with(tmp_path: Path) -> None:
    store = ScriptedBackend([_hit("a", 0.79123), _hit("b", 0.5)])
    dense = DenseRetriever(store=store, embeddings=HashingEmbeddings(8), k=2, score_threshold=0.8)
    assert dense.scored("运费") == (0.79123, [])  # the best relevance before the threshold
    hits = [_hit("a", 0.85), _hit("c", 0.84)]
    gated = _hybrid(tmp_path, hits, TEXTS, score_threshold=0.8)
    for question in ("今天天气怎么样", "退货政策"):
        gate, docs = gated.scored(question)
        assert (gate < 0.8) == (docs == []) == (gated.invoke(question) == [])
    assert gated.scored("今天天气怎么样")[0] == pytest.approx(0.85 / 1.2)  # no coverage
    # Ungated, the same gate value comes with the chunks.
    gate, docs = _hybrid(tmp_path, hits, TEXTS).scored("今天天气怎么样")
    assert gate == pytest.approx(0.85 / 1.2) and [d.id for d in docs][:1] == ["a"]


def test_hybrid_keeps_k(tmp_path: Path) -> None:
    dense = [_hit("a", 0.9), _hit("b", 0.8), _hit("c", 0.7)]
    assert len(_hybrid(tmp_path, dense, TEXTS, k=2).invoke("退货")) == 2


def test_hybrid_rrf_fusion(tmp_path: Path) -> None:
    dense = [_hit("a", 0.9), _hit("c", 0.88)]
    docs = _hybrid(tmp_path, dense, TEXTS, fusion="rrf").invoke("FP-2024-03")
    assert {d.id for d in docs} == {"a", "b", "c"}
    assert all("chunk_id" not in d.metadata for d in docs)  # the fusion key is removed


def test_build_retriever_follows_the_settings(tmp_path: Path) -> None:
    store = ScriptedBackend([_hit("a", 0.9, [1.0, 0.0], source="x.md")])
    embeddings = HashingEmbeddings(2)
    base = {"data_dir": tmp_path / "data", "embeddings": {"provider": "fake"}}
    dense = build_retriever(
        Settings(**base, retriever={"search_type": "mmr", "k": 3, "filter": {"source": "x.md"}}),
        store,
        embeddings,
    )
    assert isinstance(dense, DenseRetriever)
    assert (dense.search_type, dense.k) == ("mmr", 3)
    assert dense.filter == {"source": {"$eq": "x.md"}}  # checked and in canonical form
    hybrid = build_retriever(
        Settings(**base, retriever={"search_type": "hybrid", "k": 2}), store, embeddings
    )
    assert isinstance(hybrid, HybridRetriever) and hybrid.k == 2
    assert hybrid.dense.score_threshold is None  # the gate decides, on the fused relevance
    assert hybrid.dense.k == hybrid.keyword.k >= 2
    reranked = build_retriever(
        Settings(
            **base,
            retriever={"search_type": "similarity", "k": 3},
            rerank={
                "provider": "http",
                "base_url": "http://rerank.invalid/rerank",
                "candidates": 12,
            },
        ),
        store,
        embeddings,
    )
    assert isinstance(reranked, ContextualCompressionRetriever)
    assert reranked.base_retriever.k == 12  # type: ignore[attr-defined]  # fetch candidates


def test_load_keyword_index_rebuilds_a_missing_index_from_the_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})
    store = ScriptedBackend([_hit("a", 0.9, [1.0, 0.0]), _hit("b", 0.5, [0.0, 1.0])])
    searcher = load_keyword_index(settings, store)
    assert {h.document.id for h in searcher.search("a b", 5)} <= {"a", "b"}
    assert KeywordIndex(settings.state_location, store.namespace).ids() == {"a", "b"}
    assert KeywordIndex(settings.state_location, store.namespace).count() == 2  # persisted


def test_a_snapshot_retriever_never_returns_chunks_written_after_it() -> None:
    # The live store holds "new1".."new5" of an upload under way; the retriever's snapshot
    # knows only "a" and "b": it searches wider until it has k visible hits, and drops the rest.
    hits = [_hit(f"new{n}", 0.99 - n / 100, [1.0, 0.0]) for n in range(1, 6)]
    store = ScriptedBackend([*hits, _hit("a", 0.9, [1.0, 0.0]), _hit("b", 0.8, [0.9, 0.1])])
    embeddings = HashingEmbeddings(2)
    for search_type in ("similarity", "mmr"):
        dense = DenseRetriever(
            store=store,
            embeddings=embeddings,
            k=2,
            fetch_k=2,
            search_type=search_type,  # type: ignore[arg-type]
            visible_ids=frozenset({"a", "b"}),
        )
        assert sorted(d.id or "" for d in dense.invoke("q")) == ["a", "b"]
    assert [s["k"] for s in store.searches[:3]] == [2, 4, 8]  # wider only while hidden hits


def test_build_retriever_pairs_the_dense_side_with_the_keyword_snapshot(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", embeddings={"provider": "fake"})
    store = ScriptedBackend([_hit("a", 0.9, [1.0, 0.0]), _hit("b", 0.5, [0.0, 1.0])])
    keyword = load_keyword_index(settings, store)
    store.hits.append(_hit("late", 0.99, [1.0, 0.0]))  # written after the snapshot
    hybrid = build_retriever(settings, store, HashingEmbeddings(2), keyword)
    assert isinstance(hybrid, HybridRetriever)
    assert hybrid.dense.visible_ids is keyword
    assert keyword.visible(["a", "b", "late"]) == {"a", "b"}
    assert "late" not in {h.document.id for h in hybrid.dense.search("q")}
