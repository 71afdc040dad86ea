"""A GLTR-style view of a text (Gehrmann, Strobelt and Rush, 2019) and its rank-bucket detector.

Every scored token falls in a bucket by the rank the model gave it (:data:`GLTR_BUCKETS`): top 10,
top 100, top 1000, or beyond. Text a model wrote tends to stay in the first buckets; human text
reaches further. This module turns :class:`gpt2_common.research.ScoreResult` s into

* :func:`render_html` -- one self-contained HTML page (inline CSS and SVG, no scripts, no external
  assets): each token coloured by bucket, its probability, rank and the model's top alternatives on
  hover, and a histogram of the buckets; :func:`write_html` writes it atomically;
* :func:`plot_histogram` -- the histogram as a PNG (matplotlib, Agg backend);
* :func:`gltr_detection` -- the bucket fractions of each document as four features of a
  logistic-regression detector, with the train/valid/test protocol of the TF-IDF baseline
  (``C`` from 1/64 .. 64 chosen on validation). Needs scikit-learn (the ``detect`` extra).
"""
from __future__ import annotations

import html
import math
import os
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .constants import EOT_TOKEN, GLTR_BUCKETS
from .research import (TFIDF_C_GRID, ResearchError, ScoreResult, labelled, require_both_classes,
                       require_sklearn, score_documents)

BUCKET_NAMES = tuple(f"top {b}" for b in GLTR_BUCKETS) + (f"beyond {GLTR_BUCKETS[-1]}",)
#: Background colour per bucket (GLTR's green, yellow, red, purple).
COLOURS = ("#adff80", "#ffea80", "#ff9280", "#e5b0ff")


def buckets(ranks: Sequence[int]) -> np.ndarray:
    """Bucket index (0 .. len(GLTR_BUCKETS)) of each rank (1 = the model's top choice)."""
    return np.searchsorted(np.asarray(GLTR_BUCKETS), np.asarray(ranks, dtype=np.int64), side="left")


def bucket_counts(ranks: Sequence[int]) -> np.ndarray:
    """How many ranks fall in each bucket (``int64 [len(BUCKET_NAMES)]``)."""
    return np.bincount(buckets(ranks), minlength=len(BUCKET_NAMES)).astype(np.int64)


def bucket_fractions(ranks: Sequence[int]) -> np.ndarray:
    """:func:`bucket_counts` divided by the number of ranks (NaN for none)."""
    counts = bucket_counts(ranks)
    return counts / counts.sum() if counts.sum() else np.full(len(counts), np.nan)


# ------------------------------------------------------------------------------------------------
# Output files
# ------------------------------------------------------------------------------------------------

