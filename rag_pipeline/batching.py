"""Cutting sequences into batches (the one helper the stores and embeddings share).

>>> [list(b) for b in batched([1, 2, 3, 4, 5], 2)]
[[1, 2], [3, 4], [5]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items``, ``size`` long (the last one shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
