"""Secrets never leak: canary keys in the environment appear in no output, no error, no JSON
report and no file of the data folder, whatever the commands do (including failing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.testing.model_api import ModelServer
from tests.helpers import STORE_CORPUS, run_cli, write_corpus

CANARIES = {
    "DASHSCOPE_API_KEY": "sk-canary-dashscope-7f3a",
    "OPENAI_API_KEY": "sk-canary-openai-91bd",
    "RAG_RERANK__API_KEY": "sk-canary-rerank-2c44",
    "RAG_STORE__TOKEN": "canary-user:canary-password-5e0f",
    "RAG_STORE__AUTH_TOKEN": "canary-chroma-token-a8d1",
}


@pytest.fixture
def stub(model_server: ModelServer) -> ModelServer:
    model_server.api_key = "sk-the-right-key"  # read on every request
    return model_server  # the plugin's: a fresh server for each test, 8-dimensional vectors


def test_canary_keys_never_appear_anywhere(
    tmp_path: Path,
    stub: ModelServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_LLM__PROVIDER", "extractive")
    outputs: list[str] = []

    def rag(*argv: str) -> int:
        code, out, err = run_cli(capsys, *argv)
        outputs.extend([out, err])
        return code

    assert rag("ingest", str(corpus), "--json") == 0
    assert rag("ingest", str(corpus)) == 0
    assert rag("ask", "退款多久到账", "--json", "--show-context") == 0
    assert rag("ask", "退款多久到账") == 0
    assert rag("search", "运费", "--json") == 0
    for command in (["info"], ["config"], ["verify"], ["collections", "list"]):
        assert rag(*command) == 0
        assert rag(*command, "--json") == 0
    # Failures: a provider that rejects the key, a server that is not there.
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("RAG_LLM__PROVIDER", "openai")
    # The default fallback answers from the context; its reason (stderr, JSON) names no key.
    assert rag("ask", "退款多久到账", "--threshold", "0", "--json") == 0
    monkeypatch.setenv("RAG_LLM__FALLBACK", "error")
    assert rag("ask", "退款多久到账", "--threshold", "0") == 1
    assert rag("--debug", "config") == 0
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "openai")
    assert rag("ingest", str(corpus), "--rebuild") == 1
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_STORE__MODE", "http")
    monkeypatch.setenv("RAG_STORE__PORT", "1")
    assert rag("info") == 4

    text = "\n".join(outputs)
    assert "***" in text  # `rag config` shows that keys are set, masked
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files
    for name, canary in CANARIES.items():
        secret = canary.split(":")[-1]
        assert secret not in text, name
        for path in files:
            assert secret.encode() not in path.read_bytes(), (name, path)
