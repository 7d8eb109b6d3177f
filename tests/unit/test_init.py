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
