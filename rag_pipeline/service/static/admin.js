// The admin page: the admin key (kept in sessionStorage: this tab only), uploads with their
// ingest report, the document list with delete, the knowledge-gap log, and the evaluation.
// Server text is shown with textContent only.

import { errorKey, request } from "./api.js";
import { apply, has, t, toggle } from "./i18n.js";

const KEY_STORAGE = "rag.adminKey";
const REPORT_COUNTS = [
  "files_seen",
  "files_ingested",
  "chunks_added",
  "chunks_updated",
  "chunks_unchanged",
  "chunks_deleted",
  "seconds",
];

// [figure of the summary, its label, how it is shown]
const EVAL_FIGURES = [
  ["n_queries", "e_n_queries", "count"],
  ["hit@1", "e_hit1", "share"],
  ["hit@5", "e_hit5", "share"],
  ["answer_contains", "e_answer_contains", "share"],
  ["refused_in_scope", "e_refused_in_scope", "share"],
  ["refused_out_of_scope", "e_refused_out_of_scope", "share"],
  ["score_threshold", "e_score_threshold", "number"],
  ["seconds", "e_seconds", "number"],
];
const REPORT_PATH = "/v1/eval/reports/";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const key = () => sessionStorage.getItem(KEY_STORAGE);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function label(tag, name, attrs = {}) {
  return el(tag, { ...attrs, "data-i18n": name }, t(name));
}

/** Show a status line: a UI string, then the detail (a server message, a name). */
function status(id, state, name, detail = "") {
  const line = $(id);
  line.dataset.state = state;
  line.replaceChildren(...(name ? [label("span", name)] : []), detail);
}

function showFailure(id, error) {
  const detail = error.status > 0 ? `${error.message} (HTTP ${error.status})` : "";
  status(id, "error", errorKey(error), detail);
}

// --- documents ---------------------------------------------------------------------------

/** The rows of GET /v1/documents, whatever its exact shape: a list (or {documents|sources:
 * list}) of names or of objects with source/path and chunks/count. */
function documentRows(body) {
  let list = Array.isArray(body) ? body : (body?.documents ?? body?.sources ?? body?.items ?? []);
  if (list && !Array.isArray(list) && typeof list === "object") {
    list = Object.entries(list).map(([source, chunks]) => ({ source, chunks }));
  }
  return (Array.isArray(list) ? list : []).map((item) => {
    if (typeof item !== "object" || item === null) return { source: String(item), chunks: null };
    let chunks = item.chunks ?? item.count ?? item.chunk_count ?? item.n_chunks ?? null;
    if (Array.isArray(chunks)) chunks = chunks.length;
    return { source: String(item.source ?? item.path ?? item.name ?? ""), chunks };
  });
}

async function loadDocuments() {
  let body;
  try {
    body = await request("/v1/documents", { key: key() });
  } catch (e) {
    showFailure("documents-status", e);
    return;
  }
  status("documents-status", "ok", "", "");
  const rows = documentRows(body).map(({ source, chunks }) => {
    const remove = label("button", "delete", {
      type: "button",
      class: "danger",
      "data-testid": "delete-document",
    });
    remove.addEventListener("click", () => deleteDocument(source));
    return el(
      "tr",
      { "data-testid": "document-row", "data-source": source },
      el("td", { class: "text", "data-testid": "document-source" }, source),
      el("td", { class: "number", "data-testid": "document-chunks" }, chunks ?? "–"),
      el("td", {}, remove),
    );
  });
  $("documents").tBodies[0].replaceChildren(...rows);
  $("documents-empty").hidden = rows.length > 0;
}

async function deleteDocument(source) {
  if (!window.confirm(`${t("confirm_delete")}\n${source}`)) return;
  try {
    // The source is a path ("faq/returns.md"): one encoded segment of the URL.
    await request(`/v1/documents/${encodeURIComponent(source)}`, { method: "DELETE", key: key() });
  } catch (e) {
    showFailure("documents-status", e);
    return;
  }
  await loadDocuments();
  status("documents-status", "ok", "deleted", source);
}

// --- upload ------------------------------------------------------------------------------

