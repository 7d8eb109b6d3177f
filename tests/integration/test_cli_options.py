"""The `rag` command's shape: global options before or after the command, help on every
option, the exit code of an unreachable store, and the OpenMP default set by the entry point."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pipeline.cli import EXIT_STORE, build_parser, main
from rag_pipeline.testing.chroma import free_port
from tests.integration.processes import clean_env


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_parsers(sub))
    return found


def test_every_option_has_help_text() -> None:
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "D", "--collection", "kb_one", "--json", "--debug", "info"],
        ["info", "--data-dir", "D", "--collection", "kb_one", "--json", "--debug"],
        ["--data-dir", "D", "info", "--json", "--collection", "kb_one", "--debug"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.data_dir, args.collection, args.json, args.debug) == (
        Path("D"),
        "kb_one",
        True,
        True,
    )


def test_global_options_default_when_absent_and_nested_commands_take_them() -> None:
    args = build_parser().parse_args(["collections", "count"])
    assert (args.data_dir, args.collection, args.json, args.debug) == (None, None, False, False)
    args = build_parser().parse_args(["collections", "--json", "count", "--data-dir", "X"])
    assert (args.json, args.data_dir) == (True, Path("X"))


def test_an_unreachable_chroma_server_exits_4_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_STORE__MODE", "http")
    monkeypatch.setenv("RAG_STORE__HOST", "127.0.0.1")
    monkeypatch.setenv("RAG_STORE__PORT", str(free_port()))
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    assert main(["collections", "count"]) == EXIT_STORE == 4
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Chroma server") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_defaults_openmp_threads_to_sleep(
    preset: str | None, expected: str, tmp_path: Path
) -> None:
    env = clean_env()
    env.pop("OMP_WAIT_POLICY", None)
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import os, sys; from rag_pipeline.cli import main;"
        "main(['config']); print(os.environ['OMP_WAIT_POLICY'], file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr.strip().splitlines()[-1] == expected
