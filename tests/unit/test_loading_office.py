"""Excel workbooks (FAQ sheets and tables) and PowerPoint decks -> Documents and chunks."""

import datetime as dt
import io
import zipfile
from pathlib import Path

import pytest
import xlwt
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches

from rag_pipeline.bm25 import question_text
from rag_pipeline.config import FaqColumnSettings, SplitSettings
from rag_pipeline.llms import faq_parts, sentences
from rag_pipeline.loading import LoadError, SourceFile, load_file
from rag_pipeline.splitting import split_documents

FAQ_ROWS = [
    (
        "积分可以换什么？",
        "积分能换啥\n积分兑换范围|积分商城有什么；积分怎么用",
        "优惠券和实物礼品。",
    ),
    ("发票抬头能改吗？", "开错抬头怎么办;抬头写错了", "开票后30天内可修改一次。"),
]


def _workbook(path: Path, sheets: dict[str, list[list[object]]]) -> SourceFile:
    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return SourceFile(path, path.parent)


@pytest.mark.parametrize(
    "header",
    [
        ("问题", "相似问题", "答案"),
        ("标准问题", "相似问法", "回答"),
        ("Question", "Similar Questions", "Answer"),
        (" QUESTION ", "similar  questions", "answer"),
    ],
)
def test_an_faq_sheet_becomes_faq_entries_like_the_csv_path(
    tmp_path: Path, header: tuple[str, str, str]
) -> None:
    file = _workbook(tmp_path / "faq.xlsx", {"常见问题": [list(header), *map(list, FAQ_ROWS)]})
    docs = load_file(file)
    assert [d.metadata["faq_question"] for d in docs] == ["积分可以换什么？", "发票抬头能改吗？"]
    first = docs[0]
    assert first.metadata["doc_type"] == "faq" and first.metadata["sheet"] == "常见问题"
    assert first.metadata["row"] == 2  # the row number Excel shows
    # Every phrasing, whatever separated it in the cell, is matched like the headline question.
    alternatives = ["积分能换啥", "积分兑换范围", "积分商城有什么", "积分怎么用"]
    assert first.metadata["faq_alternatives"] == "|".join(alternatives)
    assert question_text(first.metadata).split("\n") == ["积分可以换什么？", *alternatives]
    assert faq_parts(first.page_content) == (
        ["积分可以换什么？", *alternatives],
        "优惠券和实物礼品。",
    )
    (chunk,) = split_documents([first], SplitSettings())
    assert chunk.page_content == first.page_content  # an entry is never split


def test_the_faq_columns_are_configurable(tmp_path: Path) -> None:
    rows: list[list[object]] = [
        ["标题", "别名", "解答"],
        ["积分会过期吗？", "积分有效期", "两年。"],
    ]
    file = _workbook(tmp_path / "faq.xlsx", {"Sheet": rows})
    assert load_file(file)[0].metadata["doc_type"] == "table"  # not FAQ columns by default
    columns = FaqColumnSettings(question=["标题"], similar=["别名"], answer=["解答"])
    (doc,) = load_file(file, faq_columns=columns)
    assert doc.metadata["faq_alternatives"] == "积分有效期"


def test_the_csv_faq_path_splits_phrasings_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("问题,相似问题,答案\n积分会过期吗？,积分有效期；积分清零,两年。\n", "utf-8")
    (doc,) = load_file(SourceFile(path, tmp_path))
    assert doc.metadata["faq_alternatives"] == "积分有效期|积分清零"


def test_a_table_sheet_repeats_its_header_and_keeps_rows_whole(tmp_path: Path) -> None:
    rows: list[list[object]] = [["地区", "首重运费", "续重运费", "时效"]]
    rows += [[f"地区{i:02d}", 8 + i, 2.0, f"{2 + i % 3}天"] for i in range(40)]
    file = _workbook(tmp_path / "运费.xlsx", {"运费表": rows})
    docs = load_file(file, table_chunk_chars=200)
    chunks = split_documents(docs, SplitSettings(chunk_size=200, chunk_overlap=0))
    assert len(chunks) > 3 and len(chunks) == len(docs)
    seen = []
    for chunk in chunks:
        lines = chunk.page_content.split("\n")
        assert lines[0] == "【运费 > 运费表】"
        assert lines[1:3] == ["| 地区 | 首重运费 | 续重运费 | 时效 |", "| --- | --- | --- | --- |"]
        assert all(line.startswith("| 地区") and line.endswith(" |") for line in lines[3:])
        assert len(chunk.page_content) <= 200
        meta = chunk.metadata
        assert meta["sheet"] == "运费表" and meta["row_end"] - meta["row"] == len(lines) - 4
        seen += lines[3:]
    assert seen[0] == "| 地区00 | 8 | 2 | 2天 |"  # 2.0 reads as 2
    assert len(seen) == 40  # every row once, none cut
    # The extractive answerer reads the rows with their column names.
    assert sentences(chunks[0].page_content)[0] == ["地区00：首重运费 8，续重运费 2，时效 2天"]