function renderReport(report) {
  const box = $("ingest-report");
  const counts = el("dl", { "data-testid": "report-counts" });
  for (const name of REPORT_COUNTS) {
    if (report[name] === undefined) continue;
    const value = name === "seconds" ? Number(report[name]).toFixed(2) : String(report[name]);
    counts.append(
      el("div", {}, label("dt", `r_${name}`), el("dd", { "data-testid": `report-${name}` }, value)),
    );
  }
  const parts = [label("h3", "report_title"), counts];
  const lists = [
    ["files_failed", "r_failed", "failures"],
    ["files_skipped", "r_skipped", "skipped"],
  ];
  for (const [field, title, css] of lists) {
    const entries = Array.isArray(report[field]) ? report[field] : [];
    if (!entries.length) continue;
    const list = el("ul", { class: css, "data-testid": `report-${field}` });
    for (const entry of entries) {
      const text = typeof entry === "object" && entry !== null
        ? `${entry.path ?? entry.source ?? ""}: ${entry.reason ?? ""}`
        : String(entry);
      list.append(el("li", {}, text));
    }
    parts.push(label("h4", title), list);
  }
  const notes = Array.isArray(report.notes) ? report.notes : report.notes ? [report.notes] : [];
  if (notes.length) {
    parts.push(label("h4", "r_notes"), el("ul", {}, ...notes.map((n) => el("li", {}, String(n)))));
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

async function upload(event) {
  event.preventDefault();
  const chosen = $("upload-files").files;
  if (!chosen.length) {
    status("upload-status", "error", "no_files");
    return;
  }
  const form = new FormData();
  for (const file of chosen) form.append("files", file, file.name);
  $("upload-submit").disabled = true;
  status("upload-status", "busy", "uploading");
  try {
    const report = await request("/v1/documents", { method: "POST", body: form, key: key() });
    status("upload-status", "ok", "", "");
    renderReport(report || {});
    $("upload-files").value = "";
    await Promise.all([loadDocuments(), loadGaps()]);
  } catch (e) {
    showFailure("upload-status", e);
  } finally {
    $("upload-submit").disabled = false;
  }
}

// --- knowledge gaps ----------------------------------------------------------------------

function when(value) {
  if (value == null) return "–";
  // Seconds (or milliseconds) since the epoch, or an ISO 8601 string.
  const date = new Date(typeof value === "number" && value < 1e12 ? value * 1000 : value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Gap kinds as "refused 3, thumbs_down 1": from a {kind: count} object or a list of kinds. */
function kindsText(kinds) {
  const name = (kind) => (has(`kind_${kind}`) ? t(`kind_${kind}`) : kind);
  if (Array.isArray(kinds)) return kinds.map(name).join(", ");
  if (kinds && typeof kinds === "object") {
    return Object.entries(kinds).map(([kind, n]) => `${name(kind)} ${n}`).join(", ");
  }
  return kinds == null ? "" : String(kinds);
}

function topSource(group) {
  const list = group.top_sources ?? group.sources;
  const first = Array.isArray(list) ? list[0] : null;
  if (first == null || first === "") return "–";
  return typeof first === "object" ? String(first.source ?? first.title ?? "–") : String(first);
}

async function loadGaps() {
  let body;
  try {
    body = await request("/v1/gaps", { key: key() });
  } catch (e) {
    showFailure("gaps-status", e);
    return;
  }
  status("gaps-status", "ok", "", "");
  const groups = Array.isArray(body?.groups) ? body.groups : [];
  const rows = groups.map((g) =>
    el(
      "tr",
      { "data-testid": "gap-row" },
      el("td", { class: "number", "data-testid": "gap-count" }, String(g.count ?? "–")),
      el("td", { class: "text", "data-testid": "gap-example" }, String(g.example ?? "")),
      el("td", { "data-testid": "gap-kinds" }, kindsText(g.kinds)),
      el("td", { class: "text", "data-testid": "gap-source" }, topSource(g)),
      el("td", {}, when(g.last_seen)),
    ),
  );
  $("gaps").tBodies[0].replaceChildren(...rows);
  $("gaps-empty").hidden = rows.length > 0;
}

// --- evaluation --------------------------------------------------------------------------

function shown(value, kind) {
  if (typeof value !== "number") return "–"; // a figure this run has not (no threshold, say)
  if (kind === "share") return `${(value * 100).toFixed(1)}%`;
  return kind === "count" ? String(value) : String(Number(value.toFixed(2)));
}

function renderEvaluation(body) {
  const figures = body.summary ?? {};
  const counts = el("dl", { "data-testid": "eval-figures" });
  for (const [name, title, kind] of EVAL_FIGURES) {
    const value = shown(figures[name], kind);
    const cell = el("dd", { "data-testid": `eval-${name.replace("@", "")}` }, value);
    counts.append(el("div", {}, label("dt", title), cell));
  }
  const parts = [counts];
  const url = String(body.report_url ?? "");
  // Only a report link of this service, never a URL of another kind from the body.
  if (url.startsWith(REPORT_PATH)) {
    parts.push(
      el("p", {}, label("a", "eval_open", {
        href: url,
        target: "_blank",
        rel: "noopener",
        "data-testid": "eval-report-link",
      })),
    );
  }
  $("eval-summary").replaceChildren(...parts);
  $("eval-summary").hidden = false;
}

async function runEvaluation() {
  $("eval-run").disabled = true;
  $("eval-summary").hidden = true;
  status("eval-status", "busy", "eval_running");
  try {
    const body = await request("/v1/eval", { method: "POST", key: key() });
    status("eval-status", "ok", "eval_done");
    renderEvaluation(body || {});
  } catch (e) {
    // The server's 404 says where the questions.jsonl goes: show it in full.
    if (e.status === 404) status("eval-status", "error", "eval_no_questions", e.message);
    else if (e.status === 409) status("eval-status", "error", "eval_busy");
    else showFailure("eval-status", e);
  } finally {
    $("eval-run").disabled = false;
  }
}

// --- wiring ------------------------------------------------------------------------------

function loadAll() {
  return Promise.all([loadDocuments(), loadGaps()]);
}

$("admin-key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("admin-key").value.trim();
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  else sessionStorage.removeItem(KEY_STORAGE);
  status("admin-status", "ok", "", "");
  loadAll();
});
$("upload-form").addEventListener("submit", upload);
$("refresh").addEventListener("click", loadAll);
$("eval-run").addEventListener("click", runEvaluation);
$("lang-toggle").addEventListener("click", () => {
  toggle();
  document.title = t("admin_title");
});

$("admin-key").value = key() || "";
apply();
document.title = t("admin_title");
// A service without keys answers right away; one with keys shows "key needed" until one is set.
loadAll().then(() => {
  document.body.dataset.ready = "true";
});
