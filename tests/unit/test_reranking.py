"""The reranker stage: ordering, top_n, min_score, metadata, configuration errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langchain_community.cross_encoders.fake import FakeCrossEncoder
from langchain_core.documents import Document

from rag_pipeline.config import load_settings
from rag_pipeline.errors import ConfigurationError, MissingAPIKeyError, MissingExtraError
from rag_pipeline.evaluation import _config_settings
from rag_pipeline.reranking import CrossEncoderReranker, _scores_by_index, build_reranker

DOCS = [
    Document("运费由买家承担", id="a", metadata={"source": "a.md", "score": 0.91}),
    Document("七天无理由退货", id="b", metadata={"source": "b.md", "score": 0.88}),
    Document("七天无理由退货怎么申请？点申请", id="c", metadata={"source": "c.md"}),
]
QUERY = "七天无理由退货怎么申请"


class RecordingCrossEncoder(FakeCrossEncoder):
    """LangChain's fake cross-encoder, remembering the size of every batch it scored."""

    batches: list[int] = []

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        self.batches.append(len(text_pairs))
        return super().score(text_pairs)


def test_cross_encoder_orders_by_score_and_keeps_top_n() -> None:
    reranker = CrossEncoderReranker(model=FakeCrossEncoder(), top_n=2)
    kept = reranker.compress_documents(DOCS, QUERY)
    assert [d.id for d in kept] == ["c", "b"]
    scores = [d.metadata["rerank_score"] for d in kept]
    assert scores == sorted(scores, reverse=True)
    # The retriever's relevance and the rest of the metadata survive; inputs are not mutated.
    assert kept[1].metadata["score"] == 0.88 and kept[1].metadata["source"] == "b.md"
    assert "rerank_score" not in DOCS[1].metadata


def test_min_score_drops_weak_chunks() -> None:
    all_scores = CrossEncoderReranker(model=FakeCrossEncoder(), top_n=3).compress_documents(
        DOCS, QUERY
    )
    second, third = (d.metadata["rerank_score"] for d in all_scores[1:])
    cut = (second + third) / 2
    kept = CrossEncoderReranker(
        model=FakeCrossEncoder(), top_n=3, min_score=cut
    ).compress_documents(DOCS, QUERY)
    assert [d.id for d in kept] == [d.id for d in all_scores[:2]]


def test_cross_encoder_scores_in_batches() -> None:
    model = RecordingCrossEncoder()
    model.batches = []
    CrossEncoderReranker(model=model, top_n=3, batch_size=2).compress_documents(DOCS, QUERY)
    assert model.batches == [2, 1]


def test_no_documents_no_model_call() -> None:
    model = RecordingCrossEncoder()
    model.batches = []
    assert CrossEncoderReranker(model=model).compress_documents([], QUERY) == []
    assert model.batches == []


def test_scores_by_index_puts_missing_last_and_rejects_bad_indexes() -> None:
    assert _scores_by_index([(1, 0.5), (0, 0.9)], 3) == [0.9, 0.5, float("-inf")]
    with pytest.raises(Exception, match="index 5 for 2 documents"):
        _scores_by_index([(5, 0.1)], 2)


def test_off_by_default() -> None:
    assert load_settings().rerank.provider is None
    assert build_reranker(load_settings(), top_n=4) is None


def test_dashscope_reranker_needs_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    settings = load_settings(rerank={"provider": "dashscope"}, dashscope_api_key=None)
    with pytest.raises(MissingAPIKeyError, match="DASHSCOPE_API_KEY"):
        build_reranker(settings, top_n=4)


def test_http_reranker_needs_its_url() -> None:
    with pytest.raises(ConfigurationError, match="RAG_RERANK__BASE_URL"):
        build_reranker(load_settings(rerank={"provider": "http"}), top_n=4)


def test_huggingface_reranker_needs_a_local_folder(tmp_path: Path) -> None:
    settings = load_settings(rerank={"provider": "huggingface", "model": "BAAI/bge-reranker"})
    with pytest.raises(ConfigurationError, match="local folder.*RAG_RERANK__MODEL"):
        build_reranker(settings, top_n=4)


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="checks the message shown when the [hf] extra is missing",
)
def test_huggingface_reranker_without_the_extra_names_it(tmp_path: Path) -> None:
    settings = load_settings(rerank={"provider": "huggingface", "model": str(tmp_path)})
    with pytest.raises(MissingExtraError, match=r"rag-pipeline\[hf\]"):
        build_reranker(settings, top_n=4)


def test_eval_configs_and_the_reranker(tmp_path: Path) -> None:
    plain = load_settings()
    with pytest.raises(ConfigurationError, match="no reranker is configured"):
        _config_settings(plain, "rerank", tmp_path)
    with pytest.raises(ConfigurationError, match="dashscope, huggingface, http"):
        _config_settings(plain, "rerank:cohere", tmp_path)

    named, mode = _config_settings(plain, "rerank:dashscope:gte-rerank-v2", tmp_path)
    assert (named.rerank.provider, named.rerank.model, mode) == (
        "dashscope",
        "gte-rerank-v2",
        "hybrid",
    )
    assert named.store.collection == "eval_default"  # reranking needs no index of its own

    configured = load_settings(rerank={"provider": "http", "base_url": "http://127.0.0.1:1/r"})
    assert _config_settings(configured, "rerank", tmp_path)[0].rerank.provider == "http"
    # The plain retrieval configs are measured without it, for comparison.
    assert _config_settings(configured, "hybrid", tmp_path)[0].rerank.provider is None
    assert _config_settings(configured, "vanilla", tmp_path)[0].rerank.provider is None
