// The chat page: streams answers from /v1/chat/completions, renders citations as footnote
// markers, shows refusals as a hand-over card, sends thumbs up/down to /v1/feedback.
//
// Answer and document text only ever reach the page through textContent / text nodes, never
// innerHTML: a document containing markup is shown as the characters it contains.

import { ApiError, errorKey, request, streamChat } from "./api.js";
import { apply, t, toggle } from "./i18n.js";

const KEY_STORAGE = "rag.apiKey";
const HISTORY_MESSAGES = 12; // earlier turns sent with a question (user + assistant messages)
const CITATION = /\[(\d{1,2})\]/g;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const messages = $("messages");
const conversation = $("conversation");
const input = $("input");
const send = $("send");
const keyForm = $("key-form");
const keyInput = $("key-input");
const panel = $("source-panel");

const turns = []; // the conversation so far: {role, content}, answered turns only
let busy = false;
let waitingForKey = null; // the question that got 401, asked again once a key is saved

/** Create an element with attributes; children are nodes or strings (text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** An element showing the UI string `key` (re-labelled when the language changes). */
function label(tag, key, attrs = {}) {
  return el(tag, { ...attrs, "data-i18n": key }, t(key));
}

/** Keep the newest text in view, unless the reader has scrolled up to read something. */
function scrollToEnd(force = false) {
  const fromEnd = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight;
  if (force || fromEnd < 120) conversation.scrollTop = conversation.scrollHeight;
}

function addItem(node) {
  messages.querySelector(".hello")?.remove();
  messages.append(node);
  scrollToEnd(true);
  return node;
}

// --- rendering an answer -----------------------------------------------------------------

/** Render `text` into `target`: plain text, with each [n] as a footnote button. Until the
 * sources arrive the buttons are disabled; afterwards a number with no source stays text. */
function renderAnswer(target, text, sources, final) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    nodes.push(text.slice(last, match.index));
    const number = Number(match[1]);
    const source = sources.find((s) => Number(s.number) === number);
    if (source || !final) {
      const button = el(
        "button",
        { type: "button", class: "cite", "data-testid": "cite", "data-number": String(number) },
        String(number),
      );
      button.setAttribute("aria-label", `${t("cite_label")} ${number}`);
      button.disabled = !source;
      if (source) button.addEventListener("click", () => openSource(source));
      nodes.push(button);
    } else {
      nodes.push(match[0]);
    }
    last = match.index + match[0].length;
  }
  nodes.push(text.slice(last));
  target.replaceChildren(...nodes);
}

function openSource(source) {
  $("source-title").textContent = source.title || source.source || "";
  $("source-path").textContent = source.source || "";
  const score = Number(source.score);
  $("source-score").textContent = Number.isFinite(score) ? score.toFixed(2) : "–";
  $("source-snippet").textContent = source.content || "";
  if (!panel.open) panel.showModal();
}

function sourceList(sources) {
  const list = el("ol", { class: "sources", "data-testid": "sources" });
  list.append(label("li", "sources", { class: "sources-head" }));
  for (const source of sources) {
    const name = source.title ? `${source.title} · ${source.source}` : source.source;
    const button = el(
      "button",
      { type: "button", class: "source-link", "data-testid": "source-link" },
      `[${source.number}] ${name}`,
    );
    button.addEventListener("click", () => openSource(source));
    list.append(el("li", {}, button));
  }
  return list;
}

function thumbIcon() {
  // A small thumb drawn for this page (a cuff and a hand); "down" is the same, rotated.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute(
    "d",
    "M2 10h4v11H2zM8 10l4-7c1.3-.4 2.6.6 2.5 2l-1 4H20c1.3 0 2.2 1.2 1.8 2.5l-2.3 7.7" +
      "c-.3 1-1.1 1.8-2.2 1.8H8z",
  );
  svg.append(path);
  return svg;
}

function feedbackBar(answerId) {
  const bar = el("div", { class: "feedback" });
  const status = el("span", { class: "muted", "data-testid": "feedback-status", role: "status" });
  const buttons = ["up", "down"].map((rating) => {
    const button = el("button", {
      type: "button",
      class: `thumb thumb-${rating}`,
      "data-testid": `thumb-${rating}`,
      "data-i18n-title": `thumb_${rating}`,
      "data-i18n-label": `thumb_${rating}`,
      "aria-pressed": "false",
      title: t(`thumb_${rating}`),
      "aria-label": t(`thumb_${rating}`),
    });
    button.append(thumbIcon());
    button.addEventListener("click", () => sendFeedback(answerId, rating, button, buttons, status));
    return button;
  });
  bar.append(...buttons, status);
  return bar;
}

