"""The keyword index's storage: packed posting lists round-trip, merges keep exactly the live
postings of every term, the merge policy, and SQL written once for both dialects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag_pipeline import keyword_store as ks
from rag_pipeline import state_db


def _row(term: str, docnos: list[int], tfs: list[int], lengths: list[int]) -> tuple:
    packed = ks.decode(
        np.asarray(docnos, dtype="<i4").tobytes(),
        ks._uint16(tfs),
        ks._uint16(lengths),
    )
    return (
        term,
        len(docnos),
        packed.docs.astype("<i4").tobytes(),
        packed.tfs.astype("<u2").tobytes(),
        packed.lengths.astype("<u2").tobytes(),
    )


def test_posting_lists_round_trip_and_clip_at_uint16() -> None:
    postings = ks.decode(
        np.asarray([3, 7, 2_000_000], dtype="<i4").tobytes(),
        ks._uint16([1, 2, 70_000]),
        ks._uint16([10, 65_535, 99_999]),
    )
    assert postings.docs.tolist() == [3, 7, 2_000_000]
    assert postings.tfs.tolist() == [1, 2, ks.MAX_LENGTH]
    assert postings.lengths.tolist() == [10, 65_535, ks.MAX_LENGTH]


def test_merged_rows_keep_each_terms_live_postings_in_segment_order() -> None:
    rows = [  # ordered by term, then segment, as merge_segments reads them
        _row("a", [1, 2], [1, 1], [5, 6]),
        _row("a", [10, 11], [2, 3], [7, 8]),
        _row("b", [2], [4], [6]),
        _row("c", [3, 12], [1, 1], [9, 9]),
    ]
    live = np.asarray([1, 3, 10, 11])  # chunks 2 and 12 were deleted
    base = int(live.min())
    alive = np.zeros(int(live.max()) - base + 1, dtype=bool)
    alive[live - base] = True
    merged = ks._merged_rows(1, ks.BODY, 99, rows, alive, base)
    by_term = {row[3]: ks.decode(*row[6:9]) for row in merged}
    assert set(by_term) == {"a", "c"}  # "b" had only a deleted chunk: no row
    assert by_term["a"].docs.tolist() == [1, 10, 11]
    assert by_term["a"].tfs.tolist() == [1, 2, 3]
    assert by_term["a"].lengths.tolist() == [5, 7, 8]
    assert by_term["c"].docs.tolist() == [3]
    assert all(row[4] == row[5] == len(by_term[row[3]]) for row in merged)  # count == live
    assert all(row[0] == 99 and row[1] == 1 for row in merged)  # the new segment, namespace


def test_the_merge_policy_merges_a_full_level_then_mostly_dead_segments(tmp_path: Path) -> None:
    engine = state_db.open_state(tmp_path / "k.sqlite")
    with state_db.writing(engine) as conn:
        rows = [
            {"namespace": 1, "segment": n, "level": 0, "size": 10, "live": 10}
            for n in range(1, ks.MERGE_FACTOR)
        ]
        conn.execute(ks.segments.insert(), rows)
        assert ks.segments_to_merge(conn, 1) is None  # one short of a full level
        conn.execute(
            ks.segments.insert(),
            [{"namespace": 1, "segment": 50, "level": 2, "size": 100, "live": 40}],
        )
        assert ks.segments_to_merge(conn, 1) == ([50], 2)  # 40% live: rewritten alone
        conn.execute(
            ks.segments.insert(),
            [{"namespace": 1, "segment": 60, "level": 0, "size": 10, "live": 10}],
        )
        plan = ks.segments_to_merge(conn, 1)
        assert plan == ([*range(1, ks.MERGE_FACTOR), 60], 1)


def test_bulk_statements_are_written_once_for_both_placeholder_styles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = state_db.open_state(tmp_path / "k.sqlite")
    seen: list[str] = []

    class Recording:
        class dialect:  # noqa: N801  (mimics Connection.dialect)
            paramstyle = "format"

        def exec_driver_sql(self, sql: str, rows: list) -> None:
            seen.append(sql)

    ks.subtract_live(Recording(), [(1, 1, 1, 0, "运费")])  # type: ignore[arg-type]
    assert "%s" in seen[0] and "?" not in seen[0]
    with state_db.writing(engine) as conn:
        ks.subtract_live(conn, [(1, 1, 1, 0, "运费")])  # qmark: runs as written
