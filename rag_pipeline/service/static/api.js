// Calls to the service's HTTP API, shared by the chat and admin pages.
// Every failure becomes an ApiError with the HTTP status (0: no answer at all, -1: a stream
// cut short) and the server's message, so the pages can show it instead of failing silently.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The UI string (i18n.js) that introduces an ApiError on the page. */
export function errorKey(error) {
  if (error.status === 401) return "error_auth";
  if (error.status === 403) return "error_forbidden";
  if (error.status >= 500) return "error_server";
  if (error.status === 0) return "error_network";
  if (error.status === -1) return "error_interrupted"; // the stream stopped before [DONE]
  return "error_client";
}

/** The message of an error body: FastAPI's {"detail": ...} or OpenAI's {"error": {...}}. */
export function errorMessage(body, fallback) {
  if (body && typeof body === "object") {
    if (body.error && typeof body.error === "object" && body.error.message) {
      return String(body.error.message);
    }
    if (typeof body.error === "string") return body.error;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      // Validation errors: a list of {loc, msg}.
      return body.detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
    }
  }
  return fallback;
}

function headers(key, extra = {}) {
  const h = { ...extra };
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's HTML page, an empty body): the status line says enough.
  }
  return new ApiError(response.status, errorMessage(body, `HTTP ${response.status}`));
}

async function send(path, init) {
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, String((e && e.message) || e));
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** A JSON request; `body` is sent as JSON, or as is when it is FormData. */
export async function request(path, { method = "GET", body, key } = {}) {
  const init = { method, headers: headers(key) };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await send(path, init);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

let servedModel = null; // the model id of /v1/models, asked once per page

/** The id the service wants in "model" (its collection's name); "rag" when it lists none. */
async function modelId(key) {
  if (servedModel === null) {
    try {
      const list = await request("/v1/models", { key });
      servedModel = String(list?.data?.[0]?.id ?? "rag");
    } catch (e) {
      if (e.status !== 404) throw e; // 401 and the like: the caller shows them
      servedModel = "rag";
    }
  }
  return servedModel;
}

/**
 * POST /v1/chat/completions with "stream": true. Calls onDelta(text) for every content
 * piece as it arrives and returns the extra fields of the last chunk
 * ({sources, refused, answer_id}). A server that answers with plain JSON instead of
 * server-sent events is handled too.
 */
export async function streamChat(messages, { key, onDelta }) {
  const model = await modelId(key);
  const response = await send("/v1/chat/completions", {
    method: "POST",
    headers: headers(key, { "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ model, messages, stream: true }),
  });
  const extra = { sources: [], refused: false, answer_id: null };
  const keep = (obj) => {
    for (const name of Object.keys(extra)) if (obj[name] !== undefined) extra[name] = obj[name];
  };
  if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
    const body = await response.json();
    onDelta(body?.choices?.[0]?.message?.content ?? "");
    keep(body);
    return extra;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  // SSE: lines of "data: <json>", events split by blank lines; "[DONE]" ends the stream.
  // A network chunk may end in the middle of a line, so only whole lines are parsed.
  while (!done) {
    let read;
    try {
      read = await reader.read();
    } catch (e) {
      throw new ApiError(0, String((e && e.message) || e));
    }
    if (read.done) break;
    buffer += decoder.decode(read.value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") {
        done = true;
        break;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, errorMessage(chunk, "stream error"));
      const piece = chunk?.choices?.[0]?.delta?.content;
      if (piece) onDelta(piece);
      keep(chunk);
    }
  }
  if (!done) throw new ApiError(-1, "stream ended before [DONE]");
  return extra;
}
