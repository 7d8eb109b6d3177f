"""The ``rag`` command in process: the parser, flags to settings, exit codes and messages,
the human output of answers, and the chat loop (with a scripted assistant)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline import cli
from rag_pipeline.chain import Answer, Source
from rag_pipeline.cli import _parse_filters, _settings, build_parser, main
from rag_pipeline.errors import ConfigurationError, ProviderError
from tests.helpers import fake_settings, run_cli, use_env, write_corpus


def test_where_document_from_cli_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["ask", "q", "--where-document-contains", "运费"])
    assert _settings(args).retriever.where_document == {"$contains": "运费"}
    args = parser.parse_args(
        ["ask", "q", "--where-document-contains", "运费", "--where-document-contains", "8元"]
    )
    assert _settings(args).retriever.where_document == {
        "$and": [{"$contains": "运费"}, {"$contains": "8元"}]
    }
    assert _settings(parser.parse_args(["ask", "q"])).retriever.where_document == {}


def test_delete_needs_yes_and_touches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collections", "delete"]) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "'rag'" in err
    assert not Path(".rag").exists()


def test_collections_parser() -> None:
    parser = build_parser()
    assert parser.parse_args(["collections", "peek"]).n == 5
    assert parser.parse_args(["collections", "peek", "12", "--json"]).n == 12
    args = parser.parse_args(["collections", "rename", "new_name", "--collection", "old_name"])
    assert (args.action, args.new_name, args.collection) == ("rename", "new_name", "old_name")
    with pytest.raises(SystemExit):
        parser.parse_args(["collections"])


def test_every_command_is_wired() -> None:
    parser = build_parser()
    for argv in (
        ["ingest"],
        ["ask", "q"],
        ["chat"],
        ["eval", "d"],
        ["similarity", "q", "t"],
        ["info"],
        ["config"],
        ["collections", "list"],
        ["migrate"],
    ):
        assert parser.parse_args(argv).command in cli.COMMANDS
    with pytest.raises(SystemExit) as e:
        parser.parse_args([])
    assert e.value.code == 2


def test_ask_and_migrate_defaults() -> None:
    parser = build_parser()
    args = parser.parse_args(["ask", "怎么退货"])
    assert (args.json, args.filter, args.k, args.debug, args.data_dir) == (
        False,
        [],
        None,
        False,
        None,
    )
    migrate = parser.parse_args(["migrate", "--to-backend", "milvus"])
    assert (migrate.batch_size, migrate.replace, migrate.to_backend) == (500, False, "milvus")
    with pytest.raises(SystemExit):
        parser.parse_args(["migrate", "--to-backend", "qdrant"])


def test_filters_parse_keys_and_numbers() -> None:
    assert _parse_filters(["source=faq.csv", " page = 2 ", "delta=-3", "code=RP-1"]) == {
        "source": "faq.csv",
        "page": 2,
        "delta": -3,
        "code": "RP-1",
    }
    assert _parse_filters(["note=a=b"]) == {"note": "a=b"}  # the first = splits
    for bad in ("source", "=x"):
        with pytest.raises(ConfigurationError, match="KEY=VALUE"):
            _parse_filters([bad])


def test_flags_override_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "ask",
            "q",
            "--data-dir",
            str(tmp_path),
            "--collection",
            "kb_two",
            "--k",
            "3",
            "--threshold",
            "0.5",
            "--filter",
            "source=faq.csv",
        ]
    )
    settings = _settings(args)
    assert settings.data_dir == tmp_path and settings.store.collection == "kb_two"
    assert (settings.retriever.k, settings.retriever.score_threshold) == (3, 0.5)
    assert settings.retriever.filter == {"source": "faq.csv"}


def test_a_bad_flag_is_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "ask", "q", "--filter", "nokey")
    assert code == 2 and out == ""
    assert err.startswith("error: --filter 'nokey'") and err.count("\n") == 1
    assert not Path(".rag").exists()  # nothing was opened


def test_debug_shows_the_exception() -> None:
    with pytest.raises(ConfigurationError):
        main(["ask", "q", "--filter", "nokey", "--debug"])


def test_an_invalid_collection_name_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "info", "--collection", "has-dash")
    assert code == 2 and "collection" in err


def test_asking_before_ingest_is_exit_2_and_says_ingest(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, fake_settings(tmp_path / "data"))
    code, _, err = run_cli(capsys, "ask", "怎么退货")
    assert code == 2 and "ingest" in err and "Traceback" not in err


def test_ingest_without_paths_needs_a_corpus_folder(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "ingest")
    assert code == 2 and "corpus/" in err


def test_a_failed_remote_call_is_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(args: Any) -> int:
        raise ProviderError("the chat model API failed: HTTP 503")

    monkeypatch.setitem(cli.COMMANDS, "info", fail)
    code, _, err = run_cli(capsys, "info")
    assert code == 1 and err == "error: the chat model API failed: HTTP 503\n"


def test_config_prints_effective_settings_with_secrets_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    code, out, _ = run_cli(capsys, "config", "--collection", "kb_cfg")
    assert code == 0 and "sk-very-secret" not in out
    data = json.loads(out)
    assert data["openai_api_key"] == "***" and data["store"]["collection"] == "kb_cfg"
    assert data["llm"]["provider_in_effect"] == "openai"


def test_ingest_then_ask_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, fake_settings(tmp_path / "data"))
    monkeypatch.setenv("RAG_RETRIEVER__SCORE_THRESHOLD", "0.1")
    corpus = write_corpus(tmp_path / "corpus")
    code, out, _ = run_cli(capsys, "ingest", str(corpus), "--json")
    assert code == 0 and json.loads(out)["files_ingested"] == 3
    code, out, _ = run_cli(capsys, "ingest", str(corpus))
    assert code == 0 and "0 chunks added" in out
    code, out, _ = run_cli(capsys, "ask", "退货运费由谁承担", "--json")
    answer = json.loads(out)
    assert code == 0 and not answer["refused"]
    assert "returns.md" in {s["source"] for s in answer["sources"]}


def test_ingest_with_a_broken_file_is_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, fake_settings(tmp_path / "data"))
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    code, out, _ = run_cli(capsys, "ingest", str(corpus))
    assert code == 3
    assert "3/4 files ingested" in out and "failed  broken.pdf" in out


def _answer(refused: bool = False) -> Answer:
    sources = [
        Source(1, "returns.md", 0.91, "签收后7天内可退。", headers="退货政策 > 七天"),
        Source(2, "guide.pdf", 0.5, "第二页内容", title="指南", page=2),
    ]
    return Answer(
        question="怎么退货",
        standalone_question="怎么退货",
        answer="抱歉" if refused else "签收后7天内可退 [1]",
        refused=refused,
        sources=[] if refused else sources,
        context=[] if refused else sources,
    )


def test_human_output_lists_sources_with_page_heading_and_relevance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._print_sources(_answer(), show_context=True)
    out = capsys.readouterr().out
    assert "  [1] returns.md | 退货政策 > 七天 (relevance 0.91)" in out
    assert "  [2] guide.pdf p.2 | 指南 (relevance 0.50)" in out
    assert "--- [2] guide.pdf (relevance 0.50)\n第二页内容" in out
    cli._print_sources(_answer(refused=True), show_context=True)
    assert capsys.readouterr().out == ""  # a refusal has no sources


class ScriptedAssistant:
    """Streams a fixed answer and remembers the history it was given."""

    def __init__(self) -> None:
        self.histories: list[list[tuple[str, str]]] = []

    def stream(self, question: str, history: list[tuple[str, str]]) -> Iterator[str | Answer]:
        self.histories.append(list(history))
        yield "签收后7天内"
        yield "可退 [1]"
        answer = _answer()
        answer.question = answer.standalone_question = question
        yield answer


def test_chat_loop_keeps_history_and_handles_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_pipeline.assistant import Assistant

    assistant = ScriptedAssistant()
    monkeypatch.setattr(Assistant, "from_settings", classmethod(lambda cls, s: assistant))
    lines = iter(["/sources", "怎么退货", "", "那运费呢？", "/sources", "/reset", "q3", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    code, out, _ = run_cli(capsys, "chat")
    assert code == 0
    assert "（还没有回答）" in out  # /sources before any answer
    assert out.count("客服> 签收后7天内可退 [1]") == 3
    assert out.count("来源 / Sources:") == 1 and "（对话已清空）" in out
    assert assistant.histories == [
        [],
        [("怎么退货", "签收后7天内可退 [1]")],
        [],  # after /reset
    ]


def test_chat_ends_on_end_of_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_pipeline.assistant import Assistant

    monkeypatch.setattr(Assistant, "from_settings", classmethod(lambda cls, s: ScriptedAssistant()))

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    assert run_cli(capsys, "chat")[0] == 0
