"""OCR without the engine: line order and confidence filtering on synthetic boxes, and images
and scanned PDF pages reported (never silently empty) when the [ocr] extra is missing."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw

from rag_pipeline.config import Settings
from rag_pipeline.errors import MissingExtraError, NeedsExtraError
from rag_pipeline.indexing import ingest
from rag_pipeline.loading import SUPPORTED_SUFFIXES, LoadError, SourceFile, load_file
from rag_pipeline.ocr import (
    DEFAULT_MIN_CONFIDENCE,
    IMAGE_SUFFIXES,
    OcrBox,
    OcrReader,
    import_engine,
    page_text,
    reading_order,
)
from tests.helpers import counting_model, memory_settings

EXTRA_MESSAGE = "install rag-pipeline[ocr]"


def _box(text: str, left: float, top: float, height: float = 30, conf: float = 0.95) -> OcrBox:
    return OcrBox(text, conf, left, top, left + 40 * len(text), top + height)


@pytest.fixture
def no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The [ocr] extra is not installed: importing its package fails (a None entry in
    sys.modules makes ``import`` raise ImportError), whether or not it is really there."""
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)


def test_boxes_are_read_top_to_bottom_then_left_to_right() -> None:
    boxes = [
        _box("第三行", 10, 130),
        _box("价格", 300, 72),  # the right-hand cell of the second line, slightly higher
        _box("第一行", 10, 10),
        _box("商品", 10, 70),
        _box("尾", 400, 12, height=26),  # a smaller font on the first line
    ]
    random.Random(3).shuffle(boxes)
    lines = reading_order(boxes)
    assert [[b.text for b in line] for line in lines] == [
        ["第一行", "尾"],
        ["商品", "价格"],
        ["第三行"],
    ]
    assert page_text(boxes, 0.5).text == "第一行 尾\n商品 价格\n第三行"


def test_a_line_cut_in_two_is_joined_and_its_seam_read_once() -> None:
    # The detector cut "四、修改登录密码" into overlapping boxes that both read "修".
    left = OcrBox("四、修", 0.9, left=10, top=10, right=130, bottom=44)
    right = OcrBox("修改登录密码", 0.95, left=100, top=11, right=330, bottom=45)
    touching = OcrBox("（必填）", 0.95, left=335, top=10, right=460, bottom=44)
    far = OcrBox("第3页", 0.95, left=700, top=10, right=780, bottom=44)
    assert page_text([far, touching, right, left], 0.5).text == "四、修改登录密码（必填） 第3页"


def test_a_paragraph_wrapped_by_the_layout_is_one_line_again() -> None:
    def line(text: str, top: float, left: float = 20) -> OcrBox:
        return OcrBox(text, 0.99, left, top, left + 30 * len(text), top + 30)

    boxes = [
        line("退货地址变更", 10, left=200),  # a centred title
        line("自6月1日起，自行寄回的退货请寄到武汉市东", 60),  # 21 chars: the full width
        line("西湖区银潭路168号，电话", 100),  # wrapped: goes on
        line("027-5550-6618。", 140),
        line("原杭州仓地址从6月1日起停止接收退货包裹。", 190),  # ends a sentence at the edge
        line("预约上门取件的不需要填写地址，快递员会直", 230),
        line("接送到退货处理中心。", 270),
        line("一、短的列表项", 320),
        line("二、短的列表项", 360),
    ]
    assert page_text(boxes, 0.5).text.split("\n") == [
        "退货地址变更",
        "自6月1日起，自行寄回的退货请寄到武汉市东西湖区银潭路168号，电话",
        "027-5550-6618。",
        "原杭州仓地址从6月1日起停止接收退货包裹。",
        "预约上门取件的不需要填写地址，快递员会直接送到退货处理中心。",
        "一、短的列表项",
        "二、短的列表项",
    ]


def test_close_lines_do_not_merge() -> None:
    # Tight line spacing: centres 20 px apart with 24 px boxes stay two lines.
    boxes = [_box("上一行", 10, 0, height=24), _box("下一行", 10, 20, height=24)]
    assert page_text(boxes, 0.5).text == "上一行\n下一行"


def test_a_rotated_box_gets_its_bounds() -> None:
    box = OcrBox.of([[12, 5], [110, 9], [108, 40], [10, 36]], "斜的", 0.9)
    assert (box.left, box.top, box.right, box.bottom) == (10, 5, 110, 40)


def test_minimum_confidence_drops_garbage_lines() -> None:
    boxes = [
        _box("退货需在七天内申请", 10, 10, conf=0.98),
        _box("鬲亍口", 10, 60, conf=0.21),  # noise a background pattern gives
        _box("运费由商家承担", 10, 110, conf=0.90),
    ]
    result = page_text(boxes, min_confidence=0.5)
    assert result.text == "退货需在七天内申请\n运费由商家承担"
    assert result.dropped == 1
    # Weighted by characters: 9 at 0.98 and 7 at 0.90.
    assert result.confidence == pytest.approx((9 * 0.98 + 7 * 0.90) / 16)
    everything = page_text(boxes, min_confidence=0.0)
    assert "鬲亍口" in everything.text and everything.dropped == 0
    nothing = page_text(boxes, min_confidence=0.99)
    assert (nothing.text, nothing.confidence, nothing.dropped) == ("", None, 3)


def test_the_minimum_confidence_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().ingest.ocr_min_confidence == DEFAULT_MIN_CONFIDENCE
    monkeypatch.setenv("RAG_INGEST__OCR_MIN_CONFIDENCE", "0.8")
    assert Settings().ingest.ocr_min_confidence == 0.8
    monkeypatch.setenv("RAG_INGEST__OCR_MIN_CONFIDENCE", "1.5")
    with pytest.raises(ValueError, match="ocr_min_confidence"):
        Settings()


