"""Odd files and odd settings: undecodable names, links, huge or nested files, bad FAQ rows."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag_pipeline.config import IngestSettings, SplitSettings, load_settings
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.loading import LoadError, SourceFile, discover, load_file, source_name
from rag_pipeline.splitting import split_documents

TEXT = "退货说明：签收后7天内可申请无理由退货。"


def _bytes_name(folder: Path, name: bytes, data: bytes) -> Path:
    """A file whose name is raw bytes (not necessarily UTF-8), as Linux allows."""
    raw = os.path.join(os.fsencode(folder), name)
    with open(raw, "wb") as f:
        f.write(data)
    return Path(os.fsdecode(raw))


def test_undecodable_file_name_gets_a_printable_reversible_source(tmp_path: Path) -> None:
    path = _bytes_name(tmp_path, b"caf\xe9 50%.txt", TEXT.encode())
    (file,) = discover([tmp_path]).files
    assert file.path == path
    assert file.source == "caf%E9 50%25.txt"
    file.source.encode("utf-8")  # what Chroma and SQLite need
    assert urllib.parse.unquote_to_bytes(file.source) == b"caf\xe9 50%.txt"
    (doc,) = load_file(file)
    assert doc.metadata["source"] == file.source and doc.page_content == TEXT


def test_valid_names_keep_their_source_and_escaped_collisions_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "退货 100%.md").write_text("# 退货\n\n" + TEXT, encoding="utf-8")
    (tmp_path / "caf%E9.txt").write_text(TEXT, encoding="utf-8")
    _bytes_name(tmp_path, b"caf\xe9.txt", TEXT.encode())
    found = discover([tmp_path])
    assert [f.source for f in found.files] == ["caf%E9.txt", "退货 100%.md"]
    assert source_name("a/退货 100%.md") == "a/退货 100%.md"
    (skipped,) = found.skipped
    assert skipped["path"] == "caf%E9.txt" and "same name" in skipped["reason"]


def test_undecodable_unsupported_name_is_listed_printably(tmp_path: Path) -> None:
    _bytes_name(tmp_path, b"\xff\xfe.bin", b"data")
    (skipped,) = discover([tmp_path]).skipped
    assert skipped["path"] == "%FF%FE.bin" and "unsupported" in skipped["reason"]


def _corpus_with_links(tmp_path: Path) -> tuple[Path, Path]:
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    (corpus / "docs").mkdir(parents=True)
    outside.mkdir()
    (corpus / "docs" / "inner.md").write_text("# 内部\n\n" + TEXT, encoding="utf-8")
    (outside / "secret.txt").write_text("外部文件的内容。", encoding="utf-8")
    (outside / "more").mkdir()
    (outside / "more" / "extra.txt").write_text("外部文件夹里的内容。", encoding="utf-8")
    (corpus / "to-secret.txt").symlink_to(outside / "secret.txt")
    (corpus / "to-more").symlink_to(outside / "more", target_is_directory=True)
    (corpus / "to-docs").symlink_to(corpus / "docs", target_is_directory=True)
    (corpus / "dangling.md").symlink_to(tmp_path / "gone.md")
    (corpus / "alias.md").symlink_to(corpus / "docs" / "inner.md")
    return corpus, outside


def test_links_out_of_the_corpus_are_skipped_with_a_reason_by_default(tmp_path: Path) -> None:
    corpus, _ = _corpus_with_links(tmp_path)
    for found in (discover([corpus]), discover([corpus], IngestSettings())):
        assert [f.source for f in found.files] == ["alias.md", "docs/inner.md"]
        reasons = {s["path"]: s["reason"] for s in found.skipped}
        assert set(reasons) == {"dangling.md", "to-docs", "to-more", "to-secret.txt"}
        assert "RAG_INGEST__FOLLOW_SYMLINKS=true" in reasons["to-secret.txt"]
        assert "RAG_INGEST__FOLLOW_SYMLINKS=true" in reasons["to-more"]
        assert "broken" in reasons["dangling.md"]
        assert "inside the corpus" in reasons["to-docs"]


def test_follow_symlinks_ingests_what_links_point_to(tmp_path: Path) -> None:
    corpus, outside = _corpus_with_links(tmp_path)
    (outside / "more" / "loop").symlink_to(outside / "more", target_is_directory=True)
    found = discover([corpus], IngestSettings(follow_symlinks=True))
    sources = [f.source for f in found.files]
    assert sources == ["alias.md", "docs/inner.md", "to-more/extra.txt", "to-secret.txt"]
    assert load_file(found.files[-1])[0].page_content == "外部文件的内容。"
    reasons = {s["path"]: s["reason"] for s in found.skipped}
    assert set(reasons) == {"dangling.md", "to-docs", "to-more/loop"}


def test_fifo_is_reported_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    found = discover([tmp_path])
    assert not found.files
    assert "not a regular file" in found.skipped[0]["reason"]


def test_file_over_max_file_mb_fails_without_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * 300_000)

    def refuse(self: Path) -> bytes:
        raise AssertionError("read a file over the limit")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(LoadError, match="RAG_INGEST__MAX_FILE_MB") as e:
        load_file(SourceFile(path, tmp_path), max_file_mb=0.25)
    assert "0.3 MB" in str(e.value) and "0.25 MB" in str(e.value)


def test_deeply_nested_html_keeps_its_text(tmp_path: Path) -> None:
    depth = 1000
    html = (
        "<html><body>"
        + "<div>层</div><div>" * depth
        + "<p>最深处的文字</p>"
        + "</div>" * depth
        + "<ul>"
        + "<li>条目<ul>" * depth
        + "</ul></li>" * depth
        + "</ul></body></html>"
    )
    path = tmp_path / "deep.html"
    path.write_text(html, encoding="utf-8")
    (doc,) = load_file(SourceFile(path, tmp_path))
    assert "最深处的文字" in doc.page_content
    assert doc.page_content.count("层") == depth
    # one line per nested item, none repeating the items inside it
    assert doc.page_content.count("- 条目\n") == depth - 1
    assert doc.page_content.count("条目") == depth


def test_html_text_outside_blocks_and_list_items_in_order(tmp_path: Path) -> None:
    html = (
        "<body><div>开头<b>加粗</b></div><ul><li>甲<ul><li>乙</li></ul></li><li>丙</li></ul>"
        "<section>结尾</section></body>"
    )
    path = tmp_path / "a.html"
    path.write_text(html, encoding="utf-8")
    (doc,) = load_file(SourceFile(path, tmp_path))
    assert doc.page_content == "开头 加粗\n\n- 甲\n- 乙\n- 丙\n结尾"


@pytest.mark.parametrize(
    ("name", "data", "left_out"),
    [
        ("faq.csv", "question,answer\n运费多少,8元\n能退货吗,\n,,\n发票,可以开\n", "row 2"),
        (
            "faq.jsonl",
            '{"question": "运费多少", "answer": "8元"}\n{"question": "能退货吗", "answer": ""}\n'
            '{"question": "发票", "answer": "可以开"}\n',
            "line 2",
        ),
    ],
)
def test_faq_row_without_answer_is_left_out_and_listed(
    tmp_path: Path, name: str, data: str, left_out: str
) -> None:
    path = tmp_path / name
    path.write_text(data, encoding="utf-8")
    problems: list[str] = []
    docs = load_file(SourceFile(path, tmp_path), problems=problems)
    assert [d.metadata["faq_question"] for d in docs] == ["运费多少", "发票"]
    assert len(problems) == 1 and problems[0].startswith(left_out)
    assert "question and an answer" in problems[0]
    with pytest.raises(LoadError, match=left_out):  # without a list: strict, as before
        load_file(SourceFile(path, tmp_path))


def test_chunks_without_text_are_dropped_and_counted() -> None:
    doc = Document(
        page_content="。。\n\n退货须知的正文内容。\n\n—— …\n\n#",
        metadata={"source": "a.txt", "markup": "text"},
    )
    dropped: list[Document] = []
    chunks = split_documents([doc], SplitSettings(chunk_size=12, chunk_overlap=0), dropped=dropped)
    assert [c.page_content for c in chunks] == ["退货须知的正文内容。"]
    assert chunks[0].metadata["chunk_index"] == 0
    assert [d.page_content for d in dropped] == ["。。", "—— …\n\n#"]
    faq = Document(page_content="问：?\n答：!", metadata={"source": "f.csv", "doc_type": "faq"})
    assert len(split_documents([faq], SplitSettings())) == 1  # FAQ entries are never dropped


def test_overlap_not_below_chunk_size_names_the_settings() -> None:
    with pytest.raises(ConfigurationError) as e:
        load_settings(split={"chunk_size": 100, "chunk_overlap": 100})
    assert "RAG_SPLIT__CHUNK_OVERLAP" in str(e.value) and "chunk_size (100)" in str(e.value)
    assert load_settings(split={"chunk_size": 100, "chunk_overlap": 99}).split.chunk_overlap == 99


def test_empty_data_dir_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", "  ")
    with pytest.raises(ConfigurationError, match="RAG_DATA_DIR"):
        load_settings()
    monkeypatch.setenv("RAG_DATA_DIR", "kb-data")
    assert load_settings().data_dir == Path("kb-data")


@pytest.mark.parametrize("line", ["[" * 100_000, '{"text": ' + "1" * 5000 + "}"])
def test_pathological_json_lines_are_load_errors(tmp_path: Path, line: str) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match="line 1"):
        load_file(SourceFile(path, tmp_path))
