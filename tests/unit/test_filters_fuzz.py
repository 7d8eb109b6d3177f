"""Fuzz: any JSON given as a filter is accepted (and canonical) or refused in one line."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.stores.filters import (
    COMPARISONS,
    LOGICAL,
    MEMBERSHIP,
    TEXT_OPERATORS,
    check_where,
    check_where_document,
    matches,
    text_matches,
)

KEYS = st.one_of(
    st.sampled_from([*COMPARISONS, *MEMBERSHIP, *LOGICAL, *TEXT_OPERATORS, "page", "doc_type"]),
    st.text(max_size=8),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None)


def _one_line(error: ConfigurationError) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1, message


@FUZZ
@given(where=JSON)
def test_metadata_filters_are_accepted_or_refused_in_one_line(where: Any) -> None:
    try:
        checked = check_where(where)
    except ConfigurationError as e:
        _one_line(e)
        return
    assert check_where(checked) == checked  # canonical form is a fixed point
    if checked is not None:
        matches({"page": 2, "doc_type": "faq"}, checked)  # evaluable without error


@FUZZ
@given(where_document=JSON)
def test_content_filters_are_accepted_or_refused_in_one_line(where_document: Any) -> None:
    try:
        checked = check_where_document(where_document)
    except ConfigurationError as e:
        _one_line(e)
        return
    assert check_where_document(checked) == checked
    text_matches("满99元包邮，运费8元", checked)
