"""The one filter grammar: checking, Python evaluation, Chroma and Milvus translation."""

from __future__ import annotations

from typing import Any

import pytest

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.stores.filters import (
    check_where,
    check_where_document,
    matches,
    text_matches,
    to_chroma,
    to_chroma_document,
    to_milvus,
    to_milvus_document,
)

GOOD_DOCUMENT_FILTERS: list[dict[str, Any]] = [
    {"$contains": "运费"},
    {"$not_contains": "退货"},
    {"$and": [{"$contains": "运费"}, {"$not_contains": "包邮"}]},
    {"$or": [{"$contains": "a"}, {"$and": [{"$contains": "b"}, {"$contains": "c"}]}]},
]
BAD_DOCUMENT_FILTERS: list[Any] = [
    {"$contains": ""},
    {"$contains": 3},
    {"$like": "运费"},
    {"$contains": "a", "$not_contains": "b"},
    {"$and": []},
    {"$or": {"$contains": "a"}},
    {"$and": [{"source": "faq.csv"}]},
    ["$contains", "a"],
]
BAD_FILTERS: list[tuple[Any, str]] = [
    ({"page": {"$like": 2}}, "unknown operator '$like'"),
    ({"$not": {"page": 1}}, "unknown operator '$not'"),
    ({"page": {"$gte": "2"}}, "$gte on 'page' needs a number"),
    ({"page": {"$gte": True}}, "$gte on 'page' needs a number"),
    ({"source": {"$in": []}}, "$in on 'source' needs a non-empty list"),
    ({"source": {"$in": "faq.csv"}}, "$in on 'source' needs a non-empty list"),
    ({"source": ["a", "b"]}, "must be a string, number or boolean"),
    ({"source": None}, "must be a string, number or boolean"),
    ({"page": float("nan")}, "not a finite number"),
    ({"page": {}}, "empty condition on 'page'"),
    ({"$and": []}, "$and needs a non-empty list"),
    ({"$or": [{}]}, "non-empty JSON object"),
]


@pytest.mark.parametrize("where_document", GOOD_DOCUMENT_FILTERS)
def test_good_content_filters_pass_unchanged(where_document: dict[str, Any]) -> None:
    assert check_where_document(where_document) is where_document
    assert to_chroma_document(where_document) == where_document


@pytest.mark.parametrize("where_document", BAD_DOCUMENT_FILTERS)
def test_bad_content_filters_say_what_is_expected(where_document: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_where_document(where_document)
    message = str(info.value)
    assert '{"$contains": "TEXT"}' in message and "\n" not in message


@pytest.mark.parametrize(("where", "why"), BAD_FILTERS)
def test_bad_metadata_filters_are_one_readable_line(where: Any, why: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_where(where)
    message = str(info.value)
    assert why in message and "$nin" in message and "\n" not in message


def test_no_filter() -> None:
    assert check_where(None) is None and check_where({}) is None
    assert check_where_document(None) is None and check_where_document({}) is None
    assert to_milvus(None) == to_milvus_document({}) == ""
    assert matches({"a": 1}, None) and text_matches("anything", {})


def test_canonical_form_is_chroma_syntax_and_idempotent() -> None:
    where = {"doc_type": "faq", "page": {"$gte": 2, "$lt": 5}}
    canonical = check_where(where)
    assert canonical == {
        "$and": [
            {"doc_type": {"$eq": "faq"}},
            {"$and": [{"page": {"$gte": 2}}, {"page": {"$lt": 5}}]},
        ]
    }
    assert check_where(canonical) == canonical
    assert to_chroma(where) == canonical
    # A one-item $and / $or is the item itself (Chroma rejects one-item lists).
    assert check_where({"$or": [{"source": "a.md"}]}) == {"source": {"$eq": "a.md"}}


def test_python_evaluation_of_every_operator() -> None:
    meta = {"source": "faq.csv", "page": 3, "score": 0.5, "faq": True}
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"source": "faq.csv"}, True),
        ({"source": {"$ne": "faq.csv"}}, False),
        ({"page": {"$gt": 3}}, False),
        ({"page": {"$gte": 3}}, True),
        ({"page": {"$lt": 3.5}}, True),
        ({"page": {"$lte": 2}}, False),
        ({"page": {"$in": [1, 3]}}, True),
        ({"page": {"$nin": [1, 3]}}, False),
        ({"faq": True}, True),
        ({"faq": 1}, False),  # a boolean is not a number, as in Chroma and Milvus
        ({"page": True}, False),
        ({"source": {"$gt": 1}}, False),  # a range on text matches nothing
        ({"$or": [{"page": 1}, {"score": {"$gte": 0.5}}]}, True),
        ({"$and": [{"page": 3}, {"source": "x"}]}, False),
        # A chunk without the key matches only the negations, as in Chroma.
        ({"missing": {"$ne": 1}}, True),
        ({"missing": {"$nin": [1]}}, True),
        ({"missing": {"$eq": 1}}, False),
        ({"missing": {"$gte": 1}}, False),
        ({"missing": {"$in": [1]}}, False),
    ]
    for where, expected in cases:
        assert matches(meta, check_where(where)) is expected, where


