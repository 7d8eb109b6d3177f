"""Files -> LangChain Documents, with a reason for every file that could not be read.

One Document per file, per page for PDF, per question/answer pair for FAQ files. HTML and DOCX
are turned into Markdown-like text (headings as ``#``, table rows as ``a | b | c`` lines) so the
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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag_pipeline.errors import LoadError

TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = (
    TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx", ".csv", ".jsonl"}
)
IGNORE_FILE = ".ragignore"
# ``NAME.meta.json`` beside a file holds metadata merged into every chunk of NAME.
META_SUFFIX = ".meta.json"
# Keys the loaders, the splitter and the retriever set themselves; user metadata cannot.
RESERVED_METADATA = frozenset(
    {"source", "file_type", "title", "markup", "page", "doc_type", "headers", "start_index"}
    | {"chunk_index", "content_hash", "score", "dense_relevance", "keyword_coverage", "bm25"}
    | {"rerank_score", "faq_question", "faq_answer", "faq_alternatives", "row"}
)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_CJK_OR_COMMA = re.compile(r"[\u3400-\u9fff，、（“]")

# Column names accepted as the question / answer / alternatives of an FAQ table.
FAQ_QUESTION_KEYS = ("question", "问题", "q")
FAQ_ANSWER_KEYS = ("answer", "答案", "回答", "a")
FAQ_ALTERNATIVE_KEYS = ("alternatives", "相似问法", "similar")


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the corpus root its ``source`` name is relative to."""

    path: Path
    root: Path

    @property
    def source(self) -> str:
        return self.path.relative_to(self.root).as_posix()


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


def discover(paths: Iterable[Path]) -> Discovery:
    """Find the files to ingest under ``paths`` (files or folders).

    A folder is a corpus root: sources are named relative to it, hidden files and those matched
    by its ``.ragignore`` are left out, unknown extensions are listed as skipped. A single file
    is named relative to its parent folder.
    """
    found = Discovery()
    for given in paths:
        path = Path(given)
        if not path.exists():
            found.skipped.append({"path": str(path), "reason": "no such file or folder"})
            continue
        if path.is_file():
            root = path.parent.resolve()
            candidates = [path.resolve()]
            patterns: list[str] = []
        else:
            root = path.resolve()
            found.roots.append(root)
            patterns = _ignore_patterns(root)
            candidates = sorted(p for p in root.rglob("*") if p.is_file())
        for file in candidates:
            relative = file.relative_to(root).as_posix()
            if any(part.startswith(".") for part in file.relative_to(root).parts):
                continue
            if file.name.endswith(META_SUFFIX):
                continue  # a sidecar: read with the file it describes
            if _ignored(relative, patterns):
                found.skipped.append({"path": relative, "reason": f"ignored by {IGNORE_FILE}"})
            elif file.suffix.lower() not in SUPPORTED_SUFFIXES:
                found.skipped.append(
                    {"path": relative, "reason": f"unsupported file type {file.suffix or '(none)'}"}
                )
            else:
                found.files.append(SourceFile(file, root))
    return found


# ---------------------------------------------------------------------------- text decoding


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    return controls / len(text) > 0.02


def decode_text(data: bytes) -> str:
    """Decode bytes of a text file: UTF-8 (with or without BOM), UTF-16 with BOM, GB18030/GBK,
    Big5; raise LoadError instead of returning garbled text."""
    if not data.strip():
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


def _load_plain(file: SourceFile, data: bytes) -> list[Document]:
    text = decode_text(data).strip()
    first_line = text.split("\n", 1)[0].strip()
    title = first_line[:60] if first_line else file.path.stem
    return [_doc(text, file, title=title, markup="text")]


def _load_markdown(file: SourceFile, data: bytes) -> list[Document]:
    text = decode_text(data).strip()
    front: dict[str, Any] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        front = _parse_front_matter(match.group(1))
        text = text[match.end() :].strip()
    doc = _doc(text, file, title=_first_heading(text) or file.path.stem, markup="markdown")
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
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LoadError(f"cannot read {sidecar.name}: {e}") from e
        if not isinstance(data, dict):
            raise LoadError(f'{sidecar.name} must hold one JSON object, e.g. {{"team": "售后"}}')
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


def _load_html(file: SourceFile, data: bytes) -> list[Document]:
    from bs4 import BeautifulSoup

    # Let BeautifulSoup honour <meta charset>; fall back to our detector for bare files.
    soup = BeautifulSoup(data, "html.parser")
    if soup.original_encoding is None:
        soup = BeautifulSoup(decode_text(data), "html.parser")
    for junk in soup(["script", "style", "noscript", "nav", "footer", "template"]):
        junk.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    body = soup.body or soup
    lines: list[str] = []
    blocks = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "table", "pre", "blockquote", "dt"]
    for element in body.find_all(blocks):
        if element.find_parent(["table", "li", "blockquote"]) is not None and element.name != "li":
            continue  # already emitted as part of its container
        if element.name == "table":
            rows = (
                (cell.get_text(" ", strip=True) for cell in tr.find_all(["th", "td"]))
                for tr in element.find_all("tr")
            )
            lines.extend(["", *_table_lines(rows), ""])
        elif element.name.startswith("h"):
            level = int(element.name[1])
            lines.extend(["", "#" * level + " " + element.get_text(" ", strip=True), ""])
        else:
            text = element.get_text(" ", strip=True)
            if text:
                lines.append(("- " if element.name == "li" else "") + text)
                if element.name != "li":
                    lines.append("")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise LoadError("HTML page has no visible text")
    return [_doc(text, file, title=title or _first_heading(text), markup="markdown")]


