"""``batched``: consecutive slices of a sequence."""

from __future__ import annotations

import pytest

from rag_pipeline.batching import batched


@pytest.mark.parametrize(
    ("n", "size", "lengths"),
    [(5, 2, [2, 2, 1]), (6, 3, [3, 3]), (3, 10, [3]), (1, 1, [1]), (0, 4, [])],
)
def test_batch_lengths(n: int, size: int, lengths: list[int]) -> None:
    items = list(range(n))
    batches = list(batched(items, size))
    assert [len(b) for b in batches] == lengths
    assert [x for b in batches for x in b] == items  # in order, nothing lost or repeated


def test_batches_are_slices_of_the_same_type() -> None:
    assert list(batched("abcde", 2)) == ["ab", "cd", "e"]
    assert list(batched((1, 2, 3), 2)) == [(1, 2), (3,)]


def test_it_is_lazy() -> None:
    batches = batched(list(range(10)), 4)
    assert next(batches) == [0, 1, 2, 3]
    assert next(batches) == [4, 5, 6, 7]


def test_size_zero_is_an_error() -> None:
    with pytest.raises(ValueError):
        list(batched([1, 2], 0))