def check_output_path(path: Any, flag: str) -> str:
    """``path`` if a file can be created there (its folder exists), else ResearchError naming ``flag``."""
    if not isinstance(path, str) or not path:
        raise ResearchError(f"{flag} must be a file path, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ResearchError(f"{flag}: folder {os.path.dirname(path) or '.'} does not exist")
    from .safeio import can_write_in

    if not can_write_in(folder):
        raise ResearchError(f"{flag}: cannot write in folder {os.path.dirname(path) or '.'} (permission denied)")
    if os.path.isdir(path):
        raise ResearchError(f"{flag}: {path} is a folder")
    return path


def _write_atomic(path: str, write: Any) -> None:
    """Call ``write(temporary path)`` and rename the result to ``path`` (no half-written file)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gltr-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_html(path: str, result: ScoreResult, encoder: Any, title: str = "", made_by: str = "") -> None:
    """Write :func:`render_html` to ``path`` atomically."""
    page = render_html(result, encoder, title, made_by)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    _write_atomic(path, write)


def require_matplotlib() -> None:
    """:class:`ResearchError` unless matplotlib imports (``--plot`` asks before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ResearchError("--plot needs matplotlib: pip install matplotlib") from None


def plot_histogram(path: str, counts: Sequence[int], title: str = "") -> None:
    """The bucket histogram as a PNG at ``path`` (matplotlib with the Agg backend), atomically."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = [int(c) for c in counts]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    bars = ax.bar(BUCKET_NAMES, counts, color=COLOURS, edgecolor="#555555")
    ax.bar_label(bars, labels=[str(c) for c in counts])
    ax.set_ylabel("tokens")
    ax.set_title(title or "Tokens by the rank GPT-2 gave them")
    ax.margins(y=0.15)
    fig.tight_layout()
    try:
        _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: Georgia, serif; max-width: 52em; margin: 2em auto; color: #222; }
h1 { font-size: 1.3em; } .meta { color: #555; font-size: 0.9em; }
#text { position: relative; white-space: pre-wrap; line-height: 1.9; font-size: 1.05em;
  border: 1px solid #ccc; padding: 1em; overflow-wrap: anywhere; }
.tok { border-radius: 2px; }
.tok.part { padding: 0 0.18em; }  /* the rest of a character: a thin bar, still hoverable */
.tok .nl::before { content: "\\21b5"; color: #777; font-size: 0.8em; }  /* before each newline */
.tok .tip { display: none; position: absolute; left: 1em; margin-top: 0.1em; z-index: 1;
  max-width: calc(100% - 2.8em); overflow-x: auto; background: #fffff4; border: 1px solid #888;
  padding: 0.3em 0.5em; font: 12px/1.4 monospace; white-space: pre; color: #000;
  box-shadow: 2px 2px 4px #aaa; pointer-events: none; }
.tok:hover .tip, .tok:target .tip { display: block; } .tok:hover, .tok:target { outline: 1px solid #333; }
.legend span { padding: 0.1em 0.5em; margin-right: 0.5em; border-radius: 2px; }
#counts td, #counts th { padding: 0.1em 0.8em; text-align: right; } #counts td:first-child { text-align: left; }
""" + "".join(f".b{i} {{ background: {c}; }}\n" for i, c in enumerate(COLOURS))


def token_label(encoder: Any, token: int) -> str:
    """A token as the tooltip names it: its text as a Python literal, or its bytes (``b'\\xe6'``)
    when it holds part of a UTF-8 character; and its id."""
    data = encoder.decode_bytes([int(token)])
    try:
        shown = repr(data.decode("utf-8"))
    except UnicodeDecodeError:
        shown = repr(data)
    return f"{shown} (id {int(token)})"


def display_strings(encoder: Any, tokens: Sequence[int]) -> list:
    """What each token shows on the page: the characters whose first byte it holds, so a
    character split over byte-level tokens (``東`` as ``e6 9d`` + ``b1``) is drawn whole, by the
    token where it starts, and a token holding only the rest of a character shows ``""``.
    Bytes that never complete a character show as U+FFFD, as :meth:`Encoder.decode` does."""
    pieces = [encoder.decode_bytes([int(t)]) for t in tokens]
    out = [""] * len(pieces)
    owner = [i for i, p in enumerate(pieces) for _ in p]  # the token of each byte
    data, pos = b"".join(pieces), 0
    while pos < len(data):
        lead = data[pos]
        n = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        chunk = data[pos:pos + n]
        try:
            char = chunk.decode("utf-8")
        except UnicodeDecodeError:
            char, n = "\ufffd", 1
        out[owner[pos]] += char
        pos += n
    return out


def render_html(result: ScoreResult, encoder: Any, title: str = "", made_by: str = "") -> str:
    """One self-contained HTML page showing ``result`` the way GLTR does.

    Each scored token is a ``<span class="tok bK" data-bucket=K data-rank=R data-logprob=L>``
    holding its text (see :func:`display_strings`: a character split over tokens is drawn whole
    by the first; a token holding only the rest of one is a thin bar, class ``part``; each
    newline is preceded by ``↵``, an empty ``<span class="nl">``); hovering shows the token itself,
    its probability, rank and (when ``result`` was scored with ``top_k``) the model's top
    alternatives; so does the page's address ending in ``#tN`` (N-th scored token). The hover box is placed inside the text
    box, under the token's line, so it never runs off the page. ``made_by`` (model, backend, ...)
    is printed under the heading. ``<table id="counts">`` and the SVG histogram give the bucket
    counts.
    """
    esc = html.escape
    strings = display_strings(encoder, result.tokens)
    bucket = buckets(result.ranks)
    counts = bucket_counts(result.ranks)
    spans = []
    for i, (s, tok, lp, rank, b) in enumerate(zip(strings, result.tokens, result.logprobs, result.ranks, bucket)):
        tip = f"token {token_label(encoder, tok)}\nrank {int(rank)}   p = {math.exp(lp):.4g}"
        if result.top_tokens is not None:
            alts = [token_label(encoder, t) for t in result.top_tokens[i]]
            tip += "\ntop choices:" + "".join(f"\n  {a:<24} {math.exp(p):.4g}"
                                              for a, p in zip(alts, result.top_logprobs[i]))
        cls = "" if s else " part"
        body = esc(s).replace("\n", '<span class="nl"></span>\n')  # a visible, hoverable newline
        spans.append(f'<span class="tok b{b}{cls}" id="t{i + 1}" data-bucket="{b}" data-rank="{int(rank)}" '
                     f'data-logprob="{float(lp):.6f}">{body}<span class="tip">{esc(tip)}</span></span>')
    total = int(counts.sum())
    rows = "".join(f'<tr data-bucket="{k}"><td><span class="b{k}">&nbsp;&nbsp;</span> {esc(name)}</td>'
                   f'<td class="count">{int(c)}</td><td>{100.0 * c / max(total, 1):.1f}%</td></tr>'
                   for k, (name, c) in enumerate(zip(BUCKET_NAMES, counts)))
    shown = [t for t in result.context if t != EOT_TOKEN]  # a context-only first token, unscored
    context = f'<span class="ctx">{esc(encoder.decode(shown))}</span>' if shown else ""
    legend = "".join(f'<span class="b{k}">{esc(n)}</span>' for k, n in enumerate(BUCKET_NAMES))
    heading = esc(title or "What GPT-2 expected: each token coloured by its rank")
    made = f'<p class="meta" id="made-by">Scored by {esc(made_by)}.</p>\n' if made_by else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{heading}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{heading}</h1>\n{made}"
        f'<p class="meta">{total} tokens scored; mean log-probability {result.mean_logprob:.4f}, '
        f"perplexity {result.perplexity:.2f}. Hover over a token for the token, its rank, "
        f"probability and the model's top choices.</p>\n"
        f'<p class="legend">{legend}</p>\n'
        f'<div id="text">{context}{"".join(spans)}</div>\n'
        f"<h2>Tokens per bucket</h2>\n{_svg_histogram(counts)}\n"
        f'<table id="counts"><tr><th>bucket</th><th>tokens</th><th>share</th></tr>{rows}</table>\n'
        "</body>\n</html>\n")


def _svg_histogram(counts: np.ndarray, width: int = 420, height: int = 160) -> str:
    """An inline SVG bar chart of the bucket counts."""
    top = max(int(counts.max()), 1)
    bar_w = width // len(counts)
    parts = [f'<svg id="histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
             f'role="img" aria-label="tokens per rank bucket">']
    for k, c in enumerate(counts):
        h = int(round(height * int(c) / top))
        x = k * bar_w + 10
        parts.append(f'<rect class="b{k}" x="{x}" y="{height - h + 18}" width="{bar_w - 20}" height="{h}" '
                     f'fill="{COLOURS[k]}" stroke="#555" data-count="{int(c)}"/>')
        parts.append(f'<text x="{x + (bar_w - 20) / 2}" y="{height - h + 14}" text-anchor="middle" '
                     f'font-size="12">{int(c)}</text>')
        parts.append(f'<text x="{x + (bar_w - 20) / 2}" y="{height + 34}" text-anchor="middle" '
                     f'font-size="12">{html.escape(BUCKET_NAMES[k])}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# Detection: bucket fractions + logistic regression
# ------------------------------------------------------------------------------------------------

def gltr_features(model: Any, texts: Sequence[str], max_tokens: Optional[int] = 256,
                  stride: Optional[int] = None, prepend_eot: bool = True, batch_docs: int = 64) -> np.ndarray:
    """Each text's bucket fractions over its first ``max_tokens`` tokens (``float64 [N, 4]``);
    NaN rows for texts with nothing to score."""
    out = np.full((len(texts), len(BUCKET_NAMES)), np.nan)
    for i, r in score_documents(model, texts, max_tokens, stride, prepend_eot, batch_docs):
        out[i] = bucket_fractions(r.ranks)
    return out


def gltr_detection(model: Any, train: Tuple[Sequence[str], Sequence[str]],
                   valid: Tuple[Sequence[str], Sequence[str]], test: Tuple[Sequence[str], Sequence[str]],
                   source: str = "", max_tokens: Optional[int] = 256, stride: Optional[int] = None,
                   prepend_eot: bool = True, c_grid: Sequence[float] = TFIDF_C_GRID) -> Dict[str, Any]:
    """The GLTR detector: bucket fractions as features, logistic regression, ``C`` chosen on valid.

    Each split is ``(real texts, generated texts)``; documents with no tokens are left out.
    Returns ``{"source", "method": "gltr", "n_train", "n_valid", "n_test", "max_tokens", "C",
    "valid_accuracy", "test_accuracy"}`` (accuracies in percent).
    """
    require_sklearn("the gltr detector")
    from sklearn.linear_model import LogisticRegression

    def features(split: Tuple[Sequence[str], Sequence[str]]) -> Tuple[np.ndarray, np.ndarray]:
        texts, labels = labelled(*split)
        x = gltr_features(model, texts, max_tokens=max_tokens, stride=stride, prepend_eot=prepend_eot)
        ok = np.isfinite(x).all(axis=1)
        return x[ok], labels[ok]

    (tx, ty), (vx, vy), (sx, sy) = features(train), features(valid), features(test)
    for name, labels in (("train", ty), ("valid", vy), ("test", sy)):  # no-token documents left out
        require_both_classes(name, labels)
    best: Tuple[float, Any, float] = (-1.0, None, 0.0)
    for C in c_grid:
        clf = LogisticRegression(C=C, solver="liblinear").fit(tx, ty)
        acc = clf.score(vx, vy)
        if acc > best[0]:
            best = (acc, clf, C)
    clf = best[1]
    return {"source": source, "method": "gltr", "n_train": int(len(ty)), "n_valid": int(len(vy)),
            "n_test": int(len(sy)), "max_tokens": max_tokens, "C": float(best[2]),
            "valid_accuracy": float(clf.score(vx, vy) * 100.0), "test_accuracy": float(clf.score(sx, sy) * 100.0)}