def test_merged_cells_fill_their_range_and_empty_rows_and_columns_go(tmp_path: Path) -> None:
    path = tmp_path / "会员.xlsx"
    book = Workbook()
    sheet = book.active
    sheet.title = "权益"
    sheet.append(["等级", None, "权益", "说明"])
    sheet.append(["金卡", None, "生日礼", "生日当月领取"])
    sheet.append([None, None, "包邮", "每月4张"])  # 金卡 merged over rows 2-3
    sheet.append([])
    sheet.append([None, None, None, None])
    sheet.append(["银卡", None, "合并说明", None])  # C6:D6 merged
    sheet.merge_cells("A2:A3")
    sheet.merge_cells("C6:D6")
    book.save(path)
    (doc,) = load_file(SourceFile(path, tmp_path))
    assert doc.page_content.split("\n")[1:] == [
        "| 等级 | 权益 | 说明 |",  # column B is empty everywhere: left out
        "| --- | --- | --- |",
        "| 金卡 | 生日礼 | 生日当月领取 |",
        "| 金卡 | 包邮 | 每月4张 |",
        "| 银卡 | 合并说明 | 合并说明 |",
    ]
    assert (doc.metadata["row"], doc.metadata["row_end"]) == (2, 6)


def test_a_title_merged_over_the_header_row_names_the_table(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    book = Workbook()
    sheet = book.active
    sheet.title = "FAQ"
    sheet.append(["2025年常见问题"])
    sheet.append(["问题", "答案"])
    sheet.append(["积分能转赠吗？", "不能。"])
    sheet.merge_cells("A1:B1")
    table = book.create_sheet("价格")
    table.append(["会员价格表"])
    table.append(["等级", "价格"])
    table.append(["Plus", "99元/年"])
    table.merge_cells("A1:B1")
    book.save(path)
    faq, prices = load_file(SourceFile(path, tmp_path))
    assert faq.metadata["faq_question"] == "积分能转赠吗？" and faq.metadata["row"] == 3
    assert prices.page_content.split("\n")[:2] == [
        "【book > 价格 > 会员价格表】",
        "| 等级 | 价格 |",
    ]


def test_hidden_sheets_are_left_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "book.xlsx"
    book = Workbook()
    book.active.append(["商品", "价格"])
    book.active.append(["耳机", 199])
    hidden = book.create_sheet("草稿")
    hidden.append(["内部", "不要回答"])
    hidden.sheet_state = "hidden"
    book.save(path)
    docs = load_file(SourceFile(path, tmp_path))
    assert [d.metadata["sheet"] for d in docs] == ["Sheet"]


def test_a_broken_or_encrypted_workbook_is_a_load_error_with_a_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LoadError, match="not a readable .xlsx workbook"):
        load_file(SourceFile(broken, tmp_path))
    encrypted = tmp_path / "locked.xlsx"
    encrypted.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    with pytest.raises(LoadError, match="encrypted .*save it as .xlsx"):
        load_file(SourceFile(encrypted, tmp_path))
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    with pytest.raises(LoadError, match="not a readable .xls workbook"):
        load_file(SourceFile(old, tmp_path))
    empty = _workbook(tmp_path / "empty.xlsx", {"Sheet": [[None, None]]})
    with pytest.raises(LoadError, match="no cells with text"):
        load_file(empty)


