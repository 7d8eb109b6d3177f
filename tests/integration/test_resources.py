"""A long-lived process (a bot, `rag serve`, a test session) does not leak open files: repeated
ingests and assistants in one process keep the number of open descriptors flat."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from rag_pipeline.assistant import Assistant
from rag_pipeline.indexing import ingest
from rag_pipeline.verify import verify
from tests.helpers import STORE_CORPUS, fake_settings, write_corpus

FDS = Path("/proc/self/fd")


@pytest.mark.skipif(not FDS.is_dir(), reason="counts open files through /proc (Linux)")
def test_repeated_work_in_one_process_keeps_open_files_flat(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path / "data", retriever={"score_threshold": 0.0})
    corpus = write_corpus(tmp_path / "kb", STORE_CORPUS)

    def round_of_work() -> None:
        ingest([corpus], settings)
        Assistant.from_settings(settings).ask("退款多久到账")
        verify(settings)

    round_of_work()  # clients and caches that live for the process are opened once here
    round_of_work()
    # Without the cycle collector, whatever is only freed by it stays: a leak then shows at
    # once (in a big process the collector's full passes are rare).
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir(FDS))
        for _ in range(5):
            round_of_work()
        after = len(os.listdir(FDS))
    finally:
        gc.enable()
    assert after <= before
