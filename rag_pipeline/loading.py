"""Files -> LangChain Documents, with a reason for every file that could not be read.

One Document per file, per page for PDF, per slide for PowerPoint, per question/answer pair for
FAQ files and FAQ sheets of a workbook, and per group of rows (header repeated) for the other
sheets. Images, and PDF pages without a text layer, are read by OCR when the ``[ocr]`` extra is
installed (``rag_pipeline.ocr``) and reported as needing it when it is not. HTML and DOCX are
turned into Markdown-like text (headings as ``#``, table rows as ``a | b | c`` lines) so the
splitter can keep headings and rows together.

>>> from pathlib import Path
>>> files = discover([Path("corpus")])            # doctest: +SKIP
>>> docs = load_file(files.files[0])               # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from langchain_core.documents import Document

from rag_pipeline.errors import LoadError, MissingExtraError, NeedsExtraError
from rag_pipeline.ocr import IMAGE_SUFFIXES, INSTALL_HINT, OcrReader, OcrText
from rag_pipeline.synonyms import FILE_NAME as SYNONYMS_FILE

if TYPE_CHECKING:
    from rag_pipeline.config import FaqColumnSettings, IngestSettings

TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = (
    TEXT_SUFFIXES
    | MARKDOWN_SUFFIXES
    | HTML_SUFFIXES
    | {".pdf", ".docx", ".csv", ".jsonl", ".xlsx", ".xls", ".pptx"}
    | IMAGE_SUFFIXES
)
IGNORE_FILE = ".ragignore"
# ``NAME.meta.json`` beside a file holds metadata merged into every chunk of NAME.
META_SUFFIX = ".meta.json"
# Keys the loaders, the splitter and the retriever set themselves; user metadata cannot.
RESERVED_METADATA = frozenset(
    {"source", "file_type", "title", "markup", "page", "doc_type", "headers", "start_index"}
    | {"chunk_index", "content_hash", "score", "dense_relevance", "keyword_coverage", "bm25"}
    | {"rerank_score", "faq_question", "faq_answer", "faq_alternatives", "row", "row_end"}
    | {"sheet", "ocr", "ocr_confidence"}
)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_CJK_OR_COMMA = re.compile(r"[\u3400-\u9fff，、（“]")

# Similar phrasings in one cell: one a line, or separated by | ； ;
_PHRASING_SEPARATORS = re.compile(r"[\n|；;]")
# Rows of a sheet per table chunk when no chunk size is given (load_file without settings).
DEFAULT_TABLE_CHUNK_CHARS = 500


@dataclass(frozen=True)
class FaqColumns:
    """Normalised FAQ header names (see ``config.FaqColumnSettings``)."""

    question: frozenset[str]
    similar: frozenset[str]
    answer: frozenset[str]

    @classmethod
    def of(cls, settings: FaqColumnSettings | None) -> FaqColumns:
        if settings is None:
            from rag_pipeline.config import FaqColumnSettings

            settings = FaqColumnSettings()
        return cls(
            frozenset(map(header_key, settings.question)),
            frozenset(map(header_key, settings.similar)),
            frozenset(map(header_key, settings.answer)),
        )

    def is_faq(self, header: Iterable[object]) -> bool:
        keys = {header_key(h) for h in header if h is not None}
        return bool(keys & self.question) and bool(keys & self.answer)


def header_key(name: object) -> str:
    """A column name as FAQ headers are compared: lower case, no whitespace.

    >>> header_key(" Similar  Questions ")
    'similarquestions'
    """
    return "".join(str(name).split()).lower()


def source_name(relative: PurePath | str) -> str:
    """A relative path as a ``source`` name every store and database can hold.

    File names that are not valid UTF-8 (on Linux they come back from the OS with surrogate
    escapes, which Chroma and SQLite refuse) get each undecodable byte written as ``%XX``
    and, in those names only, ``%`` written as ``%25``, so
    ``urllib.parse.unquote_to_bytes(name)`` gives the original bytes back. Valid names are
    unchanged.

    >>> source_name("faq/退货.md")
    'faq/退货.md'
    >>> source_name(os.fsdecode(b"caf\\xe9 100%.txt"))
    'caf%E9 100%25.txt'
    """
    text = relative if isinstance(relative, str) else PurePath(relative).as_posix()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return text
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: keep its code units
        raw = text.encode("utf-8", "surrogatepass")
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"%{ord(ch) - 0xDC00:02X}")
        elif ch == "%":
            out.append("%25")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the corpus root its ``source`` name is relative to."""

    path: Path
    root: Path

    @property
    def source(self) -> str:
        return source_name(self.path.relative_to(self.root))

    @property
    def stem(self) -> str:
        """The file name without its extension, as safe as ``source`` (a fallback title)."""
        return PurePosixPath(self.source).stem


@dataclass
class Discovery:
    """What a walk over the input paths found."""

    files: list[SourceFile] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)


def _ignore_patterns(root: Path) -> list[str]:
    path = root / IGNORE_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


_FOLLOW_HINT = "set RAG_INGEST__FOLLOW_SYMLINKS=true to ingest it"


