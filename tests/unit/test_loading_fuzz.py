"""Fuzz: whatever bytes a file holds, the loader returns Documents or raises LoadError.

Any other exception would be reported as "unexpected" by ingest (or, before that guard,
abort it); LoadError carries a reason a user can act on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_pipeline.loading import SUPPORTED_SUFFIXES, LoadError, SourceFile, load_file

# Prefixes that get random bytes past each format's first check (magic numbers, headers).
PREFIXES = [
    b"",
    b"%PDF-1.4\n",
    b"PK\x03\x04",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"---\n",
    b"question,answer\n",
    b'{"question": "',
    b"<html><body><div>",
]
CONTENT = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=400)).map(lambda p: p[0] + p[1]),
    st.tuples(st.sampled_from(PREFIXES), st.text(max_size=200)).map(
        lambda p: p[0] + p[1].encode("utf-8", "surrogatepass")
    ),
)


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=CONTENT)
def test_arbitrary_bytes_load_or_raise_load_error(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            docs = load_file(SourceFile(path, Path(folder)), problems=[])
        except LoadError as e:
            assert str(e)  # a reason to show
            return
        assert docs
        for doc in docs:
            assert doc.metadata["source"] == f"fuzz{suffix}"
            doc.page_content.encode("utf-8")  # storable text, no lone surrogates