def test_an_faq_row_without_an_answer_is_reported_and_the_others_load(tmp_path: Path) -> None:
    rows: list[list[object]] = [
        ["问题", "答案"],
        ["积分会过期吗？", None],
        ["积分能转赠吗？", "不能。"],
    ]
    file = _workbook(tmp_path / "faq.xlsx", {"FAQ": rows})
    problems: list[str] = []
    (doc,) = load_file(file, problems=problems)
    assert doc.metadata["faq_question"] == "积分能转赠吗？"
    assert problems == ["sheet 'FAQ' row 2: an FAQ entry needs both a question and an answer"]


def _deck(path: Path) -> SourceFile:
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "会员日活动"
    low = slide.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
    low.text_frame.text = "第二段：活动时间每月18日。"
    high = slide.shapes.add_textbox(Inches(5), Inches(2), Inches(4), Inches(1))
    high.text_frame.text = "第一段：全场满199减30。"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(6), Inches(1)).table
    for r, row in enumerate([("等级", "折扣"), ("金卡", "9折")]):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    slide.notes_slide.notes_text_frame.text = "提醒客服：活动不与其他优惠叠加。"
    deck.slides.add_slide(deck.slide_layouts[6])  # blank: skipped
    third = deck.slides.add_slide(deck.slide_layouts[1])
    third.shapes.title.text = "常见问题"
    third.placeholders[1].text_frame.text = "积分翻倍当天到账。"
    deck.save(path)
    return SourceFile(path, path.parent)


def test_slides_become_one_document_each_with_title_text_table_and_notes(
    tmp_path: Path,
) -> None:
    first, third = load_file(_deck(tmp_path / "会员日.pptx"))
    assert (first.metadata["page"], third.metadata["page"]) == (1, 3)  # as PDF pages
    assert first.metadata["title"] == "会员日"  # the deck's title (none set: the file name)
    assert first.page_content.split("\n") == [
        "# 会员日活动",
        "",
        "第一段：全场满199减30。",  # higher on the slide: read first
        "",
        "| 等级 | 折扣 |",
        "| --- | --- |",
        "| 金卡 | 9折 |",
        "",
        "第二段：活动时间每月18日。",
        "",
        "## 演讲者备注",
        "",
        "提醒客服：活动不与其他优惠叠加。",
    ]
    assert third.page_content == "# 常见问题\n\n积分翻倍当天到账。"
    chunks = split_documents([first], SplitSettings())
    assert chunks[-1].metadata["headers"] == "会员日活动 > 演讲者备注"


def test_a_broken_presentation_is_a_load_error_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.pptx"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(LoadError, match="not a readable .pptx presentation"):
        load_file(SourceFile(path, tmp_path))
    blank = tmp_path / "blank.pptx"
    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6])
    deck.save(blank)
    with pytest.raises(LoadError, match="no slide with text"):
        load_file(SourceFile(blank, tmp_path))


def _xls(path: Path) -> SourceFile:
    book = xlwt.Workbook()
    faq = book.add_sheet("FAQ")
    for r, row in enumerate([("Question", "Similar", "Answer"), *FAQ_ROWS]):
        for c, text in enumerate(row):
            faq.write(r, c, text)
    table = book.add_sheet("会员")
    table.write(0, 0, "等级")
    table.write(0, 1, "生效日期")
    table.write_merge(1, 2, 0, 0, "金卡")  # rows 2-3 of column A
    date = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    table.write(1, 1, dt.date(2025, 3, 1), date)
    table.write(2, 1, 99.0)
    book.save(str(path))
    return SourceFile(path, path.parent)


def test_an_old_xls_workbook_reads_like_an_xlsx_one(tmp_path: Path) -> None:
    file = _xls(tmp_path / "old.xls")
    first, second, table = load_file(file)
    assert first.metadata["faq_question"] == "积分可以换什么？" and first.metadata["sheet"] == "FAQ"
    assert question_text(second.metadata) == "发票抬头能改吗？\n开错抬头怎么办\n抬头写错了"
    assert table.page_content.split("\n")[-2:] == ["| 金卡 | 2025-03-01 |", "| 金卡 | 99 |"]
    # The same bytes named .xlsx (Excel's "97-2003" format saved with the new name) load too.
    renamed = tmp_path / "old.xlsx"
    renamed.write_bytes(file.path.read_bytes())
    assert len(load_file(SourceFile(renamed, tmp_path))) == 3