def _link_problem(link: Path, root: Path, follow: bool) -> str | None:
    """Why the symbolic link ``link`` inside ``root`` is not walked into (None: it is)."""
    target = link.resolve()
    if not target.exists():
        return "broken symbolic link (its target does not exist): fix or remove it"
    inside = target.is_relative_to(root)
    if target.is_dir():
        if inside:
            # Its files are found under their real names; following would ingest them twice.
            return "symbolic link to a folder inside the corpus: its files are ingested there"
        return None if follow else f"symbolic link to a folder outside the corpus: {_FOLLOW_HINT}"
    if not target.is_file():
        return "symbolic link to something that is not a regular file"
    return None if inside or follow else f"symbolic link to outside the corpus: {_FOLLOW_HINT}"


def _walk(root: Path, follow: bool, skipped: list[dict[str, str]]) -> list[Path]:
    """The regular files under ``root`` (hidden entries left out), sorted.

    Symbolic links are checked one by one (``_link_problem``) instead of being followed or
    dropped silently; other special files (FIFOs, sockets) would block or fail a read.
    """
    files: list[Path] = []
    pending = [root]
    visited = {root}
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            name = source_name(folder.relative_to(root)) + "/"
            skipped.append({"path": name, "reason": f"cannot list folder ({e.strerror or e})"})
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders, .ragignore itself included
            path = Path(entry.path)
            name = source_name(path.relative_to(root))
            if entry.is_symlink():
                problem = _link_problem(path, root, follow)
                if problem is None and path.is_dir():
                    real = path.resolve()
                    if real in visited:
                        problem = "symbolic link to a folder that is already walked (a loop?)"
                    else:
                        visited.add(real)
                        pending.append(path)
                        continue
                if problem is not None:
                    skipped.append({"path": name, "reason": problem})
                else:
                    files.append(path)
            elif entry.is_dir(follow_symlinks=False):
                visited.add(path.resolve())
                pending.append(path)
            elif entry.is_file(follow_symlinks=False):
                files.append(path)
            else:
                skipped.append({"path": name, "reason": "not a regular file (FIFO, socket...)"})
    return sorted(files)


def discover(paths: Iterable[Path], settings: IngestSettings | None = None) -> Discovery:
    """Find the files to ingest under ``paths`` (files or folders).

    A folder is a corpus root: sources are named relative to it (``source_name``), hidden
    files and those matched by its ``.ragignore`` are left out, unknown extensions are listed
    as skipped, and so are symbolic links to outside the folder unless
    ``settings.follow_symlinks``, links to folders inside it, and broken links. A single file
    is named relative to its parent folder.
    """
    follow = settings.follow_symlinks if settings is not None else False
    found = Discovery()
    for given in paths:
        path = Path(given)
        if not path.exists():
            name = source_name(str(path))
            found.skipped.append({"path": name, "reason": "no such file or folder"})
            continue
        skipped: list[dict[str, str]] = []
        if path.is_file():
            root = path.parent.resolve()
            candidates = [path.resolve()]
            patterns: list[str] = []
        else:
            root = path.resolve()
            found.roots.append(root)
            patterns = _ignore_patterns(root)
            candidates = _walk(root, follow, skipped)
        seen: set[str] = set()
        for file in candidates:
            source = SourceFile(file, root)
            relative = source.source
            if any(part.startswith(".") for part in file.relative_to(root).parts):
                continue
            if file.name.endswith(META_SUFFIX):
                continue  # a sidecar: read with the file it describes
            if relative == SYNONYMS_FILE and path.is_dir():
                continue  # the folder's synonym list: read by retrieval, not a document
            suffix = PurePosixPath(relative).suffix
            if _ignored(file.relative_to(root).as_posix(), patterns):
                skipped.append({"path": relative, "reason": f"ignored by {IGNORE_FILE}"})
            elif suffix.lower() not in SUPPORTED_SUFFIXES:
                skipped.append(
                    {"path": relative, "reason": f"unsupported file type {suffix or '(none)'}"}
                )
            elif relative in seen:
                # Only an escaped name can equal another file's name (see source_name).
                skipped.append(
                    {"path": relative, "reason": "another file has the same name: rename one"}
                )
            else:
                seen.add(relative)
                found.files.append(source)
        found.skipped.extend(sorted(skipped, key=lambda s: s["path"]))
    return found


# ---------------------------------------------------------------------------- text decoding


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")  # control characters but \t \n \f \r


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    controls = sum(1 for _ in _CONTROL.finditer(text))
    return controls / len(text) > 0.02


