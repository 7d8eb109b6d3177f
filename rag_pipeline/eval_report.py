"""``rag eval --report PATH.html``: the evaluation as one self-contained page.

The page is plain HTML with inline CSS, inline SVG charts drawn here, and a few lines of
inline JavaScript for the threshold slider; it loads nothing (no CDN, no font, no URL), so it
opens offline and can be mailed or kept as a CI artefact. Every text that comes from the data
(questions, sources, settings) is HTML-escaped.

>>> result = evaluate([Path("corpus")], settings, ["dense", "bm25"])  # doctest: +SKIP
>>> Path("report.html").write_text(render_report(result, settings))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rag_pipeline.evaluation import CUTOFF, DETAILS, TOP_CHUNK

if TYPE_CHECKING:
    from rag_pipeline.config import Settings

WORST_SHOWN = 30  # rows per question table; the counts above each table say how many in all
BIN_WIDTH = 0.02  # histogram bins and the threshold table's step, on the relevance scale
SWEEP_STEPS = 5  # threshold table: this many steps of BIN_WIDTH either side of the configured
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
IN_SCOPE, OUT_OF_SCOPE, WRONG = "#2563eb", "#6b7280", "#dc2626"

_EPS = 1e-9  # a score on a bin edge belongs to the bin above, as ">= threshold" passes


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# ------------------------------------------------------------------------------- charts


def bin_counts(values: Sequence[float], lo: float, hi: float, bins: int) -> list[int]:
    """How many values fall in each of ``bins`` equal bins over [lo, hi); a value at ``hi``
    (or beyond either end) counts in the nearest end bin.

    >>> bin_counts([0.1, 0.5, 0.5, 1.0], 0.0, 1.0, 2)
    [1, 3]
    """
    counts = [0] * bins
    width = (hi - lo) / bins
    for value in values:
        index = math.floor((value - lo) / width + _EPS)
        counts[min(max(index, 0), bins - 1)] += 1
    return counts


def histogram_range(values: Sequence[float], threshold: float | None) -> tuple[float, float, int]:
    """(lo, hi, bins) with BIN_WIDTH bins whose edges fall on the threshold, so every bar is
    wholly on one side of the line, covering every value and at least one bin either side."""
    anchor = threshold if threshold is not None else 0.0
    low = min([*values, anchor])
    high = max([*values, anchor])
    below = max(1, math.ceil((anchor - low) / BIN_WIDTH - _EPS))
    above = max(1, math.floor((high - anchor) / BIN_WIDTH + _EPS) + 1)
    return anchor - below * BIN_WIDTH, anchor + above * BIN_WIDTH, below + above


def histogram_svg(
    values: Sequence[float],
    *,
    lo: float,
    hi: float,
    bins: int,
    threshold: float | None,
    title: str,
    wrong_below: bool,
    width: int = 680,
    height: int = 190,
) -> str:
    """Bars of ``values`` over [lo, hi) with the threshold as a dashed line; the bars on the
    wrong side of it (below for in-scope questions, at or above for out-of-scope) in red."""
    left, right, top, bottom = 44, 12, 26, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    counts = bin_counts(values, lo, hi, bins)
    peak = max(counts, default=0) or 1
    bar_w = plot_w / bins

    def x_of(value: float) -> float:
        return left + (value - lo) / (hi - lo) * plot_w

    parts = [
        f'<svg class="chart histogram" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" '
        f'data-lo="{lo:.4f}" data-hi="{hi:.4f}" data-left="{left}" data-plot-width="{plot_w}">',
        f'<text x="{left}" y="16" class="title">{esc(title)} ({len(values)})</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/>',
        f'<text x="{left - 6}" y="{top + 4}" class="tick" text-anchor="end">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, count in enumerate(counts):
        start = lo + i * (hi - lo) / bins
        end = start + (hi - lo) / bins
        if threshold is None:
            colour = IN_SCOPE if wrong_below else OUT_OF_SCOPE
        else:
            below = end <= threshold + _EPS
            colour = WRONG if below == wrong_below else (IN_SCOPE if wrong_below else OUT_OF_SCOPE)
        bar_h = count / peak * plot_h
        parts.append(
            f'<rect x="{left + i * bar_w + 0.5:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{max(bar_w - 1, 1):.1f}" height="{bar_h:.1f}" fill="{colour}">'
            f"<title>{start:.2f}–{end:.2f}: {count}</title></rect>"
        )
    # A tick label every 0.1 keeps the axis readable whatever the range.
    tick = math.ceil(lo * 10 - _EPS) / 10
    while tick <= hi + _EPS:
        x = x_of(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            'class="axis"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tick" text-anchor="middle">'
            f"{tick:.1f}</text>"
        )
        tick = round(tick + 0.1, 10)
    if threshold is not None:
        x = x_of(threshold)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}" '
            'class="threshold-line"/>'
            f'<text x="{x + 4:.1f}" y="{top + 6}" class="threshold-label">'
            f"threshold {threshold:.2f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(
    series: Mapping[str, Mapping[int, float]],
    *,
    title: str,
    y_label: str,
    y_max: float | None = None,
    y_min: float = 0.0,
    width: int = 390,
    height: int = 260,
) -> str:
    """One line per series over k = 1..10, with a legend, the y axis from ``y_min`` to
    ``y_max`` (None: the largest value)."""
    left, right, top, bottom = 52, 12, 28, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for v in points.values()]
    ceiling = y_max if y_max is not None else (max(values, default=0.0) or 1.0)
    floor = min(y_min, ceiling - 1e-6)

    def x_of(k: float) -> float:
        return left + (k - 1) / (CUTOFF - 1) * plot_w

    def y_of(v: float) -> float:
        return top + plot_h - (v - floor) / (ceiling - floor) * plot_h

    parts = [
        f'<svg class="chart line" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left}" y="16" class="title">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        v = floor + (ceiling - floor) * fraction
        label = f"{v:.2f}" if ceiling <= 1 else f"{v:,.0f}"
        parts.append(
            f'<line x1="{left}" y1="{y_of(v):.1f}" x2="{left + plot_w}" y2="{y_of(v):.1f}" '
            'class="grid"/>'
            f'<text x="{left - 6}" y="{y_of(v) + 4:.1f}" class="tick" text-anchor="end">'
            f"{label}</text>"
        )
    for k in range(1, CUTOFF + 1):
        parts.append(
            f'<text x="{x_of(k):.1f}" y="{top + plot_h + 16}" class="tick" '
            f'text-anchor="middle">{k}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" class="tick" '
        f'text-anchor="middle">k (chunks) · y: {esc(y_label)}</text>'
    )
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        ordered = sorted(points.items())
        path = " ".join(f"{x_of(k):.1f},{y_of(v):.1f}" for k, v in ordered)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for k, v in ordered:
            parts.append(
                f'<circle cx="{x_of(k):.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                f"<title>{esc(name)}, k={k}: {v:g}</title></circle>"
            )
        legend_x = left + (index % 3) * (plot_w / 3)
        legend_y = height - 16 + (index // 3) * 13  # rows of three names
        parts.append(
            f'<rect x="{legend_x:.1f}" y="{legend_y - 9}" width="12" height="4" '
            f'fill="{colour}"/>'
            f'<text x="{legend_x + 16:.1f}" y="{legend_y - 4}" class="legend">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------- figures


def refusal_at(
    in_scope: Sequence[float], out_of_scope: Sequence[float], threshold: float
) -> tuple[float, float]:
    """(share of in-scope questions refused, share of out-of-scope questions answered) when
    a question is answered iff its top relevance reaches ``threshold``, as the retriever does."""
    refused = sum(v < threshold for v in in_scope) / (len(in_scope) or 1)
    answered = sum(v >= threshold for v in out_of_scope) / (len(out_of_scope) or 1)
    return refused, answered


def threshold_steps(threshold: float | None) -> list[float]:
    """The thresholds of the table: every BIN_WIDTH around the configured one, within 0..1."""
    centre = threshold if threshold is not None else 0.8
    steps = [round(centre + i * BIN_WIDTH, 4) for i in range(-SWEEP_STEPS, SWEEP_STEPS + 1)]
    return [t for t in steps if 0.0 <= t <= 1.0]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return esc(value)


def _by_k(figures: Mapping[str, Any], key: str) -> dict[int, float]:
    return {int(k): float(v) for k, v in (figures.get(key) or {}).items()}


def _configurations(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Name -> figures, the default first; a --compare entry equal to the default is one."""
    default = str(result.get("config", "default"))
    rows: dict[str, Mapping[str, Any]] = {default: result}
    for name, figures in (result.get("compare") or {}).items():
        rows.setdefault(name, figures)
    return rows


