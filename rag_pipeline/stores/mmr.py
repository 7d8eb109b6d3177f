"""Maximal marginal relevance over vectors: the diversity step of MMR retrieval, shared by the
dense retriever and the Milvus LangChain store (written here: LangChain's helper is private).
"""

from __future__ import annotations

from collections.abc import Sequence


def maximal_marginal_relevance(
    query: Sequence[float], candidates: Sequence[Sequence[float]], *, lambda_mult: float, k: int
) -> list[int]:
    """Indexes of ``k`` candidates picked by maximal marginal relevance, in picking order.

    Each step takes the candidate with the best ``lambda_mult * sim(query, c) - (1 -
    lambda_mult) * max sim(c, picked)``, cosine similarities throughout: 1 is pure relevance,
    0 pure diversity.

    >>> maximal_marginal_relevance([1, 0], [[1, 0], [0.99, 0.14], [0.6, 0.8]],
    ...                            lambda_mult=0.3, k=2)
    [0, 2]
    """
    import numpy as np

    if k <= 0 or not candidates:
        return []
    matrix = np.asarray(candidates, dtype=np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    q = np.asarray(query, dtype=np.float64)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    relevance = matrix @ q
    picked = [int(np.argmax(relevance))]
    redundancy = matrix @ matrix[picked[0]]  # max similarity to anything picked so far
    while len(picked) < min(k, len(candidates)):
        scores = lambda_mult * relevance - (1 - lambda_mult) * redundancy
        scores[picked] = -np.inf
        best = int(np.argmax(scores))
        picked.append(best)
        redundancy = np.maximum(redundancy, matrix @ matrix[best])
    return picked