def test_images_are_supported_file_types() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".webp"} == IMAGE_SUFFIXES <= SUPPORTED_SUFFIXES


def test_the_reader_is_built_without_the_extra(no_extra: None) -> None:
    reader = OcrReader(0.7)  # cheap and lazy: nothing imported yet
    with pytest.raises(MissingExtraError, match=r'pip install "rag-pipeline\[ocr\]"'):
        reader.ensure_available()
    with pytest.raises(MissingExtraError):
        import_engine()


def _png(path: Path) -> SourceFile:
    image = Image.new("RGB", (200, 60), "white")
    ImageDraw.Draw(image).text((10, 20), "NOTICE", fill="black")
    image.save(path)
    return SourceFile(path, path.parent)


def test_an_image_without_the_extra_is_a_load_error_naming_it(
    tmp_path: Path, no_extra: None
) -> None:
    with pytest.raises(LoadError, match=r"rag-pipeline\[ocr\]") as caught:
        load_file(_png(tmp_path / "notice.png"))
    assert EXTRA_MESSAGE in str(caught.value)


def _scanned_page(pdf: FPDF) -> None:
    """A page whose only content is an image (no text layer), as a scanner writes it."""
    image = Image.new("L", (300, 120), 255)
    ImageDraw.Draw(image).text((20, 50), "SCANNED", fill=0)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    pdf.add_page()
    pdf.image(buffer, x=10, y=10, w=150)


def _text_page(pdf: FPDF, text: str) -> None:
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text=text)


def _pdf(path: Path, pages: str) -> SourceFile:
    """A PDF with one page per letter of ``pages``: t = a text page, s = scanned, b = blank."""
    pdf = FPDF()
    for n, kind in enumerate(pages, start=1):
        if kind == "t":
            _text_page(pdf, f"Returns are accepted within seven days (page {n}).")
        elif kind == "s":
            _scanned_page(pdf)
        else:
            pdf.add_page()
    pdf.output(str(path))
    return SourceFile(path, path.parent)


def test_a_scanned_pdf_without_the_extra_is_reported_with_the_page(
    tmp_path: Path, no_extra: None
) -> None:
    with pytest.raises(NeedsExtraError) as caught:
        load_file(_pdf(tmp_path / "scan.pdf", "s"))
    assert str(caught.value) == (
        "page 1: scanned page (no text layer), install rag-pipeline[ocr] to read it"
    )


def test_a_partly_scanned_pdf_keeps_its_text_pages_and_lists_the_others(
    tmp_path: Path, no_extra: None
) -> None:
    problems: list[str] = []
    docs = load_file(_pdf(tmp_path / "mixed.pdf", "tssbts"), problems=problems)
    assert [d.metadata["page"] for d in docs] == [1, 5]
    assert not any("ocr" in d.metadata for d in docs)
    # The blank page 4 is no scanned page: nothing of it is missing.
    assert problems == [
        "pages 2-3, 6: scanned pages (no text layer), install rag-pipeline[ocr] to read them"
    ]
    with pytest.raises(LoadError, match="pages 2-3, 6: scanned pages"):
        load_file(_pdf(tmp_path / "mixed.pdf", "tssbts"))  # no problems list: the file fails


def test_ingest_without_the_extra_reports_images_and_scanned_pages(
    tmp_path: Path, no_extra: None
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "returns.md").write_text("# 退货\n\n七天无理由退货，运费由买家承担。", "utf-8")
    _png(corpus / "notice.png")
    _pdf(corpus / "mixed.pdf", "ts")
    _pdf(corpus / "scan.pdf", "s")
    settings = memory_settings(tmp_path / "data", embeddings={"cache": False})
    model, _ = counting_model()
    report = ingest([corpus], settings, model=model)
    # An image and a fully scanned PDF need the extra as a whole: skipped, with the hint, so a
    # default install still ingests the rest and exits 0. A partly scanned PDF lost pages of
    # a file it did read: that is a failure (exit 3), with the pages named.
    skipped = {f["path"]: f["reason"] for f in report.files_skipped}
    failed = {f["path"]: f["reason"] for f in report.files_failed}
    assert set(skipped) == {"notice.png", "scan.pdf"} and set(failed) == {"mixed.pdf"}
    assert EXTRA_MESSAGE in skipped["notice.png"]
    assert skipped["scan.pdf"] == (
        "page 1: scanned page (no text layer), install rag-pipeline[ocr] to read it"
    )
    assert failed["mixed.pdf"].startswith("page 2: scanned page (no text layer), " + EXTRA_MESSAGE)
    assert "rest of the file was ingested" in failed["mixed.pdf"]
    assert report.files_ingested == 2  # returns.md, and mixed.pdf's text page


def test_the_sample_corpus_ingests_without_failures_when_the_extra_is_missing(
    tmp_path: Path, no_extra: None
) -> None:
    # The Quick start's first command (pip install -e . without [ocr], then ingest && ask)
    # needs ingest to exit 0: the two OCR files are skipped with the hint, nothing fails.
    from tests.conftest import CORPUS, CORPUS_OCR_FILES

    settings = memory_settings(tmp_path / "data", embeddings={"cache": False})
    model, _ = counting_model()
    report = ingest([CORPUS], settings, model=model)
    assert report.files_failed == []
    skipped = {f["path"]: f["reason"] for f in report.files_skipped}
    assert CORPUS_OCR_FILES <= set(skipped)
    assert all(EXTRA_MESSAGE in skipped[name] for name in CORPUS_OCR_FILES)