def decode_text(data: bytes) -> str:
    """Decode bytes of a text file: UTF-8 (with or without BOM), UTF-16 with BOM, GB18030/GBK,
    Big5; raise LoadError instead of returning garbled text."""
    if not data or data.isspace():  # no copy of a large file
        raise LoadError("file is empty")
    if data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    elif b"\x00" in data:
        raise LoadError("binary content (NUL bytes): not a text file")
    else:
        candidates = ["utf-8", "gb18030", "big5"]
    decoded: dict[str, str] = {}
    for encoding in candidates:
        try:
            decoded[encoding] = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding in ("utf-8", "utf-8-sig", "utf-16"):
            break
    if "gb18030" in decoded and "big5" in decoded:
        # Both legacy decodings succeed on many byte strings; let the detector arbitrate.
        from charset_normalizer import from_bytes

        best = from_bytes(data, cp_isolation=["gb18030", "big5"]).best()
        keep = "big5" if best is not None and best.encoding == "big5" else "gb18030"
        decoded = {keep: decoded[keep]}
    if not decoded:
        raise LoadError(
            "unknown text encoding (not UTF-8, GB18030/GBK or Big5): save the file as UTF-8"
        )
    text = next(iter(decoded.values()))
    if _looks_binary(text):
        raise LoadError("binary or garbled content: not a readable text file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ------------------------------------------------------------------------------- per format


def _first_heading(text: str) -> str | None:
    match = re.search(r"^#{1,3}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def _doc(text: str, file: SourceFile, **metadata: Any) -> Document:
    meta = {"source": file.source, "file_type": file.path.suffix.lower().lstrip(".")}
    meta.update({k: v for k, v in metadata.items() if v is not None})
    return Document(page_content=text, metadata=meta)


def _load_plain(
    file: SourceFile, data: bytes, problems: list[str], ctx: _Context
) -> list[Document]:
    text = decode_text(data).strip()
    first_line = text.split("\n", 1)[0].strip()
    title = first_line[:60] if first_line else file.stem
    return [_doc(text, file, title=title, markup="text")]


def _load_markdown(
    file: SourceFile, data: bytes, problems: list[str], ctx: _Context
) -> list[Document]:
    text = decode_text(data).strip()
    front: dict[str, Any] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        front = _parse_front_matter(match.group(1))
        text = text[match.end() :].strip()
    doc = _doc(text, file, title=_first_heading(text) or file.stem, markup="markdown")
    doc.metadata["front_matter"] = front  # merged (and checked) by load_file
    return [doc]


def _parse_front_matter(block: str) -> dict[str, Any]:
    import yaml

    try:
        parsed = yaml.safe_load(block)
    except yaml.YAMLError as e:
        raise LoadError(f"front matter is not valid YAML ({e})") from e
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise LoadError("front matter must be `key: value` lines")
    return parsed


def user_metadata(file: SourceFile, front_matter: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metadata a user attached to ``file``: Markdown front matter, then the ``NAME.meta.json``
    sidecar over it. Values must be strings, numbers or booleans (what every store can
    filter on); keys the package sets itself are refused.

    >>> user_metadata(SourceFile(Path("corpus/faq.csv"), Path("corpus")), {"team": "售后"})
    {'team': '售后'}
    """
    merged = dict(front_matter or {})
    sidecar = file.path.with_name(file.path.name + META_SUFFIX)
    sidecar_name = PurePosixPath(file.source).name + META_SUFFIX  # printable, unlike sidecar.name
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LoadError(f"cannot read {sidecar_name}: {e}") from e
        if not isinstance(data, dict):
            raise LoadError(f'{sidecar_name} must hold one JSON object, e.g. {{"team": "售后"}}')
        merged.update(data)
    for key, value in merged.items():
        where = f"metadata key {key!r}"
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise LoadError(f"{where}: keys must be non-empty names not starting with $")
        if key in RESERVED_METADATA:
            raise LoadError(f"{where} is set by rag_pipeline itself: choose another name")
        if isinstance(value, float) and not math.isfinite(value):
            raise LoadError(f"{where}: {value!r} is not a finite number")
        if not isinstance(value, str | int | float | bool):
            raise LoadError(f"{where}: values must be a string, number or boolean, not {value!r}")
    return merged


def _table_lines(rows: Iterable[Iterable[str]]) -> list[str]:
    lines = []
    for row in rows:
        cells = [" ".join(c.split()) for c in row]
        if any(cells):
            lines.append("| " + " | ".join(cells) + " |")
    return lines


_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_PARAGRAPHS = frozenset({"p", "pre", "blockquote", "dt"})
# Tags that end a stretch of loose text (text not inside any of the blocks above).
_HTML_BREAKS = frozenset(
    "address article aside br dd div dl figcaption figure form header hr main ol section td th "
    "tr ul".split()
)


def _last_descendant(node: Any) -> Any:
    from bs4 import Tag

    while isinstance(node, Tag) and node.contents:
        node = node.contents[-1]
    return node


def _html_lines(body: Any) -> list[str]:
    """The visible text of ``body`` as Markdown-like lines, in document order.

    One loop over ``next_element`` instead of recursion, so a page of thousands of nested
    tags cannot exhaust the stack; a block (heading, paragraph, table) is emitted whole and
    its subtree skipped, each list item is one ``- `` line (nested items are their own lines,
    not repeated in their parent), and text outside any block (``<div>text</div>``) is kept
    as a paragraph.
    """
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    lines: list[str] = []
    buffer: list[str] = []
    open_items: list[Any] = []  # the last descendant of each list item we are inside

    def flush() -> None:
        text = " ".join(s.strip() for s in buffer if s.strip())
        buffer.clear()
        if text and open_items:
            lines.append("- " + text)
        elif text:
            lines.extend([text, ""])

    end = _last_descendant(body).next_element
    node = body.next_element
    while node is not None and node is not end:
        last = node  # the last node this step covers (a whole subtree when one is skipped)
        if isinstance(node, Tag):
            name = node.name
            if name in ("head", "title"):
                last = _last_descendant(node)
            elif name == "table":
                flush()
                rows = (
                    (cell.get_text(" ", strip=True) for cell in tr.find_all(["th", "td"]))
                    for tr in node.find_all("tr")
                )
                lines.extend(["", *_table_lines(rows), ""])
                last = _last_descendant(node)
            elif name in _HTML_HEADINGS and not open_items:
                flush()
                heading = "#" * int(name[1]) + " " + node.get_text(" ", strip=True)
                lines.extend(["", heading, ""])
                last = _last_descendant(node)
            elif name in _HTML_PARAGRAPHS and not open_items:
                flush()
                buffer.append(node.get_text(" ", strip=True))
                flush()
                last = _last_descendant(node)
            elif name == "li":
                flush()
                open_items.append(_last_descendant(node))
            elif name in _HTML_BREAKS:
                flush()
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            buffer.append(str(node))
        while open_items and open_items[-1] is last:
            flush()  # the list item ends here: its text is one line
            open_items.pop()
        node = last.next_element
    flush()
    return lines


def _load_html(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    from bs4 import BeautifulSoup

    # Let BeautifulSoup honour <meta charset>; fall back to our detector for bare files.
    soup = BeautifulSoup(data, "html.parser")
    if soup.original_encoding is None:
        soup = BeautifulSoup(decode_text(data), "html.parser")
    for junk in soup(["script", "style", "noscript", "nav", "footer", "template"]):
        junk.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    lines = _html_lines(soup.body or soup)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise LoadError("HTML page has no visible text")
    return [_doc(text, file, title=title or _first_heading(text), markup="markdown")]


def _load_docx(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    from docx import Document as DocxDocument
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        docx = DocxDocument(io.BytesIO(data))
    except Exception as e:  # python-docx raises several types for a bad zip/package
        raise LoadError(f"not a valid .docx file ({type(e).__name__}: {e})") from e
    lines: list[str] = []
    for block in docx.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = re.match(r"Heading (\d)", style)
            if level:
                lines.extend(["", "#" * int(level.group(1)) + " " + text, ""])
            elif style == "Title":
                lines.extend(["", "# " + text, ""])
            else:
                lines.extend([text, ""])
        elif isinstance(block, Table):
            rows = ((cell.text for cell in row.cells) for row in block.rows)
            lines.extend(["", *_table_lines(rows), ""])
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise LoadError("document has no text")
    title = docx.core_properties.title or _first_heading(text) or file.stem
    return [_doc(text, file, title=title, markup="markdown")]


def _unwrap_pdf_lines(text: str) -> str:
    """Undo layout wrapping: PDF extraction ends a line wherever the page wrapped it, often
    mid-sentence in Chinese. A near-full-width line ending and the next starting with Chinese
    text is joined; short lines (headings) and list items keep their break."""
    lines = text.split("\n")
    width = max((len(line) for line in lines), default=0)
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out else ""
        if (
            previous
            and len(previous) >= 0.8 * width
            and _CJK_OR_COMMA.match(previous[-1])
            and _CJK_OR_COMMA.match(line[:1] or " ")
        ):
            out[-1] = previous + line
        else:
            out.append(line)
    return "\n".join(out)


def _page_list(numbers: list[int]) -> str:
    """Page numbers as short ranges.

    >>> _page_list([1, 2, 3, 5, 7, 8])
    '1-3, 5, 7-8'
    """
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _has_images(page: Any) -> bool:
    """Whether a page holds images (lists the image objects, decodes none of them)."""
    try:
        return len(page.images) > 0
    except Exception:  # a damaged image dictionary: something is there, OCR will say what
        return True


def _scanned_problem(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"page {numbers[0]}: scanned page (no text layer), {INSTALL_HINT} to read it"
    return (
        f"pages {_page_list(numbers)}: scanned pages (no text layer), {INSTALL_HINT} to read them"
    )


def _ocr_page(page: Any, number: int, ctx: _Context) -> OcrText:
    """The OCR'd text of a page without a text layer: each of its images (a scanned page is
    normally one), in the order the page lists them."""
    parts: list[OcrText] = []
    try:
        images = list(page.images)
        for image in images:
            parts.append(ctx.ocr.read_image(image.image))
    except LoadError as e:
        raise LoadError(f"page {number}: {e}") from e
    except Exception as e:  # pypdf / Pillow errors on an image it cannot decode
        raise LoadError(
            f"page {number}: scanned page whose image cannot be read ({type(e).__name__}: {e})"
        ) from e
    text = "\n\n".join(part.text for part in parts if part.text)
    chars = sum(len(part.text) for part in parts if part.confidence is not None)
    confidence = (
        sum(part.confidence * len(part.text) for part in parts if part.confidence is not None)
        / chars
        if chars
        else None
    )
    return OcrText(text, confidence, sum(part.dropped for part in parts))


def _no_ocr_text(where: str, result: OcrText, ctx: _Context) -> str:
    reason = f"{where}: OCR found no text"
    if result.dropped:
        reason += (
            f" ({result.dropped} line(s) under the minimum confidence "
            f"{ctx.ocr.min_confidence:g}: lower RAG_INGEST__OCR_MIN_CONFIDENCE to keep them)"
        )
    return reason


def _load_pdf(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    """One Document per page with text. A page without a text layer (no extractable text, or
    only whitespace) that holds images is a scanned page: OCR'd with the extra (``ocr: true``
    in its metadata), listed in ``problems`` without it, never silently empty. A page with
    neither text nor images is blank and left out."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    texts: list[tuple[int, str]] = []
    scanned: list[tuple[int, Any]] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError("PDF is encrypted: remove the password and ingest again")
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if text.strip():
                texts.append((number, text))
            elif _has_images(page):
                scanned.append((number, page))
        title = reader.metadata.title if reader.metadata else None
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as e:
        raise LoadError(f"not a readable PDF ({type(e).__name__}: {e})") from e
    pages: list[Document] = []
    for number, text in texts:
        pages.append(
            _doc(
                _unwrap_pdf_lines(text.strip()),
                file,
                title=title or file.stem,
                page=number,
                markup="text",
            )
        )
    if scanned:
        try:
            ctx.ocr.ensure_available()
        except MissingExtraError as e:
            missing = _scanned_problem([number for number, _ in scanned])
            if not pages:  # nothing else to read: the extra alone could read this file
                raise NeedsExtraError(missing) from e
            # The text pages are still ingested; the scanned ones are named in the report.
            problems.append(missing)
            scanned = []
    for number, page in scanned:
        try:
            result = _ocr_page(page, number, ctx)
        except LoadError as e:
            problems.append(str(e))
            continue
        if not result.text:
            problems.append(_no_ocr_text(f"page {number}: scanned page", result, ctx))
            continue
        pages.append(
            _doc(
                result.text,
                file,
                title=title or file.stem,
                page=number,
                markup="text",
                ocr=True,
                ocr_confidence=_rounded(result.confidence),
            )
        )
    pages.sort(key=lambda doc: doc.metadata["page"])
    return _rows_or_raise(
        pages, problems, "PDF has no extractable text and no page images (blank pages?)"
    )


def _rounded(confidence: float | None) -> float | None:
    return None if confidence is None else round(confidence, 3)


def _load_image(
    file: SourceFile, data: bytes, problems: list[str], ctx: _Context
) -> list[Document]:
    """A screenshot or photo of text, read by OCR (lines in reading order)."""
    try:
        ctx.ocr.ensure_available()
    except MissingExtraError as e:
        raise NeedsExtraError(
            f"images are read by OCR, which is not installed: {INSTALL_HINT} "
            '(pip install "rag-pipeline[ocr]")'
        ) from e
    result = ctx.ocr.read(data)
    if not result.text:
        raise LoadError(_no_ocr_text("image", result, ctx))
    first_line = result.text.split("\n", 1)[0].strip()
    return [
        _doc(
            result.text,
            file,
            title=first_line[:60] or file.stem,
            markup="text",
            ocr=True,
            ocr_confidence=_rounded(result.confidence),
        )
    ]


def _pick_value(row: dict[str, Any], keys: frozenset[str]) -> Any:
    for key, value in row.items():
        if key is not None and header_key(key) in keys and value is not None:
            return value
    return None


def _pick(row: dict[str, Any], keys: frozenset[str]) -> str:
    value = _pick_value(row, keys)
    return "" if value is None else str(value).strip()


def _faq_doc(
    file: SourceFile,
    row: dict[str, Any],
    number: int,
    columns: FaqColumns,
    where: str = "row",
    **metadata: Any,
) -> Document:
    """One FAQ entry as a Document: the ``问：/相似问法：/答：`` text that the keyword index's
    question field and the extractive answerer's ``faq_parts`` read, and its metadata."""
    question = _pick(row, columns.question)
    answer = _pick(row, columns.answer)
    raw = _pick_value(row, columns.similar)
    pieces = raw if isinstance(raw, list) else _PHRASING_SEPARATORS.split(str(raw or ""))
    alternatives = [str(a).strip() for a in pieces if str(a).strip()]
    if not question or not answer:
        raise LoadError(f"{where} {number}: an FAQ entry needs both a question and an answer")
    lines = [f"问：{question}"]
    if alternatives:
        lines.append("相似问法：" + "；".join(alternatives))
    lines.append(f"答：{answer}")
    return _doc(
        "\n".join(lines),
        file,
        title=question,
        doc_type="faq",
        row=number,
        faq_question=question,
        faq_answer=answer,
        faq_alternatives="|".join(alternatives) or None,
        markup="faq",
        **metadata,
    )


def _rows_or_raise(docs: list[Document], problems: list[str], empty: str) -> list[Document]:
    if not docs:
        raise LoadError("; ".join(problems) if problems else empty)
    return docs


def _load_csv(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    try:
        reader = csv.DictReader(io.StringIO(decode_text(data)))
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as e:
        raise LoadError(f"not a readable CSV file ({e})") from e
    is_faq = ctx.faq.is_faq(header)
    docs = []
    for number, row in enumerate(rows, start=1):
        if is_faq:
            if not any(isinstance(v, str) and v.strip() for v in row.values()):
                continue  # a blank line of commas
            try:
                docs.append(_faq_doc(file, row, number, ctx.faq))
            except LoadError as e:
                problems.append(str(e))
        else:
            text = "\n".join(f"{k}: {v}" for k, v in row.items() if k and v and v.strip())
            if text:
                docs.append(_doc(text, file, title=file.stem, row=number, markup="text"))
    return _rows_or_raise(docs, problems, "CSV file has a header but no rows")


def _load_jsonl(
    file: SourceFile, data: bytes, problems: list[str], ctx: _Context
) -> list[Document]:
    docs = []
    for number, line in enumerate(decode_text(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LoadError(f"line {number} is not valid JSON ({e.msg})") from e
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, [[[[... nested deep
            raise LoadError(f"line {number} cannot be read as JSON ({e})") from e
        if not isinstance(record, dict):
            raise LoadError(f"line {number}: expected a JSON object")
        if _pick(record, ctx.faq.question) and _pick(record, ctx.faq.answer):
            docs.append(_faq_doc(file, record, number, ctx.faq, "line"))
        elif isinstance(record.get("text"), str) and record["text"].strip():
            title = str(record.get("title") or "").strip() or None
            body = record["text"].strip()
            docs.append(
                _doc(
                    f"# {title}\n\n{body}" if title else body,
                    file,
                    title=title,
                    row=number,
                    record_id=str(record["id"]) if "id" in record else None,
                    markup="markdown" if title else "text",
                )
            )
        elif _pick(record, ctx.faq.question) or _pick(record, ctx.faq.answer):
            problems.append(f"line {number}: an FAQ entry needs both a question and an answer")
        else:
            raise LoadError(
                f"line {number}: expected {{question, answer}} (FAQ) or {{text}} (passage) keys"
            )
    return _rows_or_raise(docs, problems, "file has no records")


# ------------------------------------------------------------------------- workbooks, slides


@dataclass(frozen=True)
class _Context:
    """What a loader may need from the settings."""

    faq: FaqColumns
    table_chunk_chars: int = DEFAULT_TABLE_CHUNK_CHARS
    # Shared by the files of an ingest run, so the OCR models load once (and only if needed).
    ocr: OcrReader = field(default_factory=OcrReader)


def _cell_text(value: object) -> str:
    """A cell value as text: ``99`` not ``99.0``, a date without a midnight time."""
    import datetime as dt

    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELS_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DOC_RELS_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"


def _merged_ranges(data: bytes) -> dict[str, list[tuple[int, int, int, int]]]:
    """Each sheet's merged ranges, by sheet name, as (min_col, min_row, max_col, max_row).

    openpyxl's read-only mode streams cell values and does not parse ``<mergeCells>``; a full
    load would give ``merged_cells.ranges`` but holds every cell object of the workbook in
    memory. So the package is read here with zipfile and defusedxml (the Office Open XML
    layout: workbook.xml names the sheets, its relationships name their parts) and only the
    merge references are kept, the cell data streamed past.
    """
    import zipfile

    # defusedxml: a workbook is untrusted input (entity expansion, external entities).
    from defusedxml.ElementTree import fromstring, iterparse
    from openpyxl.utils.cell import range_boundaries

    found: dict[str, list[tuple[int, int, int, int]]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        names = set(package.namelist())
        rels = fromstring(package.read("xl/_rels/workbook.xml.rels"))
        targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{_RELS_NS}Relationship")}
        workbook = fromstring(package.read("xl/workbook.xml"))
        for sheet in workbook.iter(f"{_SHEET_NS}sheet"):
            target = targets.get(sheet.get(f"{_DOC_RELS_NS}id"), "")
            part = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            if part not in names:
                continue
            ranges = []
            with package.open(part) as xml:
                for _, element in iterparse(xml):
                    if element.tag == f"{_SHEET_NS}mergeCell" and element.get("ref"):
                        bounds = range_boundaries(element.get("ref", ""))
                        if None not in bounds:
                            ranges.append(cast("tuple[int, int, int, int]", bounds))
                    elif element.tag == f"{_SHEET_NS}row":
                        element.clear()  # cell data: read by openpyxl, not kept here
            found[sheet.get("name", "")] = ranges
    return found


def _grid(
    rows: Iterable[Iterable[object]], merges: list[tuple[int, int, int, int]]
) -> list[list[str]]:
    """Cell texts by row (row 1 first), each merged range filled with its top-left value."""
    grid = [[_cell_text(v) for v in row] for row in rows]
    for min_col, min_row, max_col, max_row in merges:
        if min_row > len(grid) or min_col > len(grid[min_row - 1]):
            continue
        value = grid[min_row - 1][min_col - 1]
        for r in range(min_row - 1, min(max_row, len(grid))):
            row = grid[r]
            row.extend([""] * (max_col - len(row)))
            for c in range(min_col - 1, max_col):
                row[c] = value
    return grid


def _sheet_docs(
    file: SourceFile, sheet: str, grid: list[list[str]], problems: list[str], ctx: _Context
) -> list[Document]:
    """One sheet's Documents: FAQ entries when its header row names FAQ columns, else table
    chunks (header repeated, whole rows) of up to ``ctx.table_chunk_chars`` characters."""
    numbered = [(n, row) for n, row in enumerate(grid, start=1) if any(row)]
    if not numbered:
        return []
    width = max(len(row) for _, row in numbered)
    used = [c for c in range(width) if any(c < len(row) and row[c] for _, row in numbered)]
    rows = [(n, [row[c] if c < len(row) else "" for c in used]) for n, row in numbered]
    caption = sheet
    if len(rows) > 1 and len(used) > 1 and len(set(rows[0][1])) == 1:
        # A title merged across the whole width above the real header row ("积分商城兑换表"
        # over A1:E1): it names the table, it is no column.
        caption = f"{sheet} > {rows[0][1][0]}" if rows[0][1][0] != sheet else sheet
        rows = rows[1:]
    (_, header), body = rows[0], rows[1:]
    if ctx.faq.is_faq(header):
        docs = []
        for number, cells in body:
            try:
                entry = dict(zip(header, cells, strict=True))
                docs.append(
                    _faq_doc(file, entry, number, ctx.faq, f"sheet {sheet!r} row", sheet=sheet)
                )
            except LoadError as e:
                problems.append(str(e))
        return docs
    top = [
        f"【{file.stem} > {caption}】",
        *_table_lines([header]),
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    docs = []

    def table_doc(lines: list[str], first: int, last: int) -> None:
        docs.append(
            _doc(
                "\n".join(lines),
                file,
                title=sheet,
                sheet=sheet,
                row=first,
                row_end=last,
                doc_type="table",
                markup="table",
            )
        )

    header_size = sum(len(line) + 1 for line in top)
    group: list[tuple[int, str]] = []
    size = header_size  # characters of the chunk being filled, kept as rows join it
    for number, cells in body:
        (line,) = _table_lines([cells])
        if group and size + len(line) > ctx.table_chunk_chars:
            table_doc([*top, *(row for _, row in group)], group[0][0], group[-1][0])
            group, size = [], header_size
        group.append((number, line))
        size += len(line) + 1
    if group:
        table_doc([*top, *(row for _, row in group)], group[0][0], group[-1][0])
    if not body:  # a header and nothing under it: still a (one-row) table
        table_doc(top[:2], rows[0][0], rows[0][0])
    return docs


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a compound file: .xls, or an encrypted .xlsx


def _load_xlsx(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    if data.startswith(_OLE_MAGIC):
        try:
            return _load_xls(file, data, problems, ctx)  # an old .xls named .xlsx
        except LoadError as e:
            # Excel wraps a password-protected .xlsx in the same container format.
            raise LoadError(
                "encrypted (password-protected) workbook: remove the password in Excel and "
                "save it as .xlsx"
            ) from e
    from openpyxl import load_workbook

    docs: list[Document] = []
    try:
        # data_only: the values Excel last calculated, not formula text.
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        merges = _merged_ranges(data)
        try:
            for sheet in book.worksheets:
                if sheet.sheet_state != "visible":
                    continue  # hidden sheets hold lookups and drafts, not answers
                sheet.reset_dimensions()  # a stale <dimension> would cut rows off
                grid = _grid(sheet.iter_rows(values_only=True), merges.get(sheet.title, []))
                docs.extend(_sheet_docs(file, sheet.title, grid, problems, ctx))
        finally:
            book.close()
    except LoadError:
        raise
    except Exception as e:  # openpyxl raises zip, XML, key and value errors for a bad file
        raise LoadError(f"not a readable .xlsx workbook ({type(e).__name__}: {e})") from e
    return _rows_or_raise(docs, problems, "workbook has no cells with text")


def _xls_value(cell: Any, datemode: int) -> object:
    import xlrd

    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate.xldate_as_datetime(cell.value, datemode)
        except (xlrd.xldate.XLDateError, ValueError, OverflowError):
            return cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return None  # #N/A, #DIV/0!: no text to index
    return cell.value


def _load_xls(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    """The old binary Excel format, read with xlrd (2.x reads only .xls)."""
    if data.startswith(b"PK\x03\x04"):
        return _load_xlsx(file, data, problems, ctx)  # a .xlsx workbook named .xls
    try:
        import xlrd
    except ImportError as e:  # a dependency, but an environment may predate it
        raise LoadError(
            'old Excel .xls needs xlrd (pip install "xlrd>=2.0,<3"), or save the file as .xlsx'
        ) from e
    docs: list[Document] = []
    try:
        # formatting_info: xlrd reads merged ranges only with it.
        book = xlrd.open_workbook(file_contents=data, formatting_info=True, on_demand=True)
        try:
            for sheet in book.sheets():
                if sheet.visibility != 0:
                    continue  # hidden sheets hold lookups and drafts, not answers
                rows = (
                    [_xls_value(cell, book.datemode) for cell in sheet.row(r)]
                    for r in range(sheet.nrows)
                )
                merges = [(c0 + 1, r0 + 1, c1, r1) for r0, r1, c0, c1 in sheet.merged_cells]
                docs.extend(_sheet_docs(file, sheet.name, _grid(rows, merges), problems, ctx))
        finally:
            book.release_resources()
    except LoadError:
        raise
    except Exception as e:  # xlrd raises XLRDError, struct and index errors for a bad file
        reason = str(e)
        if "encrypted" in reason.lower():
            raise LoadError("encrypted (password-protected) workbook: remove the password") from e
        raise LoadError(f"not a readable .xls workbook ({type(e).__name__}: {e})") from e
    return _rows_or_raise(docs, problems, "workbook has no cells with text")


def _shape_lines(shapes: Iterable[Any], skip: Any) -> list[str]:
    """Text of slide shapes in reading order (top to bottom, then left to right); tables as
    Markdown tables, groups read inside."""

    def position(shape: Any) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    from pptx.shapes.group import GroupShape

    lines: list[str] = []
    for shape in sorted(shapes, key=position):
        if skip is not None and shape.shape_id == skip.shape_id:
            continue
        if isinstance(shape, GroupShape):
            lines.extend(_shape_lines(shape.shapes, None))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
            table = _table_lines(rows)
            if table:
                rule = "| " + " | ".join("---" for _ in rows[0]) + " |"
                lines.extend(["", table[0], rule, *table[1:], ""])
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                text = "".join(run.text for run in paragraph.runs).strip() or paragraph.text.strip()
                if text:
                    lines.append(("- " if paragraph.level else "") + text)
            lines.append("")
    return lines


def _load_pptx(file: SourceFile, data: bytes, problems: list[str], ctx: _Context) -> list[Document]:
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
        title = deck.core_properties.title or file.stem
        docs = []
        for number, slide in enumerate(deck.slides, start=1):
            heading = slide.shapes.title
            name = (
                heading.text_frame.text.strip()
                if heading is not None and heading.has_text_frame
                else ""
            )
            lines = [f"# {name}", ""] if name else []
            lines.extend(_shape_lines(slide.shapes, heading))
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                text = notes.text.strip() if notes is not None else ""
                if text:
                    lines.extend(["", "## 演讲者备注", "", text])
            body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
            if body and body != f"# {name}":
                docs.append(_doc(body, file, title=title, page=number, markup="markdown"))
            elif body:
                docs.append(_doc(body, file, title=title, page=number, markup="text"))
    except Exception as e:  # python-pptx raises zip, XML and key errors for a bad package
        raise LoadError(f"not a readable .pptx presentation ({type(e).__name__}: {e})") from e
    if not docs:
        raise LoadError("presentation has no slide with text")
    return docs


_LOADERS = {
    **dict.fromkeys(TEXT_SUFFIXES, _load_plain),
    **dict.fromkeys(MARKDOWN_SUFFIXES, _load_markdown),
    **dict.fromkeys(HTML_SUFFIXES, _load_html),
    ".docx": _load_docx,
    ".pdf": _load_pdf,
    ".csv": _load_csv,
    ".jsonl": _load_jsonl,
    ".xlsx": _load_xlsx,
    ".xls": _load_xls,
    ".pptx": _load_pptx,
    **dict.fromkeys(IMAGE_SUFFIXES, _load_image),
}


def load_file(
    file: SourceFile,
    *,
    max_file_mb: float | None = None,
    problems: list[str] | None = None,
    faq_columns: FaqColumnSettings | None = None,
    table_chunk_chars: int = DEFAULT_TABLE_CHUNK_CHARS,
    ocr: OcrReader | None = None,
) -> list[Document]:
    """Read one file into Documents; raise LoadError with a human reason when it can't.

    A file over ``max_file_mb`` is refused before it is read. With a ``problems`` list, an FAQ
    row or line without a question or an answer is left out and described there while the
    other rows load; without one, such a row fails the whole file. ``faq_columns`` names the
    header cells of an FAQ table; a spreadsheet's other sheets are cut into chunks of whole
    rows of up to ``table_chunk_chars`` characters (the splitter keeps them as they are, since
    only the loader knows which sheet row each line came from). ``ocr`` reads images and
    scanned PDF pages; pass one reader for many files so its models load once (without one,
    a reader with the default minimum confidence is made for this file).
    """
    loader = _LOADERS.get(file.path.suffix.lower())
    if loader is None:
        raise LoadError(f"unsupported file type {PurePosixPath(file.source).suffix}")
    try:
        if max_file_mb is not None:
            size = file.path.stat().st_size
            if size > max_file_mb * 1024 * 1024:
                raise LoadError(
                    f"file is {size / 1024 / 1024:.1f} MB, over the limit of {max_file_mb:g} MB: "
                    "raise RAG_INGEST__MAX_FILE_MB (ingest.max_file_mb) to ingest it"
                )
        data = file.path.read_bytes()
    except PermissionError as e:
        raise LoadError("permission denied: make the file readable for this user") from e
    except OSError as e:
        raise LoadError(f"cannot read file ({e.strerror or e})") from e
    if not data or data.isspace():  # no copy of a large file
        raise LoadError("file is empty")
    collected: list[str] = []
    ctx = _Context(FaqColumns.of(faq_columns), table_chunk_chars, ocr or OcrReader())
    docs = loader(file, data, collected, ctx)
    del data  # the bytes of a large file are not needed while its metadata is merged
    if collected:
        if problems is None:
            raise LoadError(collected[0])
        problems.extend(collected)
    front = docs[0].metadata.get("front_matter") if docs else None
    extra = user_metadata(file, front)
    for doc in docs:
        doc.metadata.pop("front_matter", None)
        doc.metadata.update(extra)
    return docs
