"""Synonym/typo groups: parsing, errors, normalisation on both sides of keyword search and in
FAQ direct answers, the packaged default list, and the question field of the keyword side."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag_pipeline.bm25 import KeywordSearcher, question_text
from rag_pipeline.chain import faq_direct_answer
from rag_pipeline.config import RetrieverSettings, Settings
from rag_pipeline.errors import ConfigurationError
from rag_pipeline.keyword_index import KeywordIndex
from rag_pipeline.synonyms import (
    Synonyms,
    build_synonyms,
    default_synonyms,
    load_synonyms,
    parse_synonyms,
)

Chunks = list[tuple[str, str, dict[str, object]]]


def rows(*chunks: tuple[str, str, dict[str, object]]) -> Chunks:
    return list(chunks)


def searcher(
    folder: Path,
    chunks: Chunks,
    *,
    synonyms: Synonyms | None = None,
    question_weight: float = 0.0,
) -> KeywordSearcher:
    """A keyword index of ``chunks`` in its own file (an index holds the tokens of one set of
    synonym groups), and its searcher."""
    path = folder / f"k{len(list(folder.iterdir()))}.sqlite"
    index = KeywordIndex(path, "test/kb")
    index.add(
        [Document(page_content=text, metadata=meta) for _, text, meta in chunks],
        [id_ for id_, _, _ in chunks],
    )
    return index.load(synonyms=synonyms, question_weight=question_weight)


# ------------------------------------------------------------------------------- parsing


def test_groups_map_every_variant_to_the_first_word() -> None:
    groups = parse_synonyms(
        "# comment\n\n优惠券 优惠卷 優惠券\n退货,退换，退貨\n账号、帐号\nRefund refunds\n", "t"
    )
    assert groups.mapping == {
        "优惠卷": "优惠券",
        "優惠券": "优惠券",
        "退换": "退货",
        "退貨": "退货",
        "帐号": "账号",
        "refunds": "refund",
    }
    assert len(groups) == 6 and bool(groups)
    assert not Synonyms()


def test_a_one_word_line_is_an_error_naming_the_file_and_line() -> None:
    with pytest.raises(ConfigurationError, match=r"my\.txt, line 2: .*at least two words"):
        parse_synonyms("优惠券 优惠卷\n发票\n", "my.txt")


def test_a_word_in_two_groups_is_an_error() -> None:
    with pytest.raises(
        ConfigurationError, match=r"line 2: '退换' is already in the group of line 1"
    ):
        parse_synonyms("退货 退换\n换货 退换\n", "x.txt")


def test_a_repeated_word_in_one_group_is_fine() -> None:
    assert parse_synonyms("发票 发漂 发漂\n", "x").mapping == {"发漂": "发票"}


def test_missing_and_non_utf8_files_are_errors_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigurationError, match="nope.txt"):
        load_synonyms(missing)
    bad = tmp_path / "gbk.txt"
    bad.write_bytes("优惠券 优惠卷\n".encode("gbk"))
    with pytest.raises(ConfigurationError, match=r"gbk\.txt is not UTF-8"):
        load_synonyms(bad)
    malformed = tmp_path / "bad.txt"
    malformed.write_text("只有一个词\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"bad\.txt, line 1"):
        load_synonyms(malformed)


# ------------------------------------------------------------------------------- normalising


def test_normalise_prefers_the_longest_variant_and_lower_cases() -> None:
    groups = parse_synonyms("优惠券 优惠卷\n券 卷\nPassword PWD\n", "t")
    assert groups.normalise("优惠卷和卷") == "优惠券和券"
    assert groups.normalise("Reset PWD now") == "reset password now"
    assert groups.matches("忘了PWD") and not groups.matches("密码")


def test_latin_variants_match_whole_words_only() -> None:
    groups = parse_synonyms("password pwd\n", "t")
    assert groups.normalise("pwdx pwd") == "pwdx password"


def test_merged_groups_let_the_later_file_decide() -> None:
    defaults = parse_synonyms("退货 退换\n", "defaults")
    user = parse_synonyms("退换 退货\n", "user")  # the user wants 退换 as the canonical word
    merged = defaults.merged(user)
    assert merged.normalise("退货和退换") == "退换和退换"


def test_the_default_list_is_shipped_and_covers_common_typos() -> None:
    groups = default_synonyms()
    assert len(groups) >= 60
    for variant, canonical in [
        ("优惠卷", "优惠券"),
        ("帐号", "账号"),
        ("发漂", "发票"),
        ("退换", "退货"),
        ("退欵", "退款"),
        ("登陆", "登录"),
        ("帳戶", "账户"),
    ]:
        assert groups.normalise(variant) == canonical, variant


def test_build_synonyms_reads_defaults_corpus_roots_and_the_user_file(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "synonyms.txt").write_text("禾卡 禾咔\n", encoding="utf-8")
    user = tmp_path / "mine.txt"
    user.write_text("小禾 小和\n", encoding="utf-8")
    groups = build_synonyms(user, use_defaults=True, roots=[root, tmp_path / "no-file-here"])
    assert groups.normalise("小和的禾咔优惠卷") == "小禾的禾卡优惠券"
    only_user = build_synonyms(user, use_defaults=False)
    assert only_user.normalise("小和优惠卷") == "小禾优惠卷"
    with pytest.raises(ConfigurationError, match="absent.txt"):
        build_synonyms(tmp_path / "absent.txt", use_defaults=True)


def test_settings_name_the_synonym_file_and_switch_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert RetrieverSettings().default_synonyms is True
    assert RetrieverSettings().synonyms is None
    monkeypatch.setenv("RAG_RETRIEVER__SYNONYMS", str(tmp_path / "s.txt"))
    monkeypatch.setenv("RAG_RETRIEVER__DEFAULT_SYNONYMS", "false")
    settings = Settings()
    assert settings.retriever.synonyms == tmp_path / "s.txt"
    assert settings.retriever.default_synonyms is False


# ------------------------------------------------------------------------------- keyword side


def test_a_typo_in_the_question_matches_the_correct_chunk(tmp_path: Path) -> None:
    chunks = rows(
        ("a", "优惠券可以叠加使用：平台券和店铺券可以一起用。", {}),
        ("b", "发票在订单完成后开具。", {}),
    )
    plain = searcher(tmp_path, chunks)
    fixed = searcher(tmp_path, chunks, synonyms=default_synonyms())
    asked = "优惠卷能叠加吗"
    assert fixed.search(asked, 2)[0].document.id == "a"
    assert fixed.search(asked, 1)[0].coverage > plain.search(asked, 1)[0].coverage
    assert fixed.search(asked, 1)[0].coverage == pytest.approx(1.0)


def test_a_variant_in_a_stored_chunk_matches_the_canonical_question(tmp_path: Path) -> None:
    # The chunk writes 帐号; the question 账号.
    chunks = rows(("a", "帐号被锁定后30分钟自动解锁。", {}), ("b", "运费8元。", {}))
    plain = searcher(tmp_path, chunks)
    fixed = searcher(tmp_path, chunks, synonyms=default_synonyms())
    assert fixed.search("账号被锁定", 1)[0].coverage == pytest.approx(1.0)
    assert plain.search("账号被锁定", 1)[0].coverage < 1.0


def test_question_text_of_faq_entries_and_question_headings() -> None:
    faq = {"doc_type": "faq", "faq_question": "运费多少？", "faq_alternatives": "邮费|包邮吗"}
    assert question_text(faq) == "运费多少？\n邮费\n包邮吗"
    assert question_text({"title": "什么是会员？", "headers": ""}) == "什么是会员？"
    assert question_text({"title": "会员", "headers": "会员 > 怎么升级？"}) == "怎么升级？"
    assert question_text({"title": "会员规则", "headers": "等级"}) == ""
    assert question_text({}) == ""


def test_the_question_field_ranks_the_entry_asked_about_first(tmp_path: Path) -> None:
    # Both chunks hold the question's words; only "q" is the entry whose question it is.
    chunks = rows(
        ("q", "# 积分怎么兑换？\n\n在积分商城选择商品即可。", {"title": "积分怎么兑换？"}),
        (
            "t",
            "# 会员等级\n\n积分兑换商品不影响等级；积分兑换记录可在订单里查看，兑换后不退。",
            {"title": "会员等级"},
        ),
    )
    text_only = searcher(tmp_path, chunks)
    with_field = searcher(tmp_path, chunks, question_weight=0.6)
    assert text_only.search("积分兑换", 2)[0].document.id == "t"
    hits = with_field.search("积分兑换", 2)
    assert hits[0].document.id == "q"
    assert hits[0].question_bm25 > 0 and hits[1].question_bm25 == 0
    # Coverage (what the refusal gate sees) is a property of the text, not of the field.
    assert hits[0].coverage == text_only.search("积分兑换", 2)[1].coverage


# ------------------------------------------------------------------------------- FAQ matching


def _faq(question: str, answer: str, alternatives: str | None = None) -> Document:
    return Document(
        page_content=f"问：{question}\n答：{answer}",
        metadata={
            "doc_type": "faq",
            "faq_question": question,
            "faq_answer": answer,
            "faq_alternatives": alternatives,
        },
    )


def test_faq_direct_answers_normalise_both_strings() -> None:
    doc = _faq("优惠券可以叠加使用吗？", "平台券可以和店铺券叠加。")
    assert faq_direct_answer("优惠卷可以叠加使用吗", [doc], 0.8) is None
    assert faq_direct_answer("优惠卷可以叠加使用吗", [doc], 0.8, Synonyms()) is None
    defaults = default_synonyms()
    assert faq_direct_answer("优惠卷可以叠加使用吗", [doc], 0.8, defaults) == (
        "平台券可以和店铺券叠加。 [1]"
    )
    # A variant on the FAQ side is normalised too.
    typo_side = _faq("帐号被锁了怎么办", "30分钟后自动解锁。")
    assert faq_direct_answer("账号被锁了怎么办", [typo_side], 0.8, defaults) == (
        "30分钟后自动解锁。 [1]"
    )
