"""Offline OCR of images and scanned PDF pages (the ``[ocr]`` extra).

The engine is ``rapidocr-onnxruntime``: PP-OCR detection, direction and recognition models
for Chinese and English, shipped inside its wheel (nothing is downloaded). It is imported
only when an image is read, and one engine serves a whole ingest run (``OcrReader`` builds
it on first use: loading the models takes a while).

The engine returns boxes of text in no guaranteed order; ``reading_order`` puts them back
into lines (top to bottom, left to right within a line) and ``page_text`` drops the lines
whose recognition confidence is under the minimum before joining them (a paragraph the layout
wrapped mid-sentence is joined back into one line).

With a ``cache_dir`` (ingest passes ``<data folder>/ocr-cache``, or ``RAG_INGEST__OCR_CACHE_DIR``)
the engine's boxes of each image are kept as JSON under the SHA-256 of its pixels and the
engine's version: re-ingesting (``--rebuild``, another collection or backend, an edited PDF
whose scans did not change) reads them instead of running the models again. A cache file that
cannot be read or parsed is ignored and written again.

>>> boxes = [
...     OcrBox("第二行", 0.9, left=10, top=60, right=90, bottom=90),
...     OcrBox("右", 0.8, left=120, top=12, right=150, bottom=38),
...     OcrBox("第一行", 0.95, left=10, top=10, right=90, bottom=40),
... ]
>>> page_text(boxes, min_confidence=0.5).text
'第一行 右\\n第二行'
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_pipeline.errors import LoadError, MissingExtraError

# Lines the recognizer is less sure of than this are dropped. Measured (``scripts/bench.py ocr``
# and the sample corpus): real lines of rendered text score 0.86-1.0, and no threshold up to
# 0.7 loses any; what the engine makes of scribbles or of text blurred past reading scores
# 0.0-0.48 (one stray "<" 0.8). 0.5 keeps the real lines of poorer scans with a margin.
DEFAULT_MIN_CONFIDENCE = 0.5
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
INSTALL_HINT = "install rag-pipeline[ocr]"
# Two boxes are on one line when their vertical centres are closer than this share of the
# smaller box's height (a line of mixed font sizes still has close centres).
SAME_LINE = 0.5
# Boxes of one line further apart than this share of the text height are separate phrases.
GAP = 0.5
# A line this long that reaches the right edge and ends mid-sentence goes on on the next line.
WRAP_MIN_CHARS = 12
_CONTINUES = re.compile(r"[\u3400-\u9fff，、（“《0-9A-Za-z]")


@dataclass(frozen=True)
class OcrBox:
    """One piece of recognized text and its bounding box (pixels, y grows downwards)."""

    text: str
    confidence: float
    left: float
    top: float
    right: float
    bottom: float

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def height(self) -> float:
        return max(self.bottom - self.top, 1.0)

    @classmethod
    def of(cls, points: Sequence[Sequence[float]], text: str, confidence: float) -> OcrBox:
        """A box from the engine's four corner points (a rotated box gets its bounds)."""
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        return cls(text, float(confidence), min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class OcrText:
    """The text of one image or page: lines in reading order, and how sure the engine was."""

    text: str
    # Mean confidence of the kept boxes, weighted by their characters (None: nothing kept).
    confidence: float | None
    dropped: int  # boxes under the minimum confidence


def reading_order(boxes: Iterable[OcrBox]) -> list[list[OcrBox]]:
    """Group boxes into lines, top to bottom, each line left to right.

    Boxes are taken by their vertical centre; a box joins the current line when its centre is
    within ``SAME_LINE`` of a box height of the line's centre (the mean of its boxes'), so a
    slightly tilted scan still reads as one line, and two lines never merge.
    """
    lines: list[list[OcrBox]] = []
    for box in sorted(boxes, key=lambda b: (b.middle, b.left)):
        if lines:
            line = lines[-1]
            centre = sum(b.middle for b in line) / len(line)
            height = min(box.height, min(b.height for b in line))
            if abs(box.middle - centre) <= SAME_LINE * height:
                line.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.left) for line in lines]


def page_text(boxes: Iterable[OcrBox], min_confidence: float) -> OcrText:
    """Join the boxes at or over ``min_confidence`` into lines of text (see ``reading_order``
    and ``_join_line``)."""
    kept: list[OcrBox] = []
    dropped = 0
    for box in boxes:
        if box.text.strip() and box.confidence >= min_confidence:
            kept.append(box)
        elif box.text.strip():
            dropped += 1
    chars = sum(len(b.text.strip()) for b in kept)
    confidence = sum(b.confidence * len(b.text.strip()) for b in kept) / chars if chars else None
    return OcrText(_unwrap(reading_order(kept)), confidence, dropped)


def _unwrap(lines: list[list[OcrBox]]) -> str:
    """The lines as text, with the breaks the layout made inside a Chinese sentence undone.

    A screenshot or scan wraps a paragraph wherever the width ends, often mid-word ("武汉市东"
    / "西湖区"); kept, the break cuts sentences in two for the splitter and the answerer. A line
    continues on the next one when it is long (``WRAP_MIN_CHARS``), reaches the right edge of
    the text block, ends with Chinese text or a comma (not 。！？：；), and the next line
    starts at the left edge. Titles (centred), short lines and list items keep their break.
    """
    if not lines:
        return ""
    texts = [_join_line(line) for line in lines]
    left = min(line[0].left for line in lines)
    right = max(line[-1].right for line in lines)
    out = [texts[0]]
    for n in range(1, len(lines)):
        above, below = lines[n - 1], lines[n]
        height = min(b.height for b in above)
        wrapped = (
            len(texts[n - 1]) >= WRAP_MIN_CHARS
            and above[-1].right >= right - 1.5 * height
            and below[0].left <= left + 0.5 * height
            and _CONTINUES.match(texts[n - 1][-1]) is not None
        )
        if wrapped:
            out[-1] += texts[n]
        else:
            out.append(texts[n])
    return "\n".join(out)


