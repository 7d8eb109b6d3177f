"""rag_pipeline: LangChain-native RAG for customer-service bots over your own documents.

Names are imported lazily so that ``import rag_pipeline`` stays instant.

>>> from rag_pipeline import Assistant, load_settings
>>> answer = Assistant.from_settings(load_settings()).ask("怎么退货")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# ONNX Runtime (1.29 and later, on Linux and macOS) uploads usage events to Microsoft and writes
# a device id under ~/.cache unless this is set when it is first imported; our ONNX engine and
# the OCR loader import it, and the package never reaches the network on its own. A value the
# user set stays.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_EXPORTS = {
    "Answer": "rag_pipeline.chain",
    "Assistant": "rag_pipeline.assistant",
    "ExtractiveChatModel": "rag_pipeline.llms",
    "HashingEmbeddings": "rag_pipeline.embeddings",
    "IngestReport": "rag_pipeline.indexing",
    "LocalE5Embeddings": "rag_pipeline.embeddings",
    "RagError": "rag_pipeline.errors",
    "Settings": "rag_pipeline.config",
    "Source": "rag_pipeline.chain",
    "build_chat_model": "rag_pipeline.llms",
    "build_embedding_model": "rag_pipeline.embeddings",
    "build_rag_chain": "rag_pipeline.chain",
    "build_retriever": "rag_pipeline.retrieval",
    "ingest": "rag_pipeline.indexing",
    "load_settings": "rag_pipeline.config",
    "open_store": "rag_pipeline.stores",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag_pipeline' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
