"""The pytest plugin rag_pipeline.testing as a user meets it: the example of examples/bot_tests/
run in a scratch copy by a fresh pytest, and the fixtures' promises checked through pytester
(an inner pytest run on test files written here). Inner runs are subprocesses: an in-process
run forgets the modules it imported when it ends, and the native parts of numpy and SQLAlchemy
cannot be imported twice in one process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag_pipeline.assistant import Assistant
from rag_pipeline.config import Settings
from rag_pipeline.testing import (
    Ingest,
    ModelServer,
    assert_answers,
    assert_no_model_call,
    assert_refused,
    override,
)
from tests.conftest import REPO
from tests.integration.processes import run_python

EXAMPLE = REPO / "examples" / "bot_tests"


def test_the_example_runs_in_a_fresh_project_on_a_folder_and_on_a_chroma_server(
    tmp_path: Path,
) -> None:
    """What a user who copied the example gets: both store variants pass, offline."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    done = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"], cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = [line for line in done.stdout.splitlines() if line.startswith("PASSED")]
    assert [line.rsplit("[", 1)[-1] for line in passed] == ["persistent]", "chroma_server]"]


def test_importing_the_plugin_imports_no_heavy_library() -> None:
    # In a fresh interpreter: this one imported chromadb and LangChain long ago.
    code = (
        "import sys, pytest; before = set(sys.modules); import rag_pipeline.testing; "
        "print(sorted(set(sys.modules) - before))"
    )
    done = run_python(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['rag_pipeline',",
        "'rag_pipeline.testing',",
        "'rag_pipeline.testing.assertions']",
    ]


def test_a_test_using_no_fixture_of_the_plugin_gets_none(pytester: pytest.Pytester) -> None:
    """Nothing autouse: a plain test's fixtures are the same with the plugin and without."""
    pytester.makepyfile(
        """
        def test_plain(request):
            loaded = request.config.pluginmanager.has_plugin("rag_pipeline.testing")
            print("FIXTURES", sorted(request.fixturenames), loaded)
        """
    )

    def fixtures(*args: str) -> str:
        result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
        result.assert_outcomes(passed=1)
        (line,) = [x for x in result.outlines if "FIXTURES" in x]
        return line.split("FIXTURES", 1)[1]

    with_plugin, without = fixtures(), fixtures("-p", "no:rag_pipeline.testing")
    assert with_plugin.endswith("True")  # loaded by its entry point
    assert with_plugin.removesuffix("True") == without.removesuffix("False")


def test_naming_the_plugin_again_or_turning_it_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "def test_it(rag_settings):\n    assert rag_settings.data_dir.exists() or 1"
    )
    # Named with -p while the entry point loads it too: registered once, no error.
    pytester.runpytest_subprocess("-p", "rag_pipeline.testing").assert_outcomes(passed=1)
    off = pytester.runpytest_subprocess("-p", "no:rag_pipeline.testing")
    off.assert_outcomes(errors=1)
    off.stdout.fnmatch_lines(["*fixture 'rag_settings' not found*"])


def test_rag_settings_read_nothing_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_RETRIEVER__K", "9")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-the-shell")
    monkeypatch.setenv("RAG_LLM__PROVIDER", "dashscope")
    pytester.makefile(".env", "RAG_STORE__MODE=memory\nOPENAI_API_KEY=sk-from-dotenv\n")
    pytester.makefile(".toml", rag="[retriever]\nk = 11\n")
    pytester.makepyfile(
        """
        def test_isolated(rag_settings, tmp_path):
            assert rag_settings.retriever.k == 6
            assert rag_settings.store.mode == "persistent"
            assert rag_settings.dashscope_api_key is None and rag_settings.openai_api_key is None
            assert rag_settings.llm_provider() == "extractive"
            assert rag_settings.embeddings.provider == "fake"
            assert rag_settings.data_dir == tmp_path / "rag-data"

        def test_factory(rag_settings_factory):
            settings = rag_settings_factory(retriever={"k": 2}, store={"collection": "shop"})
            assert settings.retriever.k == 2 and settings.retriever.score_threshold == 0.3
            assert settings.store.collection == "shop" and settings.store.mode == "persistent"
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_rag_real_model_switches_to_the_packaged_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_real(rag_settings):
            assert rag_settings.embeddings.provider == "local"
            assert rag_settings.retriever.score_threshold == 0.80
        """
    )
    pytester.runpytest_subprocess("--rag-real-model").assert_outcomes(passed=1)