def _load_docx(file: SourceFile, data: bytes) -> list[Document]:
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
    title = docx.core_properties.title or _first_heading(text) or file.path.stem
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


def _load_pdf(file: SourceFile, data: bytes) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError("PDF is encrypted: remove the password and ingest again")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as e:
        raise LoadError(f"not a readable PDF ({type(e).__name__}: {e})") from e
    docs = [
        _doc(
            _unwrap_pdf_lines(text.strip()),
            file,
            title=title or file.path.stem,
            page=number,
            markup="text",
        )
        for number, text in enumerate(pages, start=1)
        if text.strip()
    ]
    if not docs:
        raise LoadError("PDF has no extractable text (scanned images?): OCR it first")
    return docs


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key, value in row.items():
        if key is not None and key.strip().lower() in keys and value is not None:
            return str(value).strip()
    return ""


def _faq_doc(file: SourceFile, row: dict[str, Any], number: int) -> Document:
    question = _pick(row, FAQ_QUESTION_KEYS)
    answer = _pick(row, FAQ_ANSWER_KEYS)
    alternatives_raw = row.get("alternatives")
    if isinstance(alternatives_raw, list):
        alternatives = [str(a).strip() for a in alternatives_raw if str(a).strip()]
    else:
        raw = _pick(row, FAQ_ALTERNATIVE_KEYS)
        alternatives = [a.strip() for a in raw.split("|") if a.strip()]
    if not question or not answer:
        raise LoadError(f"row {number}: an FAQ entry needs both a question and an answer")
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
    )


def _load_csv(file: SourceFile, data: bytes) -> list[Document]:
    reader = csv.DictReader(io.StringIO(decode_text(data)))
    header = [h.strip().lower() for h in (reader.fieldnames or []) if h]
    is_faq = any(k in header for k in FAQ_QUESTION_KEYS) and any(
        k in header for k in FAQ_ANSWER_KEYS
    )
    docs = []
    for number, row in enumerate(reader, start=1):
        if is_faq:
            docs.append(_faq_doc(file, row, number))
        else:
            text = "\n".join(f"{k}: {v}" for k, v in row.items() if k and v and v.strip())
            if text:
                docs.append(_doc(text, file, title=file.path.stem, row=number, markup="text"))
    if not docs:
        raise LoadError("CSV file has a header but no rows")
    return docs


def _load_jsonl(file: SourceFile, data: bytes) -> list[Document]:
    docs = []
    for number, line in enumerate(decode_text(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LoadError(f"line {number} is not valid JSON ({e.msg})") from e
        if not isinstance(record, dict):
            raise LoadError(f"line {number}: expected a JSON object")
        if _pick(record, FAQ_QUESTION_KEYS) and _pick(record, FAQ_ANSWER_KEYS):
            docs.append(_faq_doc(file, record, number))
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
        else:
            raise LoadError(
                f"line {number}: expected {{question, answer}} (FAQ) or {{text}} (passage) keys"
            )
    if not docs:
        raise LoadError("file has no records")
    return docs


_LOADERS = {
    **dict.fromkeys(TEXT_SUFFIXES, _load_plain),
    **dict.fromkeys(MARKDOWN_SUFFIXES, _load_markdown),
    **dict.fromkeys(HTML_SUFFIXES, _load_html),
    ".docx": _load_docx,
    ".pdf": _load_pdf,
    ".csv": _load_csv,
    ".jsonl": _load_jsonl,
}


def load_file(file: SourceFile) -> list[Document]:
    """Read one file into Documents; raise LoadError with a human reason when it can't."""
    loader = _LOADERS.get(file.path.suffix.lower())
    if loader is None:
        raise LoadError(f"unsupported file type {file.path.suffix}")
    try:
        data = file.path.read_bytes()
    except PermissionError as e:
        raise LoadError("permission denied: make the file readable for this user") from e
    except OSError as e:
        raise LoadError(f"cannot read file ({e.strerror or e})") from e
    if not data.strip():
        raise LoadError("file is empty")
    docs = loader(file, data)
    front = docs[0].metadata.get("front_matter") if docs else None
    extra = user_metadata(file, front)
    for doc in docs:
        doc.metadata.pop("front_matter", None)
        doc.metadata.update(extra)
    return docs
