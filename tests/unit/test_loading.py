import codecs
import os
import sys
from pathlib import Path

import pytest

from rag_pipeline.loading import LoadError, SourceFile, decode_text, discover, load_file
from tests.conftest import CORPUS, CORPUS_OCR_FILES

TEXT = "退货说明：签收后7天内可申请无理由退货。运费满99元包邮。"


def _file(folder: Path, name: str, data: bytes) -> SourceFile:
    path = folder / name
    path.write_bytes(data)
    return SourceFile(path, folder)


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("gb18030", b""),
        ("gbk", b""),
        ("utf-16", b""),  # Python writes a BOM for utf-16
    ],
)
def test_text_encodings_are_detected(tmp_path: Path, encoding: str, prefix: bytes) -> None:
    file = _file(tmp_path, "note.txt", prefix + TEXT.encode(encoding))
    (doc,) = load_file(file)
    assert doc.page_content == TEXT
    assert doc.metadata["source"] == "note.txt"


def test_big5_is_not_garbled_as_gbk() -> None:
    text = "退貨說明：簽收後七天內可以申請無理由退貨，運費由買家負擔。"
    assert decode_text(text.encode("big5")) == text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.md", b"  \n\n ", "empty"),
        ("broken.pdf", b"%PDF-1.4\n" + os.urandom(800), "PDF"),
        ("junk.docx", os.urandom(1500), "docx"),
        ("nul.txt", b"abc\x00\x01\x02def" * 20, "binary"),
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\nnot json\n', "line 2"),
        ("faq.csv", "question,answer\n只有问题,\n".encode(), "question and an answer"),
    ],
    # Named by file: random bytes in an id would differ between collections (pytest-xdist).
    ids=["empty.txt", "blank.md", "broken.pdf", "junk.docx", "nul.txt", "bad.jsonl", "faq.csv"],
)
def test_unreadable_files_raise_with_a_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    with pytest.raises(LoadError, match=reason):
        load_file(_file(tmp_path, name, data))


def test_permission_denied_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = _file(tmp_path, "secret.txt", TEXT.encode())

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(LoadError, match="permission denied"):
        load_file(file)


def test_discover_skips_unknown_hidden_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\ntext", encoding="utf-8")
    (tmp_path / "docs" / "tool.exe").write_bytes(b"MZ\x90")
    (tmp_path / "docs" / ".hidden.md").write_text("x", encoding="utf-8")
    (tmp_path / "docs" / "questions.jsonl").write_text("{}", encoding="utf-8")
    (tmp_path / "docs" / ".ragignore").write_text("# comment\nquestions.jsonl\n", encoding="utf-8")
    found = discover([tmp_path / "docs", tmp_path / "missing"])
    assert [f.source for f in found.files] == ["a.md"]
    reasons = {s["path"]: s["reason"] for s in found.skipped}
    assert "unsupported" in reasons["tool.exe"]
    assert "ragignore" in reasons["questions.jsonl"]
    assert "no such" in reasons[str(tmp_path / "missing")]


def test_every_format_of_the_sample_corpus_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the OCR extra (import blocked) its two files say so; tests/integration/test_ocr.py
    # reads them with it.
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    found = discover([CORPUS])
    by_type: dict[str, int] = {}
    needs_ocr = set()
    for file in found.files:
        if file.source in CORPUS_OCR_FILES:
            with pytest.raises(LoadError, match=r"install rag-pipeline\[ocr\]"):
                load_file(file)
            needs_ocr.add(file.source)
            continue
        docs = load_file(file)
        assert docs, file.source
        for doc in docs:
            assert doc.page_content.strip()
            assert doc.metadata["source"] == file.source
        by_type[file.path.suffix] = by_type.get(file.path.suffix, 0) + 1
    assert {".md", ".txt", ".pdf", ".docx", ".html", ".csv"} <= set(by_type)
    assert needs_ocr == CORPUS_OCR_FILES
    assert sum(n for suffix, n in by_type.items() if suffix != ".csv") >= 25


def test_pdf_loads_one_document_per_page_with_chinese_text() -> None:
    pdfs = [
        p
        for p in sorted(CORPUS.rglob("*.pdf"))
        if p.relative_to(CORPUS).as_posix() not in CORPUS_OCR_FILES
    ]  # the scanned one has no text layer
    pages = [doc for pdf in pdfs for doc in load_file(SourceFile(pdf, CORPUS))]
    assert any(doc.metadata["page"] >= 2 for doc in pages)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in doc.page_content) for doc in pages)


def test_docx_headings_and_tables_survive() -> None:
    docx = sorted(CORPUS.rglob("*.docx"))
    texts = [load_file(SourceFile(p, CORPUS))[0].page_content for p in docx]
    assert all(t.lstrip().startswith("#") or "\n#" in t for t in texts)
    assert any("|" in t for t in texts)


def test_html_tables_become_rows(tmp_path: Path) -> None:
    html = (
        "<html><head><title>运费</title><script>var x=1;</script></head><body>"
        "<h1>运费标准</h1><p>以下为各地区运费。</p>"
        "<table><tr><th>地区</th><th>运费</th></tr><tr><td>新疆</td><td>20元</td></tr></table>"
        "</body></html>"
    )
    (doc,) = load_file(_file(tmp_path, "fee.html", html.encode("utf-8")))
    assert doc.metadata["title"] == "运费"
    assert "# 运费标准" in doc.page_content
    assert "| 新疆 | 20元 |" in doc.page_content
    assert "var x" not in doc.page_content


def test_faq_csv_gives_one_document_per_pair_with_alternatives() -> None:
    docs = load_file(SourceFile(CORPUS / "faq.csv", CORPUS))
    assert len(docs) >= 60
    first = docs[0]
    assert first.metadata["doc_type"] == "faq"
    assert first.page_content.startswith("问：" + first.metadata["faq_question"])
    assert first.metadata["faq_answer"] in first.page_content
    assert any("相似问法" in d.page_content for d in docs)


def test_jsonl_passages_and_faq(tmp_path: Path) -> None:
    data = (
        '{"id": "p1", "title": "标题", "text": "正文内容。"}\n'
        '{"question": "能开发票吗", "answer": "可以。", "alternatives": ["要发票"]}\n'
    )
    docs = load_file(_file(tmp_path, "kb.jsonl", data.encode("utf-8")))
    assert docs[0].metadata["record_id"] == "p1" and docs[0].page_content.startswith("# 标题")
    assert docs[1].metadata["doc_type"] == "faq" and "要发票" in docs[1].page_content