def _join_line(line: list[OcrBox]) -> str:
    """The text of one line's boxes, left to right.

    Boxes far apart are separate phrases (table cells, a price beside a name): a space between
    them. Boxes that touch or overlap are one phrase the detector cut in two, and where they
    overlap the engine often reads the same character in both ("修 修改"): joined without a
    space, and a repeat of up to 3 characters across the seam is read once.
    """
    text = line[0].text.strip()
    for previous, box in zip(line, line[1:], strict=False):
        piece = box.text.strip()
        gap = box.left - previous.right
        if gap >= GAP * min(previous.height, box.height):
            text += " " + piece
            continue
        if gap < 0:
            for size in range(min(3, len(piece), len(text)), 0, -1):
                if text.endswith(piece[:size]):
                    piece = piece[size:]
                    break
        text += piece
    return text


def import_engine() -> Any:
    """The engine class, or MissingExtraError naming the extra (the lazy import)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:
        raise MissingExtraError("OCR of images and scanned PDF pages", "ocr", str(e)) from e
    return RapidOCR


def decode_image(data: bytes) -> Any:
    """An RGB Pillow image from the bytes of an image file; LoadError when it is none."""
    try:
        from PIL import Image
    except ImportError as e:  # Pillow comes with the extra
        raise LoadError(f"reading images needs Pillow: {INSTALL_HINT}") from e
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes now, so a truncated file fails here and not in the engine
        return to_rgb(image)
    except Exception as e:  # Pillow raises several types for a broken or huge file
        raise LoadError(f"not a readable image ({type(e).__name__}: {e})") from e


def to_rgb(image: Any) -> Any:
    """A Pillow image as RGB, transparent parts white: screenshots often have an alpha
    channel, and text on a transparent background would otherwise be black on black."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


class OcrReader:
    """Reads text from images; one per ingest run, so the models load once.

    Cheap to build: nothing is imported or loaded until the first ``read``.

    >>> reader = OcrReader(min_confidence=0.6)
    >>> reader.read(open("notice.png", "rb").read()).text     # doctest: +SKIP
    '关于春节期间发货的通知\\n...'
    """

    def __init__(
        self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, cache_dir: Path | None = None
    ) -> None:
        self.min_confidence = min_confidence
        self.cache_dir = cache_dir
        self._engine: Any = None

    def ensure_available(self) -> None:
        """Raise MissingExtraError when the extra is not installed (no model is loaded)."""
        import_engine()

    def _get_engine(self) -> Any:
        if self._engine is None:
            # text_score=0: every box comes back with its score, and page_text applies our
            # minimum, so the setting and the dropped count mean what they say.
            self._engine = import_engine()(text_score=0.0)
        return self._engine

    def boxes(self, image: Any) -> list[OcrBox]:
        """The engine's boxes for a decoded (Pillow) image, unordered (cached by pixels)."""
        path = self._cache_path(image)
        if path is not None:
            cached = _read_boxes(path)
            if cached is not None:
                return cached
        engine = self._get_engine()
        try:
            result, _ = engine(image)
        except Exception as e:  # onnxruntime / OpenCV errors on an odd image
            raise LoadError(f"OCR failed ({type(e).__name__}: {e})") from e
        found = [OcrBox.of(points, str(text), float(score)) for points, text, score in result or []]
        if path is not None:
            _write_boxes(path, found)
        return found

    def _cache_path(self, image: Any) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{engine_version()}|{image.mode}|{image.size}|".encode())
        digest.update(image.tobytes())
        return self.cache_dir / f"{digest.hexdigest()}.json"

    def read(self, data: bytes) -> OcrText:
        """The text of an image file's bytes, lines in reading order."""
        self.ensure_available()
        return page_text(self.boxes(decode_image(data)), self.min_confidence)

    def read_image(self, image: Any) -> OcrText:
        """The text of a Pillow image (an image of a PDF page), lines in reading order."""
        self.ensure_available()
        return page_text(self.boxes(to_rgb(image)), self.min_confidence)


def engine_version() -> str:
    """The installed OCR engine's version: part of the cache key (new models, new boxes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rapidocr-onnxruntime")
    except PackageNotFoundError:
        return "unknown"


def _read_boxes(path: Path) -> list[OcrBox] | None:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [
            OcrBox(str(t), float(c), float(a), float(b), float(r), float(d))
            for t, c, a, b, r, d in rows
        ]
    except (OSError, ValueError, TypeError):
        return None  # missing, unreadable or not ours: OCR again


def _write_boxes(path: Path, boxes: list[OcrBox]) -> None:
    rows = [[b.text, b.confidence, b.left, b.top, b.right, b.bottom] for b in boxes]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(rows, f, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError:
        # A read-only or full cache folder only costs the next run the OCR time.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
