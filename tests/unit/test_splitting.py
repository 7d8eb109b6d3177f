from langchain_core.documents import Document

from rag_pipeline.config import SplitSettings
from rag_pipeline.splitting import markdown_sections, split_documents

MARKDOWN = (
    "# 退货政策\n\n总则段落。\n\n## 七天无理由\n\n"
    "| 商品 | 是否支持 |\n|---|---|\n| 食品 | 否 |\n| 服装 | 是 |\n\n"
    "```\n# 代码块里的井号不是标题\n```\n\n### 细则\n\n第一句很重要。第二句也重要！第三句？\n"
)


def _doc(text: str, **meta: object) -> Document:
    return Document(page_content=text, metadata={"source": "a.md", "title": "退货政策", **meta})


def test_markdown_sections_keep_exact_offsets_and_ignore_fenced_hashes() -> None:
    sections = markdown_sections(MARKDOWN)
    assert [s.headers for s in sections] == [
        ("退货政策",),
        ("退货政策", "七天无理由"),
        ("退货政策", "七天无理由", "细则"),
    ]
    for section in sections:
        assert MARKDOWN[section.start : section.start + len(section.text)] == section.text


def test_chunks_carry_headers_offsets_and_hashes() -> None:
    chunks = split_documents([_doc(MARKDOWN, markup="markdown")], SplitSettings(chunk_size=60))
    assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        meta = chunk.metadata
        assert set(meta) >= {"source", "chunk_index", "start_index", "title", "headers"}
        assert len(meta["content_hash"]) == 16
        body = chunk.page_content.split("】\n", 1)[-1]
        assert MARKDOWN[meta["start_index"] : meta["start_index"] + len(body)] == body
    detail = [c for c in chunks if "第一句" in c.page_content][0]
    assert detail.metadata["headers"] == "退货政策 > 七天无理由 > 细则"
    assert detail.page_content.startswith("【退货政策 > 七天无理由 > 细则】")


def test_sentences_end_with_their_punctuation() -> None:
    text = "第一句话写得比较长一些。第二句话也不短哦！第三句话是问句吗？第四句话结束。"
    chunks = split_documents(
        [_doc(text, markup="text", title=None)], SplitSettings(chunk_size=14, chunk_overlap=7)
    )
    bodies = [c.page_content for c in chunks]
    assert bodies == [
        "第一句话写得比较长一些。",
        "第二句话也不短哦！",
        "第三句话是问句吗？",
        "第四句话结束。",
    ]


def test_table_rows_are_not_cut() -> None:
    rows = "\n".join(f"| 地区{i} | {i}元 | {i + 1}天 |" for i in range(30))
    chunks = split_documents(
        [_doc("## 运费表\n\n" + rows, markup="markdown")],
        SplitSettings(chunk_size=80, chunk_overlap=0),
    )
    for chunk in chunks:
        for line in chunk.page_content.split("\n")[1:]:
            if line.startswith("|"):
                assert line.endswith("|"), line


def test_faq_entries_are_never_split() -> None:
    answer = "这是一个很长的回答。" * 100
    faq = _doc(f"问：问题\n答：{answer}", doc_type="faq", markup="faq")
    (chunk,) = split_documents([faq], SplitSettings(chunk_size=50))
    assert chunk.page_content.endswith(answer)


def test_chunk_ids_inputs_are_deterministic() -> None:
    a = split_documents([_doc(MARKDOWN, markup="markdown")], SplitSettings())
    b = split_documents([_doc(MARKDOWN, markup="markdown")], SplitSettings())
    assert [(c.page_content, c.metadata) for c in a] == [(c.page_content, c.metadata) for c in b]