def test_content_evaluation() -> None:
    text = "订单满99元包邮，不满99元收取运费8元。"
    assert text_matches(text, {"$contains": "运费"})
    assert not text_matches(text, {"$contains": "退款"})
    assert text_matches(text, {"$not_contains": "退款"})
    assert text_matches(text, {"$and": [{"$contains": "包邮"}, {"$contains": "运费"}]})
    assert not text_matches(text, {"$and": [{"$contains": "包邮"}, {"$contains": "退"}]})
    assert text_matches(text, {"$or": [{"$contains": "退"}, {"$contains": "8元"}]})
    assert not text_matches("Hello World", {"$contains": "world"})  # case-sensitive


def test_milvus_metadata_expressions() -> None:
    assert to_milvus({"source": "faq.csv"}) == 'source == "faq.csv"'
    assert to_milvus({"page": {"$in": [1, 2]}, "ok": False}) == (
        "(page in [1, 2]) and (ok == false)"
    )
    assert to_milvus({"source": {"$nin": ["a", "b"]}}) == 'source not in ["a", "b"]'
    assert to_milvus({"source": {"$ne": "a"}}) == 'source not in ["a"]'
    assert to_milvus({"$or": [{"page": {"$gte": 2}}, {"score": {"$lt": 0.5}}]}) == (
        "(page >= 2) or (score < 0.5)"
    )
    assert to_milvus({"odd key": 1}) == '$meta["odd key"] == 1'
    assert to_milvus({"text": "x"}, reserved={"text"}) == 'metadata_text == "x"'
    # A value cannot change the expression: it is a quoted, escaped literal.
    assert to_milvus({"source": '" or 1 == 1 or "'}) == r'source == "\" or 1 == 1 or \""'
    with pytest.raises(ConfigurationError):
        to_milvus({"page": {"$regex": "a"}})


def test_milvus_content_expressions_match_literally() -> None:
    assert to_milvus_document({"$contains": "运费"}) == 'text like "%运费%"'
    assert to_milvus_document({"$not_contains": "运费"}) == 'not (text like "%运费%")'
    # LIKE wildcards and backslashes are escaped, then the pattern is a JSON string literal.
    assert to_milvus_document({"$contains": "50%"}) == r'text like "%50\\%%"'
    assert to_milvus_document({"$contains": "VIP_1"}) == r'text like "%VIP\\_1%"'
    assert to_milvus_document({"$contains": "a\\b"}) == r'text like "%a\\\\b%"'
    assert to_milvus_document({"$contains": 'say "hi"'}) == r'text like "%say \"hi\"%"'
    assert to_milvus_document(
        {"$and": [{"$contains": "a"}, {"$or": [{"$contains": "b"}, {"$not_contains": "c"}]}]}
    ) == ('(text like "%a%") and ((text like "%b%") or (not (text like "%c%")))')
    with pytest.raises(ConfigurationError):
        to_milvus_document({"$regex": "a.*"})