# ------------------------------------------------------------------------------- sections

_READ_THE_PICTURE = (
    "Each question is placed by its <em>top relevance</em>: the relevance of the best chunk "
    "retrieval found for it, on the same 0..1 scale as <code>retriever.score_threshold</code> "
    "(for hybrid retrieval, the best cosine and the best keyword coverage combined, exactly as "
    "the refusal gate computes it). A question whose top relevance is below the threshold (the "
    "dashed line) is refused: the customer is handed over without an answer. So in the upper "
    "chart, the in-scope questions, red bars left of the line are questions the bot could "
    "answer but refuses; in the lower chart, the out-of-scope questions, red bars at or right "
    "of the line are questions it should refuse but answers from an unrelated chunk. Moving the "
    "threshold right trades the second kind of mistake for the first. A good threshold sits in "
    "a gap between the two piles; where they overlap, the table of other thresholds shows "
    "what each choice costs. Calibrated on these questions, the rates are optimistic for new "
    "ones."
)


def _threshold_section(result: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    default = str(result.get("config", ""))
    config = (details.get("configs") or {}).get(default) or {}
    threshold = result.get("score_threshold", None)
    out = [f'<section id="threshold"><h2>The threshold picture ({esc(default)})</h2>']
    in_scope = [q["top_relevance"] for q in config.get("queries", [])]
    outside = [q["top_relevance"] for q in config.get("out_of_scope", [])]
    if not outside or any(v is None for v in [*in_scope, *outside]):
        out.append(
            '<p class="note">No threshold picture: this run has no out-of-scope questions '
            "to set against the in-scope ones (put an <code>out_of_scope.jsonl</code>, one "
            '<code>{"question": ...}</code> per line, beside <code>questions.jsonl</code>).'
        )
        if "refused_in_scope" in result:
            out.append(
                f" At threshold {_num(threshold)}, {_pct(result['refused_in_scope'])} of the "
                "in-scope questions are refused."
            )
        out.append("</p></section>")
        return "".join(out)
    if threshold is None:
        out.append(
            '<p class="note">No refusal threshold is configured '
            "(<code>retriever.score_threshold</code> is unset): every question is answered. "
            "The table shows what a threshold would do.</p>"
        )
    out.append(f'<p class="how">{_READ_THE_PICTURE}</p><div class="side"><div class="pictures">')
    lo, hi, bins = histogram_range([*in_scope, *outside], threshold)
    out.append(
        histogram_svg(
            in_scope,
            lo=lo,
            hi=hi,
            bins=bins,
            threshold=threshold,
            title="in-scope questions by top relevance",
            wrong_below=True,
        )
    )
    out.append(
        histogram_svg(
            outside,
            lo=lo,
            hi=hi,
            bins=bins,
            threshold=threshold,
            title="out-of-scope questions by top relevance",
            wrong_below=False,
        )
    )
    if threshold is not None:
        # The rates measured with the threshold on, as ask runs, when the run has them.
        refused, answered = refusal_at(in_scope, outside, threshold)
        refused = result.get("refused_in_scope", refused)
        if "refused_out_of_scope" in result:
            answered = round(1 - result["refused_out_of_scope"], 4)
        out.append(
            f'<p class="rates" id="rates">At threshold <strong id="rate-threshold">'
            f'{threshold:.2f}</strong>: <strong id="rate-in">{_pct(refused)}</strong> of '
            f"{len(in_scope)} in-scope questions refused (wrongly handed over), "
            f'<strong id="rate-out">{_pct(answered)}</strong> of {len(outside)} out-of-scope '
            "questions answered (wrongly answered).</p>"
        )
        out.append(_slider(in_scope, outside, threshold, lo, hi))
    out.append(
        "</div><table><caption>Both mistakes at other thresholds</caption><thead><tr>"
        "<th>threshold</th><th>in-scope refused</th><th>out-of-scope answered</th>"
        "</tr></thead><tbody>"
    )
    for step in threshold_steps(threshold):
        refused, answered = refusal_at(in_scope, outside, step)
        mark = ' class="current"' if threshold is not None and abs(step - threshold) < _EPS else ""
        out.append(
            f"<tr{mark}><td>{step:.2f}</td><td>{_pct(refused)}</td><td>{_pct(answered)}</td></tr>"
        )
    out.append("</tbody></table></div></section>")
    return "".join(out)


_SLIDER_JS = """
(function () {
  var data = JSON.parse(document.getElementById("threshold-scores").textContent);
  var box = document.getElementById("slider");
  var input = document.getElementById("threshold-input");
  box.hidden = false;
  function pct(x) { return (100 * x).toFixed(1) + "%"; }
  function update() {
    var t = parseFloat(input.value);
    var refused = data.in_scope.filter(function (v) { return v < t; }).length;
    var answered = data.out_of_scope.filter(function (v) { return v >= t; }).length;
    document.getElementById("slider-value").textContent = t.toFixed(2);
    document.getElementById("slider-in").textContent = pct(refused / data.in_scope.length);
    document.getElementById("slider-out").textContent =
      pct(answered / data.out_of_scope.length);
    document.querySelectorAll("svg.histogram").forEach(function (svg) {
      var lo = parseFloat(svg.dataset.lo), hi = parseFloat(svg.dataset.hi);
      var x = parseFloat(svg.dataset.left) +
        (t - lo) / (hi - lo) * parseFloat(svg.dataset.plotWidth);
      var line = svg.querySelector(".slider-line");
      line.setAttribute("x1", x); line.setAttribute("x2", x);
      // At the configured value the dashed line already marks it.
      line.style.display = t.toFixed(2) === input.defaultValue ? "none" : "";
    });
  }
  document.querySelectorAll("svg.histogram").forEach(function (svg) {
    var line = document.createElementNS(svg.namespaceURI, "line");
    line.setAttribute("class", "slider-line");
    line.setAttribute("y1", 20); line.setAttribute("y2", svg.getAttribute("height") - 34);
    line.style.display = "none";
    svg.appendChild(line);
  });
  input.addEventListener("input", update);
  update();
})();
"""


def _slider(
    in_scope: Sequence[float], outside: Sequence[float], threshold: float, lo: float, hi: float
) -> str:
    """A range input that moves a second line and recomputes both rates; hidden until the
    script runs, so without JavaScript the page shows only the static figures."""
    scores = json.dumps({"in_scope": list(in_scope), "out_of_scope": list(outside)})
    # "<" escaped so no text can close the script element early.
    scores = scores.replace("<", "\\u003c")
    return (
        '<div id="slider" class="slider" hidden><label>Try another threshold: '
        f'<input type="range" id="threshold-input" min="{max(lo, 0):.2f}" '
        f'max="{min(hi, 1):.2f}" step="0.01" value="{threshold:.2f}"></label> '
        '<span id="slider-value"></span>: <span id="slider-in"></span> of in-scope questions '
        'refused, <span id="slider-out"></span> of out-of-scope questions answered '
        "(green line).</div>"
        f'<script type="application/json" id="threshold-scores">{scores}</script>'
        f"<script>{_SLIDER_JS}</script>"
    )


def _retrieval_section(result: Mapping[str, Any]) -> str:
    # top-chunk shares the default's retrieval: its curves would repeat the default's.
    rows = {n: f for n, f in _configurations(result).items() if n != TOP_CHUNK}
    columns = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "answer_recall"]
    out = [
        '<section id="retrieval"><h2>Retrieval against k</h2>',
        "<p>hit@k: the share of questions with an expected source among the first k chunks; "
        "answer recall: the share whose gold answer appears in the first k chunks' text; "
        "context: the characters the answer step reads at that k "
        "(<code>retriever.k</code> chooses it).</p>",
        '<div class="charts">',
    ]
    charts = [
        ("hit@k", "hit_at_k", 1.0, "share of questions"),
        ("answer recall at k", "answer_recall_at_k", 1.0, "share of questions"),
        ("mean context characters at k", "context_chars_at_k", None, "characters"),
    ]
    for title, key, y_max, label in charts:
        series = {name: _by_k(f, key) for name, f in rows.items() if f.get(key)}
        if series:
            # Shares start at the tenth below the lowest, so that close curves stay apart.
            lowest = min(v for points in series.values() for v in points.values())
            y_min = math.floor(lowest * 10) / 10 if y_max == 1.0 else 0.0
            out.append(line_chart_svg(series, title=title, y_label=label, y_max=y_max, y_min=y_min))
        else:
            out.append(f'<p class="note">No {esc(title)} figures in this result.</p>')
    out.append("</div><table><thead><tr><th>configuration</th>")
    out.extend(f"<th>{esc(c)}</th>" for c in columns)
    out.append("<th>latency p50 / p95 (ms)</th><th>chunks</th></tr></thead><tbody>")
    for name, figures in rows.items():
        out.append(f"<tr><td>{esc(name)}</td>")
        out.extend(f"<td>{_num(figures.get(c))}</td>" for c in columns)
        out.append(
            f"<td>{_num(figures.get('latency_ms_p50'))} / {_num(figures.get('latency_ms_p95'))}"
            f"</td><td>{_num(figures.get('chunks'))}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _answers_section(result: Mapping[str, Any]) -> str:
    columns = [
        ("answer_contains", "answer contains gold"),
        ("answer_chars_mean", "chars mean"),
        ("answer_chars_p95", "chars p95"),
        ("citations_valid", "citations valid"),
        ("cites_relevant", "cites relevant"),
        ("refused_in_scope", "refused in scope"),
        ("answer_ms_p50", "answer ms p50"),
    ]
    answered = {n: f["answers"] for n, f in _configurations(result).items() if "answers" in f}
    out = ['<section id="answers"><h2>Answers</h2>']
    if not answered:
        out.append(
            '<p class="note">No answer figures: the questions carry no gold answers '
            "(<code>answer_contains</code> or <code>answers</code>).</p></section>"
        )
        return "".join(out)
    out.append(
        "<p>The whole assistant on every question, as <code>ask</code> runs (the configured "
        "chat model, the refusal threshold on); <code>top-chunk</code> answers with the first "
        "chunk verbatim.</p><table><thead><tr><th>configuration</th>"
    )
    out.extend(f"<th>{esc(label)}</th>" for _, label in columns)
    out.append("</tr></thead><tbody>")
    for name, figures in answered.items():
        out.append(f"<tr><td>{esc(name)}</td>")
        out.extend(f"<td>{_num(figures.get(key))}</td>" for key, _ in columns)
        out.append("</tr>")
    out.append("</tbody></table></section>")
    return "".join(out)


def _rank(rank: int | None) -> str:
    return str(rank) if rank else f"not in top {CUTOFF}"


def _sources_cell(entries: Sequence[Mapping[str, Any]]) -> str:
    items = [
        f'<li>{esc(e["source"])} <span class="score">{_num(e.get("score"))}</span></li>'
        for e in entries
    ]
    return f"<ol>{''.join(items)}</ol>" if items else "–"


def _worst_section(result: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    default = str(result.get("config", ""))
    configs = details.get("configs") or {}
    queries = (configs.get(default) or {}).get("queries", [])
    out = [f'<section id="worst"><h2>The worst questions ({esc(default)})</h2>']
    if not queries:
        out.append('<p class="note">No per-question details in this result.</p></section>')
        return "".join(out)
    others = [n for n in configs if n not in (default, TOP_CHUNK)]
    rank_of = {n: {q["id"]: q["rank"] for q in configs[n].get("queries", [])} for n in others}
    missed = [q for q in queries if q["rank"] is None]
    late = [q for q in queries if q["rank"] is not None and q["rank"] > 1]
    # Not found in the top 10 first, then by rank, lowest first.
    worst = missed + sorted(late, key=lambda q: -q["rank"])
    out.append(
        f"<p>{len(missed)} of {len(queries)} questions have no expected source in the top "
        f"{CUTOFF}; {len(late)} more have one, but not first. "
        f"Showing {min(len(worst), WORST_SHOWN)}, the lowest ranked first. A retrieved "
        "source's score is its best chunk's own relevance (BM25 alone: its BM25 score; "
        "behind a reranker: the reranker's); the top relevance is the one the threshold "
        "is compared with.</p>"
    )
    if worst:
        out.append(
            "<table><thead><tr><th>question</th><th>expected</th>"
            f"<th>rank ({esc(default)})</th>"
            + "".join(f"<th>rank ({esc(n)})</th>" for n in others)
            + "<th>top 3 retrieved (score)</th><th>top relevance</th></tr></thead><tbody>"
        )
        for q in worst[:WORST_SHOWN]:
            ranks = "".join(f"<td>{_rank(rank_of[n].get(q['id']))}</td>" for n in others)
            out.append(
                f"<tr><td>{esc(q['question'])}</td><td>{esc(', '.join(q['expected']))}</td>"
                f"<td>{_rank(q['rank'])}</td>{ranks}"
                f"<td>{_sources_cell(q['top_sources'])}</td>"
                f"<td>{_num(q.get('top_relevance'))}</td></tr>"
            )
        out.append("</tbody></table>")
    refused = [q for q in queries if q.get("refused")]
    out.append(
        f"<h3>In-scope questions refused</h3><p>{len(refused)} of {len(queries)} "
        "in-scope questions were refused by the whole assistant (the customer is handed over)."
        + (f" Showing the first {WORST_SHOWN}." if len(refused) > WORST_SHOWN else "")
        + "</p>"
    )
    if refused:
        out.append(
            "<table><thead><tr><th>question</th><th>expected</th><th>top relevance</th>"
            "<th>top 3 retrieved (score)</th></tr></thead><tbody>"
        )
        for q in refused[:WORST_SHOWN]:
            out.append(
                f"<tr><td>{esc(q['question'])}</td><td>{esc(', '.join(q['expected']))}</td>"
                f"<td>{_num(q.get('top_relevance'))}</td>"
                f"<td>{_sources_cell(q['top_sources'])}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</section>")
    return "".join(out)


def _run_section(result: Mapping[str, Any], details: Mapping[str, Any], settings: Settings) -> str:
    run = details.get("run") or {}
    configs = details.get("configs") or {}
    out = [
        '<section id="run"><h2>The run</h2><dl>',
        f"<dt>started</dt><dd>{esc(run.get('started', 'unknown'))}</dd>",
        f"<dt>rag-pipeline</dt><dd>{esc(run.get('version', 'unknown'))}</dd>",
        f"<dt>questions</dt><dd>{_num(result.get('n_queries'))} in scope, "
        f"{_num(run.get('n_out_of_scope', 0))} out of scope</dd>",
        "</dl><table><thead><tr><th>dataset</th><th>path</th><th>questions</th>"
        "<th>out of scope</th></tr></thead><tbody>",
    ]
    for entry in run.get("datasets", []):
        out.append(
            f"<tr><td>{esc(entry['name'])}</td><td>{esc(entry['path'])}</td>"
            f"<td>{_num(entry['questions'])}</td><td>{_num(entry['out_of_scope'])}</td></tr>"
        )
    out.append(
        "</tbody></table><table><thead><tr><th>configuration</th><th>retrieval</th>"
        "<th>embedding fingerprint</th></tr></thead><tbody>"
    )
    for name, config in configs.items():
        out.append(
            f"<tr><td>{esc(name)}</td><td>{esc(config.get('retrieval', ''))}</td>"
            f"<td><code>{esc(config.get('embeddings', ''))}</code></td></tr>"
        )
    masked = json.dumps(settings.masked(), ensure_ascii=False, indent=2)
    out.append(
        "</tbody></table><details><summary>Settings in effect (secrets masked)</summary>"
        f"<pre>{esc(masked)}</pre></details></section>"
    )
    return "".join(out)


_CSS = """
body { font: 15px/1.5 system-ui, "PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei",
  sans-serif; color: #111827; max-width: 1400px; margin: 0 auto; padding: 16px 24px; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px;
  border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; } h3 { font-size: 16px; }
.summary, .note { color: #4b5563; } .note { font-style: italic; }
.how { background: #f3f4f6; padding: 8px 12px; border-radius: 6px; max-width: 900px; }
.rates { font-size: 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f9fafb; } tr.current td { background: #fef3c7; font-weight: 600; }
td ol { margin: 0; padding-left: 18px; } .score { color: #6b7280; }
.charts, .side { display: flex; flex-wrap: wrap; gap: 12px 28px; align-items: flex-start; }
.pictures { max-width: 700px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { font-weight: 600; } dd { margin: 0; }
svg.chart { background: #fff; border: 1px solid #e5e7eb; border-radius: 4px; display: block;
  margin: 6px 0; }
svg .title { font-size: 13px; font-weight: 600; fill: #111827; }
svg .tick, svg .legend { font-size: 11px; fill: #374151; }
svg .axis { stroke: #6b7280; } svg .grid { stroke: #e5e7eb; }
svg .threshold-line { stroke: #111827; stroke-width: 2; stroke-dasharray: 5 3; }
svg .threshold-label { font-size: 11px; fill: #111827; }
svg .slider-line { stroke: #16a34a; stroke-width: 2; }
pre { background: #f9fafb; padding: 8px; font-size: 12px; overflow-x: auto; }
"""


def render_report(result: Mapping[str, Any], settings: Settings) -> str:
    """The whole page for an ``evaluate`` result (its ``DETAILS`` feed the threshold picture
    and the question tables; without them those sections say so)."""
    details: Mapping[str, Any] = result.get(DETAILS) or {}
    names = ", ".join(_configurations(result))
    datasets = ", ".join(d["name"] for d in (details.get("run") or {}).get("datasets", []))
    started = (details.get("run") or {}).get("started", "")
    return "".join(
        [
            '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>rag eval: {esc(datasets or 'report')}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>rag eval report: {esc(datasets or 'datasets')}</h1>",
            f'<p class="summary">{_num(result.get("n_queries"))} questions, configurations: '
            f"{esc(names)} (the first is the default, which <code>ask</code> runs). "
            f"{esc(started)}</p>",
            _threshold_section(result, details),
            _retrieval_section(result),
            _answers_section(result),
            _worst_section(result, details),
            _run_section(result, details, settings),
            "</body></html>\n",
        ]
    )