def test_without_rag_corpus_the_assistant_fixture_says_what_to_define(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_bot(assistant):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define `rag_corpus` in your conftest.py*"])


CORPUS_TEST = """
    import pytest
    from pathlib import Path
    from rag_pipeline.testing import assert_answers, assert_refused

    @pytest.fixture
    def rag_corpus(tmp_path):
        folder = tmp_path / "docs"
        folder.mkdir()
        (folder / "shipping.md").write_text(
            "# 配送\\n\\n订单满99元包邮，不满99元收取运费8元。", encoding="utf-8"
        )
        return folder

    @pytest.mark.parametrize("rag_store", {stores})
    def test_answers(assistant, rag_settings, rag_store):
        assert_answers(assistant.ask("不满99元运费多少"), contains="8元", cites="shipping.md")
        assert_refused(assistant.ask("明天天气怎么样"))
        assert rag_settings.store.backend == ("milvus" if rag_store == "milvus_lite" else "chroma")
"""


def test_assistant_over_each_store_kind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CORPUS_TEST.format(stores='["persistent", "memory", "milvus_lite"]'))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_milvus_lite_is_skipped_with_the_extra_named_when_missing(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import sys
        import pytest

        @pytest.fixture(autouse=True)
        def no_pymilvus(monkeypatch):
            monkeypatch.setitem(sys.modules, "pymilvus", None)  # find_spec: not installed
        """
    )
    pytester.makepyfile(CORPUS_TEST.format(stores='["milvus_lite"]'))
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(['*[[]milvus[]] extra*pip install "rag-pipeline[[]milvus[]]"*'])


def test_milvus_server_is_skipped_with_the_extra_named_when_missing(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import sys
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def no_milvus():
            sys.modules["milvus"] = None  # find_spec: not installed
        """
    )
    pytester.makepyfile(
        """
        import pytest

        def test_server(milvus_server):
            pass

        @pytest.mark.parametrize("rag_store", ["milvus_server"])
        def test_store(rag_settings, rag_store):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        ['*`milvus` package*pip install "rag-pipeline[[]milvus-server[]]"*']
    )


def test_ingested_returns_the_report_and_takes_other_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_ingest(ingested, rag_settings_factory, tmp_path):
            (tmp_path / "a.md").write_text("退货政策：七天无理由退货。", encoding="utf-8")
            report = ingested(tmp_path / "a.md")
            assert report.files_ingested == 1 and report.chunks_added >= 1
            again = ingested([str(tmp_path / "a.md")])
            assert again.chunks_added == 0 and again.chunks_unchanged >= 1
            elsewhere = rag_settings_factory(data_dir=tmp_path / "other")
            assert ingested(tmp_path / "a.md", elsewhere).chunks_added >= 1
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_failing_assertion_reports_the_test_line_and_what_the_bot_said(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from rag_pipeline.chain import Answer
        from rag_pipeline.testing import assert_answers

        def test_bot():
            assert_answers(Answer("q", "q", "抱歉", True), contains="7天")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>*assert_answers(Answer("q", "q", "抱歉", True), contains="7天")',
            "E*expected an answer, the bot refused (handed over):",
            "E*answer:    '抱歉'",
        ]
    )
    result.stdout.no_fnmatch_line("*assertions.py*")  # the helper's frames are hidden


def test_fixtures_together_embeddings_and_chat_from_the_model_server(
    rag_settings: Settings, model_server: ModelServer, ingested: Ingest
) -> None:
    """Our suite uses the same fixtures: vectors and answers from the scripted server, a 500
    answered by the extractive fallback, and a refusal that calls no chat model."""
    settings = model_server.settings(rag_settings, embeddings=True)
    # The server's vectors score differently from the fake ones: its own threshold.
    settings = override(settings, llm={"max_retries": 0}, retriever={"score_threshold": 0.45})
    report = ingested(EXAMPLE / "docs", settings)
    assert report.files_ingested == 2 and model_server.requests("embeddings")
    assistant = Assistant.from_settings(settings)
    model_server.answer("签收后7天内申请退款[1]。")
    assert_answers(assistant.ask("怎么申请退款"), contains="7天内", cites="refund-policy.md")
    model_server.fail_next(500, kind="chat")  # the question's embedding still succeeds
    degraded = assistant.ask("怎么申请退款")
    assert (
        degraded.degraded and not degraded.generated and "500" in (degraded.degraded_reason or "")
    )
    model_server.reset()
    assert_refused(assistant.ask("明天天气怎么样"))
    assert_no_model_call(model_server)
