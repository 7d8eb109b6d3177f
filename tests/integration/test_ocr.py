"""Real OCR (the [ocr] extra, installed by .ci/run): images and scanned PDF pages rendered
with Pillow in a Chinese font are read back in line order, with ``ocr: true`` metadata.

The engine takes seconds per image on a small machine, so the images are few and small, and
one reader (one engine) serves the whole module, as one serves an ingest run.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from rag_pipeline import ocr as ocr_module
from rag_pipeline.indexing import ingest
from rag_pipeline.loading import LoadError, SourceFile, load_file
from rag_pipeline.ocr import OcrReader
from tests.conftest import CORPUS, CORPUS_OCR_FILES
from tests.helpers import counting_model, memory_settings

pytest.importorskip("rapidocr_onnxruntime", reason="the [ocr] extra is not installed")

FONTS = [
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
]
LINES = ["会员生日当月积分翻倍", "请在会员中心领取礼券"]


@pytest.fixture(scope="module")
def font() -> Path:
    for path in FONTS:
        if path.is_file():
            return path
    pytest.fail("no Chinese font: .ci/run installs fonts-wqy-microhei")


@pytest.fixture(scope="module")
def reader() -> OcrReader:
    return OcrReader()


def _image(font: Path, lines: list[str]) -> Image.Image:
    face = ImageFont.truetype(str(font), 28)
    image = Image.new("RGB", (420, 40 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((20, 20 + 60 * n), line, font=face, fill="black")
    return image


def _scanned_pdf(path: Path, font: Path, pages: str) -> SourceFile:
    """t = a text page, s = a page that is only an image of text (no text layer)."""
    pdf = FPDF()
    for n, kind in enumerate(pages, start=1):
        pdf.add_page()
        if kind == "t":
            pdf.set_font("helvetica", size=14)
            pdf.cell(text=f"Returns are accepted within seven days (page {n}).")
        else:
            buffer = io.BytesIO()
            _image(font, LINES).save(buffer, "PNG")
            pdf.image(buffer, x=10, y=10, w=150)
    pdf.output(str(path))
    return SourceFile(path, path.parent)


def test_an_image_of_two_lines_is_read_in_order(
    tmp_path: Path, font: Path, reader: OcrReader
) -> None:
    path = tmp_path / "notice.png"
    _image(font, LINES).save(path)
    (doc,) = load_file(SourceFile(path, tmp_path), ocr=reader)
    assert doc.page_content == "\n".join(LINES)
    assert doc.metadata["ocr"] is True and doc.metadata["title"] == LINES[0]
    assert 0.9 <= doc.metadata["ocr_confidence"] <= 1.0


def test_a_scanned_pdf_page_is_ocred(tmp_path: Path, font: Path, reader: OcrReader) -> None:
    (doc,) = load_file(_scanned_pdf(tmp_path / "scan.pdf", font, "s"), ocr=reader)
    assert doc.page_content == "\n".join(LINES)
    assert doc.metadata["page"] == 1 and doc.metadata["ocr"] is True
    assert doc.metadata["ocr_confidence"] >= 0.9


def test_text_pages_and_a_scanned_page(tmp_path: Path, font: Path, reader: OcrReader) -> None:
    problems: list[str] = []
    docs = load_file(
        _scanned_pdf(tmp_path / "mixed.pdf", font, "tst"), problems=problems, ocr=reader
    )
    assert problems == []
    assert [d.metadata["page"] for d in docs] == [1, 2, 3]
    assert [d.metadata.get("ocr", False) for d in docs] == [False, True, False]
    assert "seven days (page 3)" in docs[2].page_content
    assert docs[1].page_content == "\n".join(LINES)


def test_the_minimum_confidence_drops_lines(tmp_path: Path, font: Path) -> None:
    path = tmp_path / "notice.png"
    _image(font, LINES[:1]).save(path)
    strict = OcrReader(min_confidence=1.0)  # no real line is that sure
    with pytest.raises(LoadError, match="under the minimum confidence 1") as caught:
        load_file(SourceFile(path, tmp_path), ocr=strict)
    assert "RAG_INGEST__OCR_MIN_CONFIDENCE" in str(caught.value)


def _count_engine(monkeypatch: pytest.MonkeyPatch) -> tuple[list[object], list[int]]:
    """The real engine, wrapped: the engines built, and one entry per image it reads."""
    real = ocr_module.import_engine()
    built: list[object] = []
    calls: list[int] = []

    def counting_engine(**kwargs: object) -> object:
        engine = real(**kwargs)
        built.append(engine)

        def run(image: object) -> object:
            calls.append(1)
            return engine(image)

        return run

    monkeypatch.setattr(ocr_module, "import_engine", lambda: counting_engine)
    return built, calls


def test_one_engine_serves_an_ingest_run(
    tmp_path: Path, font: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, _ = _count_engine(monkeypatch)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _image(font, LINES[:1]).save(corpus / "a.png")
    _image(font, LINES[1:]).save(corpus / "b.jpg")
    settings = memory_settings(
        tmp_path / "data", embeddings={"cache": False}, ingest={"ocr_cache": False}
    )
    model, _ = counting_model()
    report = ingest([corpus], settings, model=model)
    assert report.files_failed == [] and report.files_ingested == 2
    assert len(built) == 1


def test_a_second_ingest_takes_the_images_text_from_the_ocr_cache(
    tmp_path: Path, font: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, calls = _count_engine(monkeypatch)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _image(font, LINES[:1]).save(corpus / "a.png")  # the scanned page shows both lines
    _scanned_pdf(corpus / "scan.pdf", font, "ts")
    cache = tmp_path / "ocr-cache"

    def run_ingest(data: str) -> list[str]:
        settings = memory_settings(tmp_path / data, ingest={"ocr_cache_dir": cache})
        model, _ = counting_model()
        report = ingest([corpus], settings, model=model)
        assert report.files_failed == [] and report.files_ingested == 2
        docs = load_file(SourceFile(corpus / "a.png", corpus), ocr=OcrReader(cache_dir=cache))
        return [d.page_content for d in docs]

    first = run_ingest("one")
    assert len(calls) == 2  # the image and the scanned page
    assert len(list(cache.glob("*.json"))) == 2
    assert run_ingest("two") == first and len(calls) == 2  # nothing read by the engine again
    # A damaged cache file is not trusted: that image is read again and its file rewritten.
    damaged = sorted(cache.glob("*.json"))[0]
    damaged.write_text("{not json", encoding="utf-8")
    assert run_ingest("three") == first and len(calls) == 3
    assert damaged.read_text(encoding="utf-8").startswith("[")
    assert LINES[0] in first[0]


def test_the_sample_corpus_images_are_read(reader: OcrReader) -> None:
    texts = {}
    for name in sorted(CORPUS_OCR_FILES):
        docs = load_file(SourceFile(CORPUS / name, CORPUS), ocr=reader)
        assert all(d.metadata["ocr"] is True and d.metadata["ocr_confidence"] > 0.9 for d in docs)
        texts[name] = "\n".join(d.page_content for d in docs)
    # What the questions of corpus/questions.jsonl about these files look for.
    assert "银潭路168号" in texts["announcements/2025-return-address-change.png"]
    assert "旧空调补贴150元" in texts["aftersales/trade-in-subsidy-scan.pdf"]
