from pathlib import Path

import pytest

from rag_pipeline.config import Settings, load_settings
from rag_pipeline.errors import ConfigurationError


def test_defaults_are_offline() -> None:
    settings = load_settings()
    assert settings.data_dir == Path(".rag")
    assert settings.embeddings.provider == "local"
    assert settings.store.backend == "chroma" and settings.store.mode == "persistent"
    assert settings.llm_provider() == "extractive"


def test_precedence_toml_dotenv_environment_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("rag.toml").write_text(
        'data_dir = "from-toml"\n[retriever]\nk = 2\nfetch_k = 30\n[split]\nchunk_size = 300\n',
        encoding="utf-8",
    )
    Path(".env").write_text("RAG_RETRIEVER__K=3\nRAG_SPLIT__CHUNK_SIZE=350\n", encoding="utf-8")
    monkeypatch.setenv("RAG_RETRIEVER__K", "5")
    settings = load_settings(retriever={"lambda_mult": 0.9})
    assert settings.data_dir == Path("from-toml")  # only in rag.toml
    assert settings.retriever.fetch_k == 30  # toml, untouched by the nested override
    assert settings.split.chunk_size == 350  # .env beats rag.toml
    assert settings.retriever.k == 5  # environment beats .env
    assert settings.retriever.lambda_mult == 0.9  # flags beat everything
    assert load_settings(retriever={"k": 9}).retriever.k == 9


def test_invalid_value_names_the_setting_and_allowed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "word2vec")
    with pytest.raises(ConfigurationError) as e:
        load_settings()
    message = str(e.value)
    assert "embeddings.provider" in message and "RAG_EMBEDDINGS__PROVIDER" in message
    assert "'local'" in message and "'dashscope'" in message


def test_unknown_nested_and_top_level_names_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETRIEVER__KK", "3")
    with pytest.raises(ConfigurationError, match="retriever.kk"):
        load_settings()
    monkeypatch.delenv("RAG_RETRIEVER__KK")
    monkeypatch.setenv("RAG_DATADIR", "x")
    with pytest.raises(ConfigurationError, match="RAG_DATADIR"):
        load_settings()


def test_secrets_are_masked_and_pick_the_chat_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-secret-value")
    monkeypatch.setenv("RAG_RERANK__API_KEY", "sk-rerank-secret")
    settings = load_settings()
    assert settings.llm_provider() == "dashscope"
    masked = settings.masked()
    assert masked["dashscope_api_key"] == "***" and masked["rerank"]["api_key"] == "***"
    for secret in ("sk-secret-value", "sk-rerank-secret"):
        assert secret not in repr(settings) and secret not in str(masked)
    assert load_settings(llm={"provider": "extractive"}).llm_provider() == "extractive"


def test_openai_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    settings = load_settings()
    assert settings.llm_provider() == "openai"
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"


def test_collection_names_valid_for_every_backend() -> None:
    with pytest.raises(ValueError):
        Settings(store={"collection": "has-dash"})
    assert Settings(store={"collection": "docs_v2"}).store.collection == "docs_v2"


def test_where_document_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETRIEVER__WHERE_DOCUMENT", '{"$not_contains": "退货"}')
    assert load_settings().retriever.where_document == {"$not_contains": "退货"}
    monkeypatch.setenv("RAG_RETRIEVER__WHERE_DOCUMENT", '{"$like": "退货"}')
    with pytest.raises(ConfigurationError, match="RAG_RETRIEVER__WHERE_DOCUMENT.*'[$]like'"):
        load_settings()  # checked with the other settings, before anything is opened
