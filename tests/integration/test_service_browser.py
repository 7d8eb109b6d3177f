"""The chat page (/) and the admin page (/admin) in a real headless Chromium, as a customer and
an operator use them: ask, read the streamed answer, open a citation, hand over, rate; upload,
read the report, delete, read the knowledge gaps, run the evaluation and open its report; on a
phone-width screen; with a document that contains markup.

Every browser test runs against ``service``: the pages of ``rag_pipeline.service.pages`` over
the fake HTTP API of ``tests/integration/fake_service_api.py`` ("fake"), and over the real app
of ``create_app`` ("real": skipped while this branch has no real /v1/chat/completions; it runs
by itself once the API routers are merged). Both start empty and are filled with ``SEED``
through ``POST /v1/documents``, so the tests only use the HTTP contract. One browser per
module, a fresh context (own localStorage) per test.

Screenshots go to the module's temporary folder and, with ``TEST_ARTIFACTS_DIR`` set, to that
folder too.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.helpers import memory_settings
from tests.integration.browser import Screenshots, chromium_executable, launch_chromium
from tests.integration.fake_service_api import FakeApi, fake_app, serve
from tests.integration.live_service import live_service

USER_KEY = "user-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
PHONE = {"width": 375, "height": 740}

MARKUP = '<img src=x onerror="window.__xss=1">'
SEED = {
    "shipping.md": "# 配送说明\n\n订单满99元包邮，不满99元收取运费8元。\n\n"
    "新疆、西藏等偏远地区运费另计，一般需要5到7天送达。\n",
    "returns.md": "# 退货政策\n\n签收后7天内可申请无理由退货，商品需保持完好。"
    "退货运费由买家承担，质量问题除外。\n",
    "markup.txt": f"网页代码示例\n\n客服后台的图片标签写法是 {MARKUP} ，请勿照抄。\n",
}
# The operator's own evaluation questions, beside the uploads in the documents folder (out of
# the index: .ragignore; uploads ingest their own files only, never the folder).
EVAL_QUESTIONS = [
    {"question": "订单满多少元包邮", "sources": ["shipping.md"], "answer_contains": "99元"},
    {"question": "退货运费谁承担", "sources": ["returns.md"], "answer_contains": "买家承担"},
]
EVAL_OUT_OF_SCOPE = [{"question": "今天天气怎么样"}, {"question": "股票明天会涨吗"}]
Q_SHIPPING = "订单满多少元包邮？"
Q_MARKUP = "客服后台的图片标签写法是什么？"
Q_REFUSED = "你们支持火星快递吗？"


@dataclass
class Served:
    kind: str  # "fake" or "real"
    url: str
    fake: FakeApi | None  # the test double's state; None when the real app serves


def _upload(url: str, files: dict[str, bytes]) -> dict[str, Any]:
    response = httpx.post(
        url + "/v1/documents",
        files=[("files", (name, data)) for name, data in files.items()],
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
    )
    response.raise_for_status()
    return response.json()


@contextmanager
def _real_service(data_dir: Path) -> Iterator[Served]:
    """``create_app`` with fake embeddings and keys, on a live uvicorn server."""
    settings = memory_settings(
        data_dir,
        serve={"api_keys": [USER_KEY], "admin_keys": [ADMIN_KEY]},
        retriever={"search_type": "similarity", "score_threshold": 0.3},
    )
    folder = settings.documents_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (
        ("questions.jsonl", EVAL_QUESTIONS),
        ("out_of_scope.jsonl", EVAL_OUT_OF_SCOPE),
    ):
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (folder / name).write_text(lines, encoding="utf-8")
    (folder / ".ragignore").write_text("questions.jsonl\nout_of_scope.jsonl\n", encoding="utf-8")
    with live_service(settings) as live:
        yield Served("real", live.url, None)


@pytest.fixture(scope="module", params=["fake", "real"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    with ExitStack() as stack:
        if request.param == "fake":
            fake = FakeApi(user_key=USER_KEY, admin_key=ADMIN_KEY)
            served = Served("fake", stack.enter_context(serve(fake_app(fake))), fake)
        else:
            served = stack.enter_context(_real_service(tmp_path_factory.mktemp("real")))
        report = _upload(served.url, {k: v.encode() for k, v in SEED.items()})
        assert report["files_ingested"] == len(SEED), report
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_executable()  # fails with how to install it when missing
    expect.set_options(timeout=20_000)  # a shared 2-core machine: generous, never a timing assert
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    # Module scope: set up before the function-scoped hermetic_environment clears RAG_*.
    return Screenshots(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture
def screenshots(screenshot_folder: Screenshots, service: Served) -> Screenshots:
    """Screenshots named after the app that served them: fake-chat-answer.png, real-..."""
    return screenshot_folder.named(service.kind)


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, service: Served) -> Iterator[OpenPage]:
    """``open_page(path, key=..., admin_key=..., **context options)``: a page in a fresh
    context, loaded and wired. The test fails on any uncaught script error or CSP violation."""
    problems: list[str] = []
    stack = ExitStack()

    def open_page(
        path: str = "/", *, key: str | None = USER_KEY, admin_key: str | None = None, **options: Any
    ) -> Page:
        context = browser.new_context(base_url=service.url, **{"locale": "zh-CN", **options})
        stack.callback(context.close)
        # In a try: these also run in a popup's first document (the evaluation report opened
        # with rel=noopener), an about:blank without storage.
        if key is not None:
            context.add_init_script(
                f"try {{ localStorage.setItem('rag.apiKey', {json.dumps(key)}) }} catch {{}}"
            )
        if admin_key is not None:
            context.add_init_script(
                f"try {{ sessionStorage.setItem('rag.adminKey', {json.dumps(admin_key)}) }} "
                "catch {}"
            )
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(path)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        return page

    with stack:
        yield open_page
    assert problems == []


def send(page: Page, question: str) -> None:
    box = page.get_by_test_id("input")
    box.fill(question)
    box.press("Enter")


def ask(page: Page, question: str) -> Locator:
    """Send ``question`` with Enter; the finished answer's message (fails with the error the
    page shows when there is one instead)."""
    send(page, question)
    last = page.locator("[data-testid=messages] > li").last
    try:
        expect(last).to_have_attribute("data-state", "done")
    except AssertionError as e:
        raise AssertionError(
            f"no answer to {question!r}; the page shows: {last.inner_text()}"
        ) from e
    return last


# --- the pages themselves --------------------------------------------------------------------


def test_a_missing_chromium_fails_and_says_ci_run_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs it"):
        chromium_executable()


def test_the_real_app_serves_the_pages_with_a_strict_policy(tmp_path: Path) -> None:
    with live_service(memory_settings(tmp_path)) as live:
        get = lambda path: httpx.get(live.url + path, timeout=30)  # noqa: E731
        for path in ("/", "/admin"):
            page = get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            policy = page.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy
            assert "unsafe" not in policy
            # No inline script, handler or style: everything the policy would block.
            assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
            assert not re.search(r"\s(on[a-z]+|style)=", page.text)
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
            assert {a.rsplit(".", 1)[-1] for a in assets} >= {"js", "css"}
            for asset in assets:
                assert get(asset).status_code == 200, asset
        types = {"chat.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
        for name, expected in types.items():
            answer = get(f"/static/{name}")
            assert answer.headers["content-type"].startswith(expected)
            assert answer.headers["x-content-type-options"] == "nosniff"
        # Modules import each other by relative path: every import resolves.
        for name in ("chat.js", "admin.js"):
            for imported in re.findall(r'from "\./([^"]+)"', get(f"/static/{name}").text):
                assert get(f"/static/{imported}").status_code == 200, imported
        for wrong in ("/static/__init__.py", "/static/..%2Fpages.py", "/static/missing.js"):
            assert get(wrong).status_code == 404, wrong


# --- the chat page ---------------------------------------------------------------------------


def test_an_answer_streams_in_with_a_citation_whose_footnote_shows_the_snippet(
    open_page: OpenPage, screenshots: Screenshots
) -> None:
    page = open_page("/")
    box = page.get_by_test_id("input")
    box.fill("第一行")
    box.press("Shift+Enter")  # a new line, not a send
    expect(box).to_have_value("第一行\n")
    expect(page.get_by_test_id("message-user")).to_have_count(0)

    answer = ask(page, Q_SHIPPING)
    expect(page.get_by_test_id("message-user").last).to_have_text(Q_SHIPPING)
    expect(answer.get_by_test_id("answer-text")).to_contain_text("包邮")
    cite = answer.get_by_test_id("cite").first
    expect(cite).to_be_enabled()
    expect(answer.get_by_test_id("source-link").first).to_contain_text("shipping.md")
    cite.click()
    panel = page.get_by_test_id("source-panel")
    expect(panel).to_be_visible()
    expect(panel.get_by_test_id("source-path")).to_contain_text("shipping.md")
    expect(panel.get_by_test_id("source-title")).not_to_be_empty()
    expect(panel.get_by_test_id("source-snippet")).to_contain_text("99元包邮")
    screenshots.take(page, "chat-footnote-panel")
    page.get_by_test_id("source-close").click()
    expect(panel).to_be_hidden()
    screenshots.take(page, "chat-answer")


# Holding a stream half-way needs the fake API's hook: this one runs on the fake only.
@pytest.mark.parametrize("service", ["fake"], indirect=True)
def test_the_answer_is_shown_while_it_is_still_streaming(
    open_page: OpenPage, service: Served
) -> None:
    assert service.fake is not None
    service.fake.hold = threading.Event()
    try:
        page = open_page("/")
        send(page, Q_SHIPPING)
        answer = page.get_by_test_id("message-assistant").last
        # The fake sends its first 4 characters, then waits until the test lets it go on.
        expect(answer.get_by_test_id("answer-text")).to_have_text("根据《配")
        expect(answer).to_have_attribute("data-state", "streaming")
        expect(page.get_by_test_id("send")).to_be_disabled()
        service.fake.hold.set()
        expect(answer).to_have_attribute("data-state", "done")
        expect(answer.get_by_test_id("cite")).to_have_count(1)
    finally:
        service.fake.hold.set()
        service.fake.hold = None


def test_a_follow_up_sends_the_earlier_turns_as_history(
    open_page: OpenPage, service: Served
) -> None:
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    models = httpx.get(service.url + "/v1/models", headers=headers, timeout=30).json()
    page = open_page("/")
    first = ask(page, Q_SHIPPING).get_by_test_id("answer-text").inner_text()
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        ask(page, "那偏远地区呢？")
    body = sent.value.post_data_json
    assert body["stream"] is True and body["model"] == models["data"][0]["id"]
    roles = [(m["role"], m["content"]) for m in body["messages"]]
    assert roles[0] == ("user", Q_SHIPPING) and roles[-1] == ("user", "那偏远地区呢？")
    assert roles[1][0] == "assistant" and roles[1][1].startswith(first[:8])


def test_a_refusal_is_a_hand_over_card_that_copies_the_question(
    open_page: OpenPage, screenshots: Screenshots
) -> None:
    page = open_page("/", permissions=["clipboard-read", "clipboard-write"])
    answer = ask(page, Q_REFUSED)
    card = answer.get_by_test_id("handover")
    expect(card).to_be_visible()
    expect(card).to_contain_text("转人工客服")
    expect(answer.get_by_test_id("cite")).to_have_count(0)
    expect(answer.get_by_test_id("sources")).to_have_count(0)
    answer.get_by_test_id("copy-question").click()
    expect(answer.get_by_test_id("copy-status")).to_have_text("已复制")
    assert page.evaluate("navigator.clipboard.readText()") == Q_REFUSED
    screenshots.take(page, "chat-handover")


def test_thumbs_down_sends_feedback_and_shows_it_was_recorded(
    open_page: OpenPage, service: Served
) -> None:
    page = open_page("/")
    answer = ask(page, Q_SHIPPING)
    with page.expect_request(lambda r: r.url.endswith("/v1/feedback")) as sent:
        answer.get_by_test_id("thumb-down").click()
    status = answer.get_by_test_id("feedback-status")
    expect(status).to_have_attribute("data-state", "recorded")
    expect(status).to_contain_text("已记录")
    expect(answer.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "true")
    expect(answer.get_by_test_id("thumb-up")).to_be_disabled()
    body = sent.value.post_data_json
    assert body == {"answer_id": answer.get_attribute("data-answer-id"), "rating": "down"}
    assert sent.value.headers["authorization"] == f"Bearer {USER_KEY}"
    if service.fake is not None:
        assert service.fake.feedback[-1] == body


def test_server_and_network_errors_are_shown_in_the_chat(open_page: OpenPage) -> None:
    page = open_page("/")
    route = "**/v1/chat/completions"
    page.route(route, lambda r: r.fulfill(status=500, json={"detail": "the model broke"}))
    send(page, "问题一")
    error = page.get_by_test_id("error").last
    expect(error).to_have_attribute("data-status", "500")
    expect(error).to_contain_text("服务出错")
    expect(error).to_contain_text("the model broke")
    page.unroute(route)

    page.route(route, lambda r: r.abort("connectionrefused"))
    send(page, "问题二")
    error = page.get_by_test_id("error").last
    expect(error).to_have_attribute("data-status", "0")
    expect(error).to_contain_text("无法连接")
    page.unroute(route)

    expect(ask(page, Q_SHIPPING).get_by_test_id("cite")).not_to_have_count(0)


def test_a_401_shows_the_key_field_and_the_saved_key_retries(open_page: OpenPage) -> None:
    page = open_page("/", key=None)
    form = page.get_by_test_id("key-form")
    expect(form).to_be_hidden()
    send(page, Q_SHIPPING)
    error = page.get_by_test_id("error").last
    expect(error).to_have_attribute("data-status", "401")
    expect(error).to_contain_text("API 密钥")
    expect(error).to_contain_text("Bearer")  # the server's own message, whichever JSON shape
    expect(form).to_be_visible()
    page.get_by_test_id("key-input").fill(USER_KEY)
    page.get_by_test_id("key-save").click()
    expect(form).to_be_hidden()
    answer = page.get_by_test_id("message-assistant").last
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.get_by_test_id("answer-text")).to_contain_text("包邮")
    assert page.evaluate("localStorage.getItem('rag.apiKey')") == USER_KEY


def test_the_language_follows_the_browser_and_the_toggle(open_page: OpenPage) -> None:
    page = open_page("/", locale="en-US")
    expect(page.get_by_test_id("send")).to_have_text("Send")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("send")).to_have_text("发送")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.reload()  # the choice is remembered
    expect(page.get_by_test_id("send")).to_have_text("发送")


def test_document_markup_is_shown_as_text_never_run(
    open_page: OpenPage, service: Served, screenshots: Screenshots
) -> None:
    page = open_page("/")
    answer = ask(page, Q_MARKUP)
    expect(answer.get_by_test_id("answer-text")).to_contain_text("图片标签写法")
    if service.fake is not None:
        # The fake quotes the paragraph as it is (the real extractive answer leaves the tag
        # out of its quote); the cited snippet below carries it in both.
        expect(answer.get_by_test_id("answer-text")).to_contain_text(MARKUP)
    answer.get_by_test_id("cite").first.click()
    snippet = page.get_by_test_id("source-snippet")
    expect(snippet).to_contain_text(MARKUP)
    assert page.locator("[data-testid=messages] img, [data-testid=source-panel] img").count() == 0
    assert page.evaluate("window.__xss") is None
    screenshots.take(page, "chat-markup-as-text")


def _no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide in a {widths[1]} px viewport"


def test_at_phone_width_nothing_scrolls_sideways(
    open_page: OpenPage, screenshots: Screenshots
) -> None:
    page = open_page("/", viewport=PHONE, has_touch=True)
    ask(page, Q_SHIPPING)
    ask(page, "https://example.com/" + "x" * 120)  # one long unbreakable word
    ask(page, Q_REFUSED)
    _no_horizontal_overflow(page)
    screenshots.take(page, "chat-phone")
    page.get_by_test_id("cite").first.click()
    box = page.get_by_test_id("source-panel").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    _no_horizontal_overflow(page)
    screenshots.take(page, "chat-phone-panel")

    admin = open_page("/admin", admin_key=ADMIN_KEY, viewport=PHONE)
    expect(admin.get_by_test_id("document-row").first).to_be_visible()
    _no_horizontal_overflow(admin)
    screenshots.take(admin, "admin-phone", full_page=True)


# --- the admin page --------------------------------------------------------------------------


def _fulfil(route: Any, *, status: int, body: dict[str, Any]) -> None:
    route.fulfill(status=status, json=body)


@pytest.mark.parametrize("service", ["real"], indirect=True)  # the fake has no evaluation
def test_the_evaluation_button_shows_the_figures_and_the_report_opens_with_its_charts(
    open_page: OpenPage, service: Served, screenshots: Screenshots
) -> None:
    # Before the upload test: the broken PDF it leaves in the documents folder would fail the
    # evaluation's ingest of that folder (as `rag eval` fails on it).
    assert service.fake is None
    page = open_page("/admin", admin_key=ADMIN_KEY)
    figures = page.get_by_test_id("eval-summary")
    expect(figures).to_be_hidden()
    run, state = page.get_by_test_id("eval-run"), page.get_by_test_id("eval-status")
    # The two refusals the page explains, in the server's error shape.
    for code, message, shown in (
        (404, "no questions.jsonl in the served knowledge base: put one ...", "没有 questions"),
        (409, "an evaluation is already running", "已有一个评估正在运行"),
    ):
        body = {"error": {"message": message, "type": "x", "code": "x", "param": None}}
        page.route("**/v1/eval", functools.partial(_fulfil, status=code, body=body))
        run.click()
        expect(state).to_have_attribute("data-state", "error")
        expect(state).to_contain_text(shown)
        if code == 404:
            expect(state).to_contain_text(message)  # the server says where the file goes
        expect(run).to_be_enabled()
        page.unroute("**/v1/eval")
    run.click()
    expect(state).to_have_attribute("data-state", "ok")
    expect(figures).to_be_visible()
    expect(figures.get_by_test_id("eval-n_queries")).to_have_text(str(len(EVAL_QUESTIONS)))
    for name in ("hit1", "hit5", "answer_contains", "refused_in_scope", "refused_out_of_scope"):
        expect(figures.get_by_test_id(f"eval-{name}")).to_have_text(re.compile(r"^\d+\.\d%$"))
    link = figures.get_by_test_id("eval-report-link")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener")
    screenshots.take(page, "admin-evaluation", full_page=True)

    problems: list[str] = []
    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    report.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    report.wait_for_load_state()
    assert re.search(r"/v1/eval/reports/[A-Za-z0-9_-]{43}$", report.url), report.url
    assert report.evaluate("window.opener") is None
    sizes = report.eval_on_selector_all(
        "svg.chart",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height] })",
    )
    assert sizes and all(w > 0 and h > 0 for w, h in sizes), sizes
    assert report.locator("svg.histogram rect").count() > 0
    # The inline slider script ran: the report's policy allows its own inline script.
    expect(report.locator("#slider")).to_be_visible()
    report.set_viewport_size({"width": 1300, "height": 900})
    shot = screenshots.take(report, "eval-report-from-admin", full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == [], "\n".join(problems)


def test_an_upload_shows_its_report_and_the_file_is_then_cited_in_the_chat(
    open_page: OpenPage, tmp_path: Path, screenshots: Screenshots
) -> None:
    warranty = tmp_path / "warranty.md"
    warranty.write_text("# 保修说明\n\n电器类商品提供一年免费保修，保修期内凭订单号联系客服。\n")
    contact = tmp_path / "contact.txt"
    contact.write_text("客服电话：400-800-1234，工作时间每天9点到21点。\n")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a PDF")

    page = open_page("/admin")  # no key yet: the lists say one is needed
    expect(page.get_by_test_id("documents-status")).to_have_attribute("data-state", "error")
    expect(page.get_by_test_id("documents-status")).to_contain_text("401")
    page.get_by_test_id("admin-key").fill(ADMIN_KEY)
    page.get_by_test_id("admin-key-save").click()
    expect(page.get_by_test_id("documents-status")).to_have_attribute("data-state", "ok")
    assert page.evaluate("sessionStorage.getItem('rag.adminKey')") == ADMIN_KEY

    page.get_by_test_id("upload-files").set_input_files([warranty, contact])
    page.get_by_test_id("upload-submit").click()
    report = page.get_by_test_id("ingest-report")
    expect(report).to_be_visible()
    expect(report.get_by_test_id("report-files_ingested")).to_have_text("2")
    expect(report.get_by_test_id("report-chunks_added")).to_have_text(re.compile(r"^[1-9]\d*$"))
    row = page.get_by_test_id("document-row").filter(has_text="warranty.md")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("document-chunks")).to_have_text(re.compile(r"^[1-9]\d*$"))
    screenshots.take(page, "admin-report", full_page=True)

    page.get_by_test_id("upload-files").set_input_files([broken])
    page.get_by_test_id("upload-submit").click()
    expect(report.get_by_test_id("report-files_failed")).to_contain_text("broken.pdf")
    expect(report.get_by_test_id("report-files_ingested")).to_have_text("0")

    chat = open_page("/")
    answer = ask(chat, "电器类商品的保修期是多久？")
    expect(answer.get_by_test_id("source-link").first).to_contain_text("warranty.md")
    answer.get_by_test_id("cite").first.click()
    expect(chat.get_by_test_id("source-snippet")).to_contain_text("一年免费保修")


def test_a_document_is_deleted_only_after_confirming(open_page: OpenPage, service: Served) -> None:
    _upload(service.url, {"delete-me.txt": "这份文件马上会被删除。\n".encode()})
    page = open_page("/admin", admin_key=ADMIN_KEY)
    row = page.get_by_test_id("document-row").filter(has_text="delete-me.txt")
    expect(row).to_have_count(1)
    asked: list[str] = []

    def answer_with(accept: bool) -> Callable[[Any], None]:
        def handle(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    page.once("dialog", answer_with(False))
    row.get_by_test_id("delete-document").click()
    page.get_by_test_id("refresh").click()
    expect(row).to_have_count(1)
    page.once("dialog", answer_with(True))
    row.get_by_test_id("delete-document").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("documents-status")).to_contain_text("delete-me.txt")
    assert len(asked) == 2 and all("delete-me.txt" in message for message in asked)
    expect(page.get_by_test_id("document-row").filter(has_text="shipping.md")).to_have_count(1)


def test_the_knowledge_gaps_list_shows_a_refused_question(
    open_page: OpenPage, service: Served, screenshots: Screenshots
) -> None:
    question = "可以用比特币付款吗？"
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    for _ in range(2):
        done = httpx.post(
            service.url + "/v1/ask", json={"question": question}, headers=headers, timeout=60
        )
        assert done.status_code == 200 and done.json()["refused"] is True, done.text
    page = open_page("/admin", admin_key=ADMIN_KEY)
    row = page.get_by_test_id("gap-row").filter(has_text=question)
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("gap-example")).to_have_text(question)
    expect(row.get_by_test_id("gap-count")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(row.get_by_test_id("gap-kinds")).not_to_be_empty()
    for cell in ("gap-kinds", "gap-source"):  # server objects rendered as text, not "[object"
        expect(row.get_by_test_id(cell)).not_to_contain_text("[object")
    screenshots.take(page, "admin-gaps", full_page=True)
