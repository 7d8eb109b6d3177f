// Every UI string of both pages, in one table. Elements name their string with
// data-i18n (text), data-i18n-placeholder, data-i18n-title or data-i18n-label (aria-label);
// apply() fills them, so switching the language re-labels what is already on the page.

const STRINGS = {
  zh: {
    chat_title: "客服助手",
    admin_title: "知识库管理",
    lang_toggle: "English",
    input_placeholder: "请输入您的问题，Enter 发送，Shift+Enter 换行",
    send: "发送",
    you: "您",
    assistant: "助手",
    thinking: "正在思考…",
    sources: "参考资料",
    source_panel_title: "引用来源",
    source_score: "相关度",
    close: "关闭",
    cite_label: "查看来源",
    handover_title: "转人工客服",
    handover_hint: "复制您的问题，发给人工客服即可继续处理。",
    copy_question: "复制问题",
    copied: "已复制",
    copy_failed: "复制失败，请手动选择问题文字",
    thumb_up: "有帮助",
    thumb_down: "没帮助",
    feedback_recorded: "已记录您的反馈，谢谢！",
    feedback_failed: "反馈未能提交",
    key_title: "API 密钥",
    key_hint: "此服务需要 API 密钥，保存后会自动重试。",
    key_placeholder: "粘贴 API 密钥",
    key_save: "保存",
    key_clear: "清除",
    key_button: "密钥",
    error_auth: "需要有效的 API 密钥：",
    error_forbidden: "没有权限：",
    error_server: "服务出错了，请稍后再试：",
    error_client: "请求未被接受：",
    error_network: "无法连接到服务，请检查网络后重试。",
    error_interrupted: "回答中断了，请重试。",
    empty_hint: "您好！请问有什么可以帮您？",
    admin_key_label: "管理员密钥",
    admin_key_placeholder: "粘贴管理员密钥",
    admin_key_save: "使用此密钥",
    admin_key_saved: "密钥仅保存在本标签页中。",
    upload_title: "上传文档",
    upload_submit: "上传并索引",
    uploading: "正在上传和索引…",
    report_title: "索引报告",
    r_files_seen: "文件数",
    r_files_ingested: "已索引",
    r_chunks_added: "新增片段",
    r_chunks_updated: "更新片段",
    r_chunks_unchanged: "未变片段",
    r_chunks_deleted: "删除片段",
    r_seconds: "耗时（秒）",
    r_failed: "失败的文件",
    r_skipped: "跳过的文件",
    r_notes: "说明",
    docs_title: "文档",
    docs_source: "来源",
    docs_chunks: "片段数",
    docs_empty: "知识库中还没有文档。",
    delete: "删除",
    confirm_delete: "确定删除此文档及其全部片段？",
    deleted: "已删除：",
    refresh: "刷新",
    gaps_title: "知识缺口",
    gaps_count: "次数",
    gaps_example: "示例问题",
    gaps_kinds: "类型",
    gaps_source: "最相关来源",
    gaps_last_seen: "最近一次",
    gaps_empty: "暂无记录的知识缺口。",
    no_files: "请先选择文件。",
    kind_refused: "未能回答",
    kind_low_confidence: "低置信度",
    kind_thumbs_down: "差评",
    kind_thumbs_up: "好评",
    eval_title: "评估",
    eval_hint:
      "用知识库自带的 questions.jsonl 评估检索和回答，并生成报告。" +
      "语料较大且向量未缓存时可能需要几分钟。",
    eval_run: "运行评估",
    eval_running: "正在评估…",
    eval_done: "评估完成。",
    eval_open: "打开报告",
    eval_no_questions: "知识库中没有 questions.jsonl：",
    eval_busy: "已有一个评估正在运行，请等它完成后再试。",
    e_n_queries: "问题数",
    e_hit1: "hit@1",
    e_hit5: "hit@5",
    e_answer_contains: "回答含标准答案",
    e_refused_in_scope: "范围内被拒答",
    e_refused_out_of_scope: "范围外被拒答",
    e_score_threshold: "拒答阈值",
    e_seconds: "耗时（秒）",
  },
  en: {
    chat_title: "Customer service",
    admin_title: "Knowledge base admin",
    lang_toggle: "中文",
    input_placeholder: "Type your question; Enter sends, Shift+Enter adds a line",
    send: "Send",
    you: "You",
    assistant: "Assistant",
    thinking: "Thinking…",
    sources: "Sources",
    source_panel_title: "Cited source",
    source_score: "Relevance",
    close: "Close",
    cite_label: "Show source",
    handover_title: "Talk to a human agent",
    handover_hint: "Copy your question and send it to a human agent to continue.",
    copy_question: "Copy question",
    copied: "Copied",
    copy_failed: "Could not copy; please select the question text",
    thumb_up: "Helpful",
    thumb_down: "Not helpful",
    feedback_recorded: "Feedback recorded, thank you!",
    feedback_failed: "Feedback was not sent",
    key_title: "API key",
    key_hint: "This service needs an API key; the question is retried once you save it.",
    key_placeholder: "Paste the API key",
    key_save: "Save",
    key_clear: "Clear",
    key_button: "Key",
    error_auth: "A valid API key is needed: ",
    error_forbidden: "Not allowed: ",
    error_server: "The service failed, please try again later: ",
    error_client: "The request was not accepted: ",
    error_network: "Cannot reach the service; check the connection and try again.",
    error_interrupted: "The answer was cut off; please try again.",
    empty_hint: "Hello! How can I help you?",
    admin_key_label: "Admin key",
    admin_key_placeholder: "Paste the admin key",
    admin_key_save: "Use this key",
    admin_key_saved: "The key is kept in this tab only.",
    upload_title: "Upload documents",
    upload_submit: "Upload and index",
    uploading: "Uploading and indexing…",
    report_title: "Ingest report",
    r_files_seen: "Files seen",
    r_files_ingested: "Ingested",
    r_chunks_added: "Chunks added",
    r_chunks_updated: "Chunks updated",
    r_chunks_unchanged: "Chunks unchanged",
    r_chunks_deleted: "Chunks deleted",
    r_seconds: "Seconds",
    r_failed: "Failed files",
    r_skipped: "Skipped files",
    r_notes: "Notes",
    docs_title: "Documents",
    docs_source: "Source",
    docs_chunks: "Chunks",
    docs_empty: "No documents in the knowledge base yet.",
    delete: "Delete",
    confirm_delete: "Delete this document and all its chunks?",
    deleted: "Deleted: ",
    refresh: "Refresh",
    gaps_title: "Knowledge gaps",
    gaps_count: "Count",
    gaps_example: "Example question",
    gaps_kinds: "Kinds",
    gaps_source: "Top source",
    gaps_last_seen: "Last seen",
    gaps_empty: "No knowledge gaps recorded.",
    no_files: "Choose files first.",
    kind_refused: "refused",
    kind_low_confidence: "low confidence",
    kind_thumbs_down: "thumbs down",
    kind_thumbs_up: "thumbs up",
    eval_title: "Evaluation",
    eval_hint:
      "Measure retrieval and answers on the knowledge base's own questions.jsonl and make a " +
      "report. A large corpus whose vectors are not cached yet can take minutes.",
    eval_run: "Run evaluation",
    eval_running: "Evaluating…",
    eval_done: "Evaluation done.",
    eval_open: "Open report",
    eval_no_questions: "The knowledge base has no questions.jsonl: ",
    eval_busy: "An evaluation is already running; try again when it is done.",
    e_n_queries: "Questions",
    e_hit1: "hit@1",
    e_hit5: "hit@5",
    e_answer_contains: "Answer has the gold text",
    e_refused_in_scope: "In scope, refused",
    e_refused_out_of_scope: "Out of scope, refused",
    e_score_threshold: "Refusal threshold",
    e_seconds: "Seconds",
  },
};

const STORAGE_KEY = "rag.lang";
let current = pick();

function pick() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved in STRINGS) return saved;
  return (navigator.language || "zh").toLowerCase().startsWith("zh") ? "zh" : "en";
}

/** The string `key` in the current language (the key itself if it is missing). */
export function t(key) {
  return STRINGS[current][key] ?? key;
}

/** Whether the table has the string `key` (for names that come from the server). */
export function has(key) {
  return key in STRINGS[current];
}

/** Fill every labelled element under `root` with the current language's strings. */
export function apply(root = document) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
}

/** Switch to the other language, remember the choice, re-label the page. */
export function toggle() {
  current = current === "zh" ? "en" : "zh";
  localStorage.setItem(STORAGE_KEY, current);
  apply();
}