async function sendFeedback(answerId, rating, chosen, buttons, status) {
  for (const b of buttons) b.disabled = true;
  status.replaceChildren();
  try {
    await request("/v1/feedback", {
      method: "POST",
      body: { answer_id: answerId, rating },
      key: localStorage.getItem(KEY_STORAGE),
    });
    chosen.setAttribute("aria-pressed", "true");
    status.dataset.state = "recorded";
    status.append(label("span", "feedback_recorded"));
  } catch (e) {
    for (const b of buttons) b.disabled = false;
    status.dataset.state = "failed";
    status.append(label("span", "feedback_failed"), ` (${e.message})`);
    if (e instanceof ApiError && e.status === 401) showKeyForm();
  }
}

/** Turn a finished answer into the hand-over card: the refusal plus a copy button. */
function handOver(item, bubble, question) {
  item.classList.add("handover");
  bubble.dataset.testid = "handover";
  bubble.prepend(label("p", "handover_title", { class: "handover-title" }));
  const status = el("span", { class: "muted", "data-testid": "copy-status", role: "status" });
  const copy = label("button", "copy_question", { type: "button", "data-testid": "copy-question" });
  copy.addEventListener("click", async () => {
    const ok = await copyText(question);
    status.replaceChildren(label("span", ok ? "copied" : "copy_failed"));
  });
  bubble.append(label("p", "handover_hint", { class: "muted" }), el("div", {}, copy, " ", status));
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (plain http on another host): the old select-and-copy way.
    const area = el("textarea", { class: "offscreen", readonly: "" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

function showError(error) {
  const detail = error.status > 0 ? `${error.message} (HTTP ${error.status})` : "";
  const attrs = { class: "msg error", "data-testid": "error", "data-state": "error" };
  const item = addItem(el("li", attrs, label("span", errorKey(error)), detail));
  item.dataset.status = String(error.status);
  if (error.status === 401) showKeyForm();
}

// --- asking ------------------------------------------------------------------------------

async function ask(question) {
  busy = true;
  send.disabled = true;
  const text = el("p", { class: "text", "data-testid": "answer-text" });
  const bubble = el("div", { class: "bubble" }, text);
  const item = addItem(
    el("li", { class: "msg assistant", "data-testid": "message-assistant" }, bubble),
  );
  item.dataset.state = "streaming";
  text.append(label("span", "thinking", { class: "muted" }));
  let answer = "";
  try {
    const history = turns.slice(-HISTORY_MESSAGES);
    const result = await streamChat([...history, { role: "user", content: question }], {
      key: localStorage.getItem(KEY_STORAGE),
      onDelta(piece) {
        answer += piece;
        renderAnswer(text, answer, [], false);
        scrollToEnd();
      },
    });
    const sources = Array.isArray(result.sources) ? result.sources : [];
    renderAnswer(text, answer, sources, true);
    if (result.refused) {
      handOver(item, bubble, question);
    } else {
      if (sources.length) item.append(sourceList(sources));
      turns.push({ role: "user", content: question }, { role: "assistant", content: answer });
    }
    if (result.answer_id) {
      item.dataset.answerId = result.answer_id;
      item.append(feedbackBar(result.answer_id));
    }
    item.dataset.state = "done";
    waitingForKey = null;
  } catch (e) {
    const error = e instanceof ApiError ? e : new ApiError(-1, String(e));
    if (answer) item.dataset.state = "cut";
    else item.remove();
    if (error.status === 401) waitingForKey = question;
    showError(error);
  } finally {
    busy = false;
    send.disabled = false;
    scrollToEnd();
  }
}

function submit() {
  const question = input.value.trim();
  if (!question || busy) return;
  input.value = "";
  addItem(
    el(
      "li",
      { class: "msg user", "data-testid": "message-user" },
      el("div", { class: "bubble" }, el("p", { class: "text" }, question)),
    ),
  );
  ask(question);
}

// --- the key -----------------------------------------------------------------------------

function showKeyForm() {
  keyForm.hidden = false;
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  keyInput.focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  keyForm.hidden = true;
  $("key-toggle").hidden = !key;
  if (waitingForKey && !busy) ask(waitingForKey);
});

$("key-clear").addEventListener("click", () => {
  localStorage.removeItem(KEY_STORAGE);
  keyInput.value = "";
  $("key-toggle").hidden = true;
});

$("key-toggle").addEventListener("click", () => {
  if (keyForm.hidden) showKeyForm();
  else keyForm.hidden = true;
});

// --- wiring ------------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

input.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; Enter that confirms an IME composition (pinyin)
  // must not send the half-typed question.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    submit();
  }
});

$("lang-toggle").addEventListener("click", () => {
  toggle();
  document.title = t("chat_title");
});
$("source-close").addEventListener("click", () => panel.close());
panel.addEventListener("click", (event) => {
  if (event.target === panel) panel.close(); // a click on the backdrop
});

$("key-toggle").hidden = !localStorage.getItem(KEY_STORAGE);
apply();
document.title = t("chat_title");
document.body.dataset.ready = "true"; // for tests: the script has wired the page
