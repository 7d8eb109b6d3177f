"""Documents -> chunks, cut where a Chinese (or English) reader would cut.

Breaks at paragraphs, then lines (so table rows stay whole), then sentence ends 。！？；…, then
commas, then characters; punctuation stays with its sentence. Markdown headings become the
chunk's ``headers`` metadata and are prefixed to its text so a chunk about "运费" under
"偏远地区" still knows where it came from. FAQ entries and the row groups of a spreadsheet
sheet (cut by the loader, which knows their row numbers) are never split.

>>> from rag_pipeline.config import SplitSettings
>>> chunks = split_documents(docs, SplitSettings())          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag_pipeline.config import SplitSettings

CHINESE_SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    "…",
    "!",
    "?",
    ";",
    ". ",
    "，",
    "、",
    ", ",
    " ",
    "",
]

# A chunk needs this many letters or digits (any script) to be worth a vector: random bytes
# decoded as text otherwise become chunks of one punctuation mark or stray symbol.
MIN_TEXT_CHARS = 3

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^(```|~~~)")


@dataclass(frozen=True)
class Section:
    """A stretch of a Markdown text under one heading path, with its offset in the text."""

    start: int
    text: str
    headers: tuple[str, ...]


def markdown_sections(text: str) -> list[Section]:
    """Cut Markdown at headings (not inside code fences), keeping exact character offsets.

    LangChain's MarkdownHeaderTextSplitter rewrites whitespace, which would make start offsets
    point at the wrong place, hence this small scanner.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start, offset, in_fence = 0, 0, False

    def close(end: int) -> None:
        body = text[start:end]
        if body.strip():
            sections.append(Section(start, body, tuple(title for _, title in stack)))

    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        if _FENCE.match(stripped):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(stripped)
        if match:
            close(offset)
            level = len(match.group(1))
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, match.group(2))]
            start = offset
        offset += len(line)
    close(len(text))
    return sections


def make_text_splitter(settings: SplitSettings) -> RecursiveCharacterTextSplitter:
    """The recursive splitter with Chinese-first separators."""
    return RecursiveCharacterTextSplitter(
        separators=CHINESE_SEPARATORS,
        keep_separator="end",
        chunk_size=settings.chunk_size,
        chunk_overlap=min(settings.chunk_overlap, settings.chunk_size // 2),
        add_start_index=True,
        strip_whitespace=True,
    )


def has_text(text: str, minimum: int = MIN_TEXT_CHARS) -> bool:
    """Whether ``text`` holds at least ``minimum`` letters or digits.

    >>> has_text("退货"), has_text("退货吗"), has_text("。—…")
    (False, True, False)
    """
    count = 0
    for ch in text:
        if ch.isalnum():
            count += 1
            if count >= minimum:
                return True
    return False


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _header_line(headers: tuple[str, ...], title: str | None) -> str:
    path = list(headers)
    if title and (not path or path[0] != title):
        path.insert(0, title)
    return " > ".join(path)


def _split_one(doc: Document, splitter: RecursiveCharacterTextSplitter) -> list[Document]:
    meta = doc.metadata
    if meta.get("doc_type") in ("faq", "table"):  # an entry, or whole rows under their header
        return [Document(page_content=doc.page_content, metadata={**meta, "start_index": 0})]
    if meta.get("markup") == "markdown":
        sections = markdown_sections(doc.page_content)
    else:
        sections = [Section(0, doc.page_content, ())]
    chunks = []
    for section in sections:
        heading = _header_line(section.headers, meta.get("title"))
        for piece in splitter.create_documents([section.text]):
            body = piece.page_content
            if _HEADING.match(body) and "\n" not in body:
                continue  # a bare heading carries no content of its own
            chunk_meta = {
                **meta,
                "start_index": section.start + piece.metadata["start_index"],
                "headers": " > ".join(section.headers),
            }
            # The heading path travels with the text: it is what makes the chunk findable.
            first_line = body.split("\n", 1)[0].lstrip("#").strip()
            repeats = heading == first_line
            text = f"【{heading}】\n{body}" if heading and not repeats else body
            chunks.append(Document(page_content=text, metadata=chunk_meta))
    return chunks


def _split_plain(doc: Document, splitter: RecursiveCharacterTextSplitter) -> list[Document]:
    return [
        Document(page_content=piece.page_content, metadata={**doc.metadata, **piece.metadata})
        for piece in splitter.create_documents([doc.page_content])
    ]


def _body(chunk: Document) -> str:
    text = chunk.page_content
    return text.split("】\n", 1)[1] if text.startswith("【") and "】\n" in text else text


def split_documents(
    docs: Iterable[Document], settings: SplitSettings, *, dropped: list[Document] | None = None
) -> list[Document]:
    """Split the Documents of one source file into chunks with full metadata.

    Every chunk has ``source``, ``chunk_index`` (0.. within its source, or within its sheet
    for a workbook: an edit of one sheet leaves the other sheets' chunk ids, which hash the
    metadata, unchanged, so ingest skips them), ``start_index`` (char
    offset in its page/document text), ``title``, ``headers`` and ``content_hash``. A chunk
    whose own text (the heading prefix aside) has fewer than ``MIN_TEXT_CHARS`` letters or
    digits is left out, and appended to ``dropped`` when given; FAQ entries are always kept.
    """
    if settings.strategy == "langchain":
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            add_start_index=True,
        )
        split_one = _split_plain
    else:
        splitter = make_text_splitter(settings)
        split_one = _split_one
    chunks: list[Document] = []
    counters: dict[tuple[str, str | None], int] = {}
    for doc in docs:
        for chunk in split_one(doc, splitter):
            if chunk.metadata.get("doc_type") != "faq" and not has_text(_body(chunk)):
                if dropped is not None:
                    dropped.append(chunk)
                continue
            counter = (chunk.metadata["source"], chunk.metadata.get("sheet"))
            chunk.metadata["chunk_index"] = counters.get(counter, 0)
            counters[counter] = chunk.metadata["chunk_index"] + 1
            chunk.metadata["content_hash"] = content_hash(chunk.page_content)
            chunk.metadata.pop("markup", None)
            chunks.append(chunk)
    return chunks
