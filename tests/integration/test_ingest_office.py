"""Excel workbooks and PowerPoint decks through the real ingest (persistent Chroma, fake
embeddings): FAQ sheet phrasings answered like CSV FAQs, broken files reported while the rest
is ingested, and an edit of one sheet re-embedding only that sheet's chunks."""

from __future__ import annotations

from pathlib import Path

from openpyxl import Workbook
from pptx import Presentation

from rag_pipeline.assistant import Assistant
from rag_pipeline.indexing import ingest
from rag_pipeline.stores import open_store
from tests.helpers import counting_model, fake_settings, write_corpus

FAQ = [
    ["问题", "相似问题", "答案"],
    [
        "积分可以兑换什么？",
        "积分能换啥\n积分商城有什么|积分怎么用；积分能抵钱吗",
        "积分可以在积分商城兑换优惠券和实物礼品。",
    ],
    ["发票抬头可以修改吗？", "开错发票抬头怎么办;抬头写错了", "开票后30天内可以修改一次抬头。"],
]


def _fees(regions: int) -> list[list[object]]:
    return [["地区", "首重", "续重"], *([f"地区{i:02d}", 8 + i, 2] for i in range(regions))]


def _write_book(path: Path, regions: int) -> None:
    book = Workbook()
    fees = book.active
    fees.title = "运费表"  # first: its edit must not shift the FAQ sheet's chunk ids
    for row in _fees(regions):
        fees.append(row)
    faq = book.create_sheet("常见问题")
    for row in FAQ:
        faq.append(row)
    book.save(path)


def _write_deck(path: Path) -> None:
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "会员日活动"
    slide.placeholders[1].text_frame.text = "每月18日会员日，金卡会员全场95折。"
    slide.notes_slide.notes_text_frame.text = "折扣不与优惠券叠加。"
    deck.save(path)


def _corpus(folder: Path) -> Path:
    write_corpus(folder, {"shipping.md": "# 配送\n\n订单满99元包邮，不满99元收取运费8元。\n"})
    _write_book(folder / "客服FAQ.xlsx", regions=12)
    _write_deck(folder / "会员日.pptx")
    (folder / "broken.xlsx").write_bytes(b"PK\x03\x04 truncated")
    (folder / "broken.pptx").write_bytes(b"not a presentation")
    return folder


def _ids_by_sheet(settings, model) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    got = open_store(settings, model, create=False)._collection.get(include=["metadatas"])  # type: ignore[attr-defined]
    by_sheet: dict[str, set[str]] = {}
    for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
        by_sheet.setdefault(str(meta.get("sheet") or meta["source"]), set()).add(id_)
    return by_sheet


def test_broken_files_are_reported_and_the_rest_is_ingested(tmp_path: Path) -> None:
    kb = _corpus(tmp_path / "kb")
    settings = fake_settings(
        tmp_path / "data", llm={"provider": "extractive"}, retriever={"score_threshold": 0.5}
    )
    report = ingest([kb], settings)
    failed = {f["path"]: f["reason"] for f in report.files_failed}
    assert set(failed) == {"broken.xlsx", "broken.pptx"}
    assert failed["broken.xlsx"].startswith("not a readable .xlsx workbook (")
    assert failed["broken.pptx"].startswith("not a readable .pptx presentation (")
    assert report.files_ingested == 3

    assistant = Assistant.from_settings(settings)
    slide = [s for s in assistant.search("会员日金卡折扣") if s.source == "会员日.pptx"]
    assert slide and slide[0].page == 1
    # Every phrasing of a sheet's FAQ entry is matched like the headline question.
    for question, phrasings, answer in FAQ[1:]:
        for asked in [question, *phrasings.replace("\n", "|").replace("；", "|").split("|")]:
            for part in asked.split(";"):
                reply = assistant.ask(part)
                assert reply.answer == f"{answer} [1]", part
                assert reply.sources[0].source == "客服FAQ.xlsx"


def test_an_edited_sheet_replaces_only_its_own_chunks(tmp_path: Path) -> None:
    kb = _corpus(tmp_path / "kb")
    settings = fake_settings(
        tmp_path / "data", embeddings={"cache": False}, split={"chunk_size": 120}
    )
    model, counter = counting_model()
    ingest([kb], settings, model=model)
    before = _ids_by_sheet(settings, model)
    assert len(before["运费表"]) > 1 and len(before["常见问题"]) == 2

    _write_book(kb / "客服FAQ.xlsx", regions=20)  # more rows: more table chunks
    counter.documents_embedded = 0
    report = ingest([kb], settings, model=model)
    after = _ids_by_sheet(settings, model)
    assert after["常见问题"] == before["常见问题"]  # the FAQ sheet is skipped, ids unchanged
    assert len(after["运费表"]) > len(before["运费表"])
    changed = after["运费表"] - before["运费表"]
    assert counter.documents_embedded == report.chunks_added == len(changed)
    assert report.chunks_deleted == len(before["运费表"] - after["运费表"])
    assert after["shipping.md"] == before["shipping.md"]
