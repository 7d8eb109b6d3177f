"""One filter grammar for every backend and for the keyword index, checked once.

Metadata filters (``where``): a dict of ``KEY: VALUE`` (equality) or ``KEY: {OP: VALUE}``, all
keys ANDed, or ``{"$and": [...]}`` / ``{"$or": [...]}`` of such filters. Operators:

- ``$eq`` ``$ne``: a string, number or boolean;
- ``$gt`` ``$gte`` ``$lt`` ``$lte``: a number;
- ``$in`` ``$nin``: a non-empty list of strings, numbers or booleans.

A chunk without the key matches the negations ``$ne`` and ``$nin`` and no other operator, as in
Chroma; the Milvus translation is chosen to agree (``$ne`` becomes ``not in [VALUE]``: Milvus'
``!=`` would leave such chunks out), so the keyword side of hybrid search, which evaluates
filters here in Python, keeps exactly the chunks the vector side keeps.

Content filters (``where_document``): ``{"$contains": TEXT}``, ``{"$not_contains": TEXT}``
(case-sensitive substrings), combined with ``$and`` / ``$or`` lists.

Each grammar is checked by one function (``check_where``, ``check_where_document``) that raises
one readable ``ConfigurationError``; the checked form is translated by ``to_chroma`` /
``to_milvus`` and evaluated by ``matches`` / ``text_matches``.

>>> where = check_where({"doc_type": "faq", "page": {"$gte": 2}})
>>> to_chroma(where)
{'$and': [{'doc_type': {'$eq': 'faq'}}, {'page': {'$gte': 2}}]}
>>> to_milvus(where)
'(doc_type == "faq") and (page >= 2)'
>>> matches({"doc_type": "faq", "page": 3}, where)
True
>>> check_where({"page": {"$like": 2}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
rag_pipeline.errors.ConfigurationError: filter {'page': {'$like': 2}}: unknown operator '$like'; ...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any

from rag_pipeline.errors import ConfigurationError

Where = dict[str, Any]
WhereDocument = dict[str, Any]

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
MEMBERSHIP = ("$in", "$nin")
LOGICAL = ("$and", "$or")
TEXT_OPERATORS = ("$contains", "$not_contains")

_WHERE_HELP = (
    'expected {"KEY": VALUE}, {"KEY": {"$OP": VALUE}} with $OP one of '
    + " ".join(COMPARISONS + MEMBERSHIP)
    + ', or {"$and": [...]} / {"$or": [...]} of those, '
    + 'e.g. {"doc_type": "faq", "page": {"$gte": 2}}'
)
_DOCUMENT_HELP = (
    'expected {"$contains": "TEXT"}, {"$not_contains": "TEXT"}, or {"$and": [...]} / '
    '{"$or": [...]} of those, e.g. {"$contains": "运费"}'
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MILVUS_OPS = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class _Bad(Exception):
    """Internal: why a filter is invalid (turned into one ConfigurationError)."""


# ---------------------------------------------------------------------------------------------
# Checking: any accepted spelling -> the canonical form
# ---------------------------------------------------------------------------------------------
# Canonical metadata filter: {"$and"|"$or": [parts]} or {KEY: {OP: VALUE}} (one key, one op).


def check_where(where: Where | None) -> Where | None:
    """Validate a metadata filter; returns its canonical form (None for no filter).

    >>> check_where({"source": "faq.csv"})
    {'source': {'$eq': 'faq.csv'}}
    >>> check_where({}) is None
    True
    """
    if not where:
        return None
    try:
        return _canonical(where)
    except _Bad as e:
        raise ConfigurationError(f"filter {where!r}: {e}; {_WHERE_HELP}") from None


def _canonical(part: Any) -> Where:
    if not isinstance(part, dict) or not part:
        raise _Bad("each filter must be a non-empty JSON object")
    clauses = [_clause(key, value) for key, value in part.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _clause(key: Any, value: Any) -> Where:
    if key in LOGICAL:
        if not isinstance(value, list) or not value:
            raise _Bad(f"{key} needs a non-empty list of filters")
        parts = [_canonical(item) for item in value]
        return parts[0] if len(parts) == 1 else {key: parts}
    if not isinstance(key, str) or not key or key.startswith("$"):
        raise _Bad(f"unknown operator {key!r}" if isinstance(key, str) else f"bad key {key!r}")
    if not isinstance(value, dict):
        return {key: {"$eq": _scalar(key, value)}}
    if not value:
        raise _Bad(f"empty condition on {key!r}")
    conditions = [{key: {op: _operand(key, op, operand)}} for op, operand in value.items()]
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def _operand(key: str, op: str, operand: Any) -> Any:
    if op in ("$eq", "$ne"):
        return _scalar(key, operand)
    if op in COMPARISONS:
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise _Bad(f"{op} on {key!r} needs a number, not {operand!r}")
        return _scalar(key, operand)
    if op in MEMBERSHIP:
        if not isinstance(operand, list | tuple) or not operand:
            raise _Bad(f"{op} on {key!r} needs a non-empty list")
        return [_scalar(key, item) for item in operand]
    raise _Bad(f"unknown operator {op!r}")


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(f"the value of {key!r} is not a finite number")
    if not isinstance(value, str | int | float | bool):
        raise _Bad(f"the value of {key!r} must be a string, number or boolean, not {value!r}")
    return value


def check_where_document(where_document: WhereDocument | None) -> WhereDocument | None:
    """Validate a content filter (None or ``{}`` = no filter) and return it unchanged.

    >>> check_where_document({"$contains": "运费"})
    {'$contains': '运费'}
    """
    if not where_document:
        return None
    try:
        _check_document(where_document)
    except _Bad as e:
        raise ConfigurationError(
            f"where_document {where_document!r}: {e}; {_DOCUMENT_HELP}"
        ) from None
    return where_document


def _check_document(part: Any) -> None:
    if not isinstance(part, dict) or len(part) != 1:
        raise _Bad("each filter is an object with exactly one operator")
    ((op, operand),) = part.items()
    if op in TEXT_OPERATORS:
        if not isinstance(operand, str) or not operand:
            raise _Bad(f"{op} needs a non-empty text")
    elif op in LOGICAL:
        if not isinstance(operand, list) or not operand:
            raise _Bad(f"{op} needs a non-empty list of filters")
        for item in operand:
            _check_document(item)
    else:
        raise _Bad(f"unknown operator {op!r}")


# ---------------------------------------------------------------------------------------------
# Evaluating in Python (the keyword index)
# ---------------------------------------------------------------------------------------------


def matches(metadata: dict[str, Any], where: Where | None) -> bool:
    """Whether a chunk's metadata passes a checked (canonical) filter.

    >>> matches({"page": 1}, check_where({"page": {"$in": [1, 2]}}))
    True
    >>> matches({}, check_where({"page": {"$gt": 1}}))
    False
    >>> matches({}, check_where({"page": {"$ne": 1}}))  # no page: it is not 1
    True
    """
    if not where:
        return True
    ((key, value),) = where.items()
    if key == "$and":
        return all(matches(metadata, part) for part in value)
    if key == "$or":
        return any(matches(metadata, part) for part in value)
    ((op, operand),) = value.items()
    if key not in metadata:
        return op in ("$ne", "$nin")
    return _compare(metadata[key], op, operand)


def _same(a: Any, b: Any) -> bool:
    # Booleans are not numbers here, as in Chroma and Milvus: True does not equal 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _compare(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return _same(actual, operand)
    if op == "$ne":
        return not _same(actual, operand)
    if op == "$in":
        return any(_same(actual, item) for item in operand)
    if op == "$nin":
        return not any(_same(actual, item) for item in operand)
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return False  # a range on a text or boolean value matches nothing
    if op == "$gt":
        return bool(actual > operand)
    if op == "$gte":
        return bool(actual >= operand)
    if op == "$lt":
        return bool(actual < operand)
    return bool(actual <= operand)


def text_matches(text: str, where_document: WhereDocument | None) -> bool:
    """Whether ``text`` passes a checked content filter.

    >>> text_matches("满99元包邮，运费8元", {"$and": [{"$contains": "运费"},
    ...                                           {"$not_contains": "退货"}]})
    True
    """
    if not where_document:
        return True
    ((op, operand),) = where_document.items()
    if op == "$contains":
        return str(operand) in text
    if op == "$not_contains":
        return str(operand) not in text
    if op == "$and":
        return all(text_matches(text, part) for part in operand)
    return any(text_matches(text, part) for part in operand)


# ---------------------------------------------------------------------------------------------
# Chroma
# ---------------------------------------------------------------------------------------------


def to_chroma(where: Where | None) -> Where | None:
    """A filter in Chroma's ``where`` syntax: the canonical form is Chroma's (checking is
    idempotent, so an already checked filter passes through unchanged)."""
    return check_where(where)


def to_chroma_document(where_document: WhereDocument | None) -> WhereDocument | None:
    """A content filter in Chroma's ``where_document`` syntax (ours is Chroma's)."""
    return check_where_document(where_document)


# ---------------------------------------------------------------------------------------------
# Milvus
# ---------------------------------------------------------------------------------------------


def _literal(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid Milvus string literal: double quotes, backslash escapes.
    return json.dumps(value, ensure_ascii=False)


def _milvus_field(key: str, reserved: Collection[str]) -> str:
    if key in reserved:
        key = f"metadata_{key}"  # stored under this name: see the Milvus backend
    if _IDENTIFIER.match(key):
        return key  # a schema field, or else a key of the dynamic field
    return f"$meta[{json.dumps(key, ensure_ascii=False)}]"


def to_milvus(where: Where | None, reserved: Collection[str] = ()) -> str:
    """A filter as a Milvus boolean expression ("" = no filter). Strings are quoted
    and escaped, so a value cannot change the expression; ``reserved`` keys (schema fields)
    are stored as ``metadata_<key>`` and filtered under that name.

    >>> to_milvus({"source": 'a "b".md'})
    'source == "a \\\\"b\\\\".md"'
    >>> to_milvus({"$or": [{"doc_type": "faq"}, {"page": {"$nin": [1, 2]}}]})
    '(doc_type == "faq") or (page not in [1, 2])'
    """
    checked = check_where(where)
    return _milvus_expr(checked, reserved) if checked else ""


def _milvus_expr(where: Where, reserved: Collection[str]) -> str:
    ((key, value),) = where.items()
    if key in LOGICAL:
        joiner = " and " if key == "$and" else " or "
        return joiner.join(f"({_milvus_expr(part, reserved)})" for part in value)
    field = _milvus_field(key, reserved)
    ((op, operand),) = value.items()
    if op == "$ne":
        # Milvus' != leaves out rows without the key; `not in` keeps them, as Chroma does.
        return f"{field} not in [{_literal(operand)}]"
    if op in MEMBERSHIP:
        items = ", ".join(_literal(v) for v in operand)
        return f"{field} {'in' if op == '$in' else 'not in'} [{items}]"
    return f"{field} {_MILVUS_OPS[op]} {_literal(operand)}"


def _like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching it literally anywhere in a string."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return json.dumps(f"%{escaped}%", ensure_ascii=False)


def to_milvus_document(where_document: WhereDocument | None, text_field: str = "text") -> str:
    """A content filter as a Milvus expression on ``text_field`` ("" = no filter).
    Wildcards in the text are escaped: it matches literally.

    >>> print(to_milvus_document({"$contains": "50%_off"}))
    text like "%50\\\\%\\\\_off%"
    >>> to_milvus_document({"$or": [{"$contains": "运费"}, {"$not_contains": "包邮"}]})
    '(text like "%运费%") or (not (text like "%包邮%"))'
    """
    checked = check_where_document(where_document)
    return _milvus_document_expr(checked, text_field) if checked else ""


def _milvus_document_expr(where_document: WhereDocument, text_field: str) -> str:
    ((op, operand),) = where_document.items()
    if op == "$contains":
        return f"{text_field} like {_like_pattern(operand)}"
    if op == "$not_contains":
        return f"not ({text_field} like {_like_pattern(operand)})"
    joiner = " and " if op == "$and" else " or "
    return joiner.join(f"({_milvus_document_expr(item, text_field)})" for item in operand)
