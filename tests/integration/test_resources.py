"""A long-lived process (a bot, `rag serve`, a test session) does not leak open files: repeated
ingests and assistants in one process keep the number of open descriptors flat, and a process
that works on many data folders does not keep each one open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_pipeline.stores.chroma import KEEP_OPEN_FOLDERS
from tests.conftest import REPO
from tests.integration.processes import clean_env, run_python

FDS = Path("/proc/self/fd")

# Run in a child of its own: the test session's other threads (servers, clients of earlier
# tests) open and close descriptors at any moment, which a count of the whole process sees.
ROUNDS = """
import gc, json, os, sys, time
from pathlib import Path

from rag_pipeline.assistant import Assistant
from rag_pipeline.indexing import ingest
from rag_pipeline.verify import verify
from tests.helpers import STORE_CORPUS, fake_settings, write_corpus

def open_files():
    # Chroma's engine keeps a pool of connections to a folder's database that grows and
    # shrinks with use: they count as one open file.
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        found[target if target.endswith("chroma.sqlite3") else fd] = target
    return found

def settled(limit=None):
    # Chroma's engine closes a stopped folder's database connections on a thread of its own:
    # give it a moment (a leak stays; a late close does not). Without a limit: until the count
    # has held still for a second.
    deadline = time.monotonic() + 10
    found, still_since = open_files(), time.monotonic()
    while time.monotonic() < deadline:
        if limit is not None and len(found) <= limit:
            break
        if limit is None and time.monotonic() - still_since >= 1:
            break
        time.sleep(0.1)
        now = open_files()
        if len(now) != len(found):
            still_since = time.monotonic()
        found = now
    return found

root = Path(sys.argv[1])
corpus = write_corpus(root / "kb", STORE_CORPUS)

def round_of_work(folder):
    settings = fake_settings(root / folder, retriever={"score_threshold": 0.0})
    ingest([corpus], settings)
    with Assistant.from_settings(settings) as assistant:
        assistant.ask("退款多久到账")
    verify(settings)

round_of_work("same")  # clients and caches that live for the process are opened once here
round_of_work("same")
# Without the cycle collector, whatever is only freed by it stays: a leak then shows at once
# (in a big process the collector's full passes are rare).
gc.collect()
gc.disable()
before = settled()
for _ in range(5):
    round_of_work("same")
same = settled(len(before))
for n in range(6):
    round_of_work(f"other-{n}")
some = settled()
for n in range(6, 12):
    round_of_work(f"other-{n}")
more = settled(len(some))
print(json.dumps({"before": before, "same": same, "some": some, "more": more}))
"""


def _new(after: dict[str, str], before: dict[str, str]) -> list[str]:
    return sorted(target for fd, target in after.items() if before.get(fd) != target)


def _folders(files: dict[str, str], root: Path) -> set[str]:
    """The data folders under ``root`` with a file open."""
    inside = (
        Path(target).relative_to(root) for target in files.values() if target.startswith(str(root))
    )
    return {path.parts[0] for path in inside if len(path.parts) > 1}


@pytest.mark.skipif(not FDS.is_dir(), reason="counts open files through /proc (Linux)")
def test_repeated_work_in_one_process_keeps_open_files_flat(tmp_path: Path) -> None:
    child = run_python(["-c", ROUNDS, str(tmp_path)], env=clean_env(PYTHONPATH=str(REPO)))
    assert child.returncode == 0, child.stderr[-3000:]
    files = json.loads(child.stdout.strip().splitlines()[-1])
    before, same, some, more = files["before"], files["same"], files["some"], files["more"]
    assert len(same) <= len(before), _new(same, before)
    # Six more data folders, then six others, each ingested, asked and verified once: the
    # folders used last stay open for the next use, the others close.
    assert len(more) <= len(some), _new(more, some)
    assert len(_folders(more, tmp_path)) <= KEEP_OPEN_FOLDERS, sorted(more.values())
