"""The page of ``gpt2_inspect``: one self-contained HTML file (inline CSS and JavaScript, the numbers
as inline JSON, no external assets) showing a :func:`gpt2_common.interp.view.inspect_text` view:

* every head's attention pattern: a grid of thumbnails (layers x heads; click one) and the chosen
  head as a token-labelled heat map (``<select id="layer">``, ``<select id="head">``); hovering a
  cell shows query, key and weight in ``#readout``;
* the logit lens (``<table id="lens">``): stages x positions, each cell the stage's top token and
  its probability, and the rank of the text's next token (``#r``), coloured by that rank's GLTR
  bucket (top 10 / 100 / 1000 / beyond); hover for the top tokens;
* the head scores (``<table class="scores">``, one per score): layers x heads, the
  :data:`~gpt2_common.interp.view.TOP_HEADS` best of each outlined; click one to show its pattern.

Every string reaches the page as JSON and is put in with ``textContent`` (never parsed as HTML);
the JSON is escaped so that no ``</script>`` can end it early. Token labels are
:func:`~gpt2_common.interp.view.token_label` s (a piece of a UTF-8 character shows as its bytes).
"""
from __future__ import annotations

import html
import json
from typing import Any, Dict, Optional

from ..constants import GLTR_BUCKETS
from ..gltr import BUCKET_NAMES, COLOURS, _write_atomic

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.35em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin: 1.4em 0 0.5em; }
.meta { color: #555; font-size: 0.9em; margin: 0.2em 0; }
#attention { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
#thumbs { display: grid; gap: 3px; align-items: center; font-size: 11px; color: #555; }
#thumbs canvas { width: 48px; height: 48px; image-rendering: pixelated; border: 2px solid #ddd; cursor: pointer; }
#thumbs canvas.sel { border-color: #d62728; }
#controls { margin-bottom: 0.5em; } #controls select { margin-right: 1em; }
#readout { font: 13px/1.4 monospace; min-height: 1.4em; margin: 0.3em 0; white-space: pre; }
#heatmap { display: block; }
.scroll { overflow-x: auto; max-width: 100%; border: 1px solid #ddd; }
#lens { border-collapse: collapse; font-size: 12px; }
#lens th, #lens td { border: 1px solid #e4e4e4; padding: 2px 4px; white-space: pre; text-align: left; }
#lens td .tok, #lens th .tok { display: block; max-width: 7em; overflow: hidden; text-overflow: ellipsis; font-family: monospace; }
#lens td .num { display: block; color: #444; font-size: 10px; }
#lens th.stage { position: sticky; left: 0; background: #fafafa; z-index: 1; }
#lens td.none { background: #f2f2f2; }
.legend span { padding: 0.1em 0.5em; margin-right: 0.5em; border-radius: 2px; font-size: 0.85em; }
#scores { display: flex; flex-wrap: wrap; gap: 2em; }
table.scores { border-collapse: collapse; font-size: 12px; }
table.scores caption { font-weight: bold; margin-bottom: 0.3em; }
table.scores td, table.scores th { border: 1px solid #e4e4e4; padding: 3px 5px; text-align: right; }
table.scores td { cursor: pointer; font-family: monospace; }
table.scores td.top { outline: 2px solid #d62728; outline-offset: -2px; font-weight: bold; }
#top-heads { font: 13px/1.5 monospace; }
""" + "".join(f".b{i} {{ background: {c}; }}\n" for i, c in enumerate(COLOURS))

_JS = r"""
(function () {
  "use strict";
  const V = JSON.parse(document.getElementById("data").textContent);
  const L = V.n_layer, H = V.n_head, T = V.tokens.length, labels = V.token_labels;
  const BUCKETS = JSON.parse(document.getElementById("buckets").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; return e; };
  const rgb = (v) => {  // 0 -> white, 1 -> dark blue
    const a = [255, 255, 255], b = [8, 48, 107], f = Math.min(Math.max(v, 0), 1);
    return [0, 1, 2].map((i) => Math.round(a[i] + (b[i] - a[i]) * f));
  };
  const colour = (v) => "rgb(" + rgb(v).join(",") + ")";
  const fmt = (p) => p >= 0.001 ? p.toFixed(3) : p === 0 ? "0" : p.toExponential(1);
  const quote = (s) => "'" + s + "'";
  let layer = V.initial[0], head = V.initial[1];

  // ---- thumbnails ---------------------------------------------------------------------------
  const thumbs = $("thumbs");
  thumbs.style.gridTemplateColumns = "auto repeat(" + H + ", 52px)";
  thumbs.appendChild(el("span"));
  for (let h = 0; h < H; h++) thumbs.appendChild(el("span", "", "H" + h));
  const thumbCanvas = [];
  for (let l = 0; l < L; l++) {
    thumbs.appendChild(el("span", "", "L" + l));
    thumbCanvas.push([]);
    for (let h = 0; h < H; h++) {
      const c = el("canvas"); c.width = T; c.height = T; c.title = "layer " + l + ", head " + h;
      c.dataset.layer = l; c.dataset.head = h;
      const ctx = c.getContext("2d"), img = ctx.createImageData(T, T);
      for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
        const i = 4 * (q * T + k), v = k <= q ? V.attention[l][h][q][k] : 0;
        const c3 = rgb(v);
        img.data[i] = c3[0]; img.data[i + 1] = c3[1]; img.data[i + 2] = c3[2]; img.data[i + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      c.addEventListener("click", () => select(l, h));
      thumbs.appendChild(c); thumbCanvas[l].push(c);
    }
  }

  // ---- the heat map -------------------------------------------------------------------------
  const lsel = $("layer"), hsel = $("head");
  for (let l = 0; l < L; l++) lsel.appendChild(new Option("layer " + l, l));
  for (let h = 0; h < H; h++) hsel.appendChild(new Option("head " + h, h));
  lsel.addEventListener("change", () => select(+lsel.value, head));
  hsel.addEventListener("change", () => select(layer, +hsel.value));
  const canvas = $("heatmap"), readout = $("readout");
  const cell = Math.max(1, Math.min(26, Math.floor(640 / T)));
  const font = Math.min(12, cell - 1), showLabels = cell >= 9;
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = font + "px monospace";
  const clip = (s) => s.length > 14 ? s.slice(0, 13) + "\u2026" : s;
  const labelW = showLabels ? Math.ceil(Math.max(...labels.map((s) => measure.measureText(clip(s)).width))) + 8 : 0;
  const x0 = labelW, y0 = labelW, size = T * cell, dpr = window.devicePixelRatio || 1;
  canvas.style.width = (x0 + size + 2) + "px"; canvas.style.height = (y0 + size + 2) + "px";
  canvas.width = Math.round((x0 + size + 2) * dpr); canvas.height = Math.round((y0 + size + 2) * dpr);
  Object.assign(canvas.dataset, { cell: cell, x0: x0, y0: y0, tokens: T });
  let hover = null;

  function draw() {
    const ctx = canvas.getContext("2d"), P = V.attention[layer][head];
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, x0 + size + 2, y0 + size + 2);
    for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
      ctx.fillStyle = k <= q ? colour(P[q][k]) : "#f3f3f3";
      ctx.fillRect(x0 + k * cell, y0 + q * cell, cell, cell);
    }
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.strokeRect(x0 - 0.5, y0 - 0.5, size + 1, size + 1);
    if (showLabels) {
      ctx.fillStyle = "#222"; ctx.font = font + "px monospace"; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let q = 0; q < T; q++) ctx.fillText(clip(labels[q]), x0 - 4, y0 + (q + 0.5) * cell);
      ctx.save(); ctx.textAlign = "left";
      for (let k = 0; k < T; k++) {  // keys: written upwards above their column
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.translate(x0 + (k + 0.5) * cell, y0 - 4); ctx.rotate(-Math.PI / 2);
        ctx.fillText(clip(labels[k]), 0, 0);
      }
      ctx.restore();
    }
    if (hover) {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
      ctx.strokeRect(x0 + hover[1] * cell, y0 + hover[0] * cell, cell, cell);
    }
    canvas.dataset.layer = layer; canvas.dataset.head = head;
  }

  function show(q, k) {
    if (q === null) { readout.textContent = "hover over the heat map: query (row) \u2190 key (column)"; delete readout.dataset.value; return; }
    const v = V.attention[layer][head][q][k];
    readout.textContent = "L" + layer + "H" + head + "  query " + q + " " + quote(labels[q]) +
      " \u2190 key " + k + " " + quote(labels[k]) + ":  " + v.toFixed(4);
    Object.assign(readout.dataset, { layer: layer, head: head, query: q, key: k, value: String(v) });
  }

  canvas.addEventListener("mousemove", (ev) => {
    const r = canvas.getBoundingClientRect();
    const k = Math.floor((ev.clientX - r.left - x0) / cell), q = Math.floor((ev.clientY - r.top - y0) / cell);
    const inside = q >= 0 && q < T && k >= 0 && k <= q;
    hover = inside ? [q, k] : null; draw(); show(inside ? q : null, k);
  });
  canvas.addEventListener("mouseleave", () => { hover = null; draw(); show(null); });

  function select(l, h) {
    layer = l; head = h; lsel.value = l; hsel.value = h;
    thumbCanvas.forEach((row, i) => row.forEach((c, j) => c.classList.toggle("sel", i === l && j === h)));
    document.querySelectorAll("table.scores td").forEach((td) =>
      td.classList.toggle("sel", +td.dataset.layer === l && +td.dataset.head === h));
    $("heatmap-title").textContent = "layer " + l + ", head " + h;
    hover = null; draw(); show(null);
  }

  // ---- logit lens ---------------------------------------------------------------------------
  const LL = V.logit_lens, lens = $("lens");
  const bucket = (r) => { for (let i = 0; i < BUCKETS.length; i++) if (r <= BUCKETS[i]) return i; return BUCKETS.length; };
  const head1 = lens.createTHead();
  const rows = [["position", (t) => String(t)], ["token", (t) => labels[t]],
                ["next", (t) => LL.target[t] >= 0 ? labels[t + 1] : ""]];
  for (const [name, text] of rows) {
    const tr = head1.insertRow(); tr.appendChild(el("th", "stage", name));
    for (let t = 0; t < T; t++) { const th = el("th"); th.appendChild(el("span", "tok", text(t))); tr.appendChild(th); }
  }
  const body = lens.createTBody();
  LL.stages.forEach((stage, s) => {
    const tr = body.insertRow(); tr.appendChild(el("th", "stage", stage));
    for (let t = 0; t < T; t++) {
      const td = tr.insertCell(), rank = LL.target_rank[s][t];
      td.className = rank > 0 ? "b" + bucket(rank) : "none";
      Object.assign(td.dataset, { stage: s, pos: t, rank: rank, top: LL.top_ids[s][t][0], prob: String(LL.top_probs[s][t][0]) });
      td.appendChild(el("span", "tok", LL.top_labels[s][t][0]));
      td.appendChild(el("span", "num", fmt(LL.top_probs[s][t][0]) + (rank > 0 ? "  #" + rank : "")));
      let tip = stage + ", position " + t + " " + quote(labels[t]) + "\ntop tokens:";
      for (let i = 0; i < LL.k; i++) tip += "\n  " + quote(LL.top_labels[s][t][i]) + "  " + fmt(LL.top_probs[s][t][i]);
      if (rank > 0) tip += "\nnext token " + quote(labels[t + 1]) + ": rank " + rank + ", p " + fmt(LL.target_prob[s][t]);
      td.title = tip;
    }
  });

  // ---- head scores --------------------------------------------------------------------------
  const S = V.head_scores, names = { induction: "induction", previous: "previous token", duplicate: "duplicate token" };
  for (const key of ["induction", "previous", "duplicate"]) {
    const table = el("table", "scores"); table.id = "scores-" + key;
    table.appendChild(el("caption", "", names[key]));
    const tr = table.createTHead().insertRow(); tr.appendChild(el("th"));
    for (let h = 0; h < H; h++) tr.appendChild(el("th", "", "H" + h));
    const tb = table.createTBody(), top = new Set(S.top[key].map((x) => x[0] + "," + x[1]));
    for (let l = 0; l < L; l++) {
      const row = tb.insertRow(); row.appendChild(el("th", "", "L" + l));
      for (let h = 0; h < H; h++) {
        const v = S[key][l][h], td = row.insertCell();
        td.textContent = v.toFixed(3); td.style.background = colour(v * 0.8);
        td.style.color = v > 0.55 ? "#fff" : "#222";
        Object.assign(td.dataset, { layer: l, head: h, value: String(v) });
        if (top.has(l + "," + h)) td.classList.add("top");
        td.title = names[key] + " score of layer " + l + ", head " + h + ": " + v;
        td.addEventListener("click", () => { select(l, h); $("attention-section").scrollIntoView(); });
      }
    }
    $("scores").appendChild(table);
  }
  const topList = $("top-heads");
  for (const key of ["induction", "previous", "duplicate"])
    topList.appendChild(el("div", "", names[key] + ": " + S.top[key].map((x) => "L" + x[0] + "H" + x[1] + " " + x[2].toFixed(3)).join(", ")));

  select(layer, head);
  document.body.dataset.ready = "1";
})();
"""


def _json_for_script(obj: Any) -> str:
    """``obj`` as JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    written as ``\\u003c`` etc., so no text (``</script>``, ``<!--``) can end or change the block."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(view: Dict[str, Any], layer: Optional[int] = None, head: Optional[int] = None,
                title: str = "") -> str:
    """The page of ``view`` (from :func:`~gpt2_common.interp.view.inspect_text`), showing head
    ``(layer, head)`` first (default: the top induction head). ``view["about"]`` (model,
    backend, dtype, device) is named under the heading."""
    if layer is None or head is None:
        layer, head = view["head_scores"]["top"]["induction"][0][:2]
    data = dict(view, initial=[int(layer), int(head)])
    about = view.get("about") or {}
    made = ", ".join(f"{k} {v}" for k, v in about.items() if v is not None)
    rep = view["head_scores"]["repeat"]
    ids = f"{rep['low']}..{rep['low'] + rep['vocab'] - 1}"
    esc = html.escape
    heading = esc(title or "Inside GPT-2: attention, logit lens and head scores")
    legend = "".join(f'<span class="b{k}">next token {esc(n)}</span>' for k, n in enumerate(BUCKET_NAMES))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{heading}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{heading}</h1>\n"
        f'<p class="meta" id="made-by">{esc(made)}</p>\n'
        f'<p class="meta">{len(view["tokens"])} tokens; {view["n_layer"]} layers x {view["n_head"]} heads.</p>\n'
        '<h2 id="attention-section">Attention patterns</h2>\n'
        '<p class="meta">Every head: rows are queries, columns the keys they attend to (white 0, dark blue 1). '
        'Click a thumbnail, or choose a layer and head.</p>\n'
        '<div id="attention"><div id="thumbs"></div><div>\n'
        '<div id="controls"><select id="layer"></select><select id="head"></select>'
        '<b id="heatmap-title"></b></div>\n'
        '<div id="readout"></div><canvas id="heatmap"></canvas></div></div>\n'
        "<h2>Logit lens</h2>\n"
        "<p class=\"meta\">Each stage's residual stream through the final LayerNorm and the unembedding: "
        "its top token and probability, and <b>#rank</b> of the text's next token there, coloured by "
        "that rank. Hover over a cell for the top tokens.</p>\n"
        f'<p class="legend">{legend}</p>\n'
        '<div class="scroll"><table id="lens"></table></div>\n'
        "<h2>Head scores</h2>\n"
        f'<p class="meta">Mean attention on {rep["count"]} sequences of {rep["length"]} random token ids '
        f"({esc(ids)}{', after &lt;|endoftext|&gt;' if rep['bos'] else ''}) repeated once: "
        "<b>induction</b> (to the token after the same token's earlier occurrence), "
        "<b>previous token</b>, <b>duplicate token</b> (to the earlier occurrence). "
        "The top heads of each are outlined; click a head to show its pattern.</p>\n"
        '<div id="top-heads"></div>\n<div id="scores"></div>\n'
        f'<script type="application/json" id="buckets">{_json_for_script(list(GLTR_BUCKETS))}</script>\n'
        f'<script type="application/json" id="data">{_json_for_script(data)}</script>\n'
        f"<script>{_JS}</script>\n</body>\n</html>\n")


def write_html(path: str, view: Dict[str, Any], layer: Optional[int] = None, head: Optional[int] = None,
               title: str = "") -> None:
    """Write :func:`render_html` to ``path`` atomically (no half-written page)."""
    text = render_html(view, layer, head, title)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _write_atomic(path, write)


def write_json(path: str, view: Dict[str, Any]) -> None:
    """Write ``view`` as JSON to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(view, f, ensure_ascii=False)
            f.write("\n")

    _write_atomic(path, write)
