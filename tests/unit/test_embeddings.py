import math
from pathlib import Path

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import (
    HashingEmbeddings,
    build_embedding_model,
)
from rag_pipeline.errors import ConfigurationError, MissingAPIKeyError


class TestHashingStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[HashingEmbeddings]:
        return HashingEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"dimension": 64}


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_hashing_embeddings_are_deterministic_and_share_characters() -> None:
    emb = HashingEmbeddings(128)
    a, b, c = emb.embed_documents(["运费怎么算", "运费标准", "会员积分"])
    assert emb.embed_query("运费怎么算") == a
    assert _cos(a, b) > _cos(a, c)


def test_fingerprints_identify_provider_model_and_dimension() -> None:
    assert build_embedding_model(Settings()).fingerprint == "local:multilingual-e5-small-q4:384"
    fake = build_embedding_model(Settings(embeddings={"provider": "fake", "dimensions": 32}))
    assert fake.fingerprint == "fake:hashed-char-ngrams:32"


@pytest.mark.parametrize(
    ("provider", "variable"), [("dashscope", "DASHSCOPE_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
def test_missing_key_names_the_variable(provider: str, variable: str) -> None:
    with pytest.raises(MissingAPIKeyError, match=variable):
        build_embedding_model(Settings(embeddings={"provider": provider}))


def test_remote_constructors_do_not_touch_the_network() -> None:
    settings = Settings(
        embeddings={"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
        openai_api_key="sk-test",
    )
    model = build_embedding_model(settings)
    assert model.dimension is None  # unknown model: probed on first use, not at construction


def test_huggingface_needs_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="local folder"):
        build_embedding_model(
            Settings(embeddings={"provider": "huggingface", "model": "BAAI/bge-small-zh"})
        )


def test_local_provider_rejects_other_models() -> None:
    with pytest.raises(ConfigurationError, match="huggingface"):
        build_embedding_model(Settings(embeddings={"model": "bge-m3"}))


def test_similarities_rank_by_cosine_with_l2() -> None:
    from rag_pipeline.embeddings import similarities

    rows = similarities(HashingEmbeddings(64), "运费怎么算", ["会员积分", "运费怎么算", "运费标准"])
    assert [r[0] for r in rows] == ["运费怎么算", "运费标准", "会员积分"]
    text, cosine, l2 = rows[0]
    assert math.isclose(cosine, 1.0, abs_tol=1e-9) and math.isclose(l2, 0.0, abs_tol=1e-9)
    # unit vectors: l2^2 = 2 - 2 cos
    for _, c, d in rows:
        assert math.isclose(d * d, 2 - 2 * c, abs_tol=1e-9)


def test_building_the_local_model_leaves_openmp_settings_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's own process keeps its OpenMP choice: only the CLI entry point sets a default."""
    import os

    from rag_pipeline.embeddings import LocalE5Embeddings

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    LocalE5Embeddings(threads=1)
    assert "OMP_WAIT_POLICY" not in os.environ
