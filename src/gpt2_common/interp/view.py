"""The numbers of ``gpt2_inspect``: one text's attention patterns and logit lens, and every head's
induction / previous-token / duplicate-token score, gathered into one JSON-ready dict
(framework-free, on ``run_with_cache``; the same on both backends).

    from gpt2_common import load_model
    from gpt2_common.interp import view, page

    model = load_model("torch", "models/124M")
    v = view.inspect_text(model, model.encoder.encode("The cat sat on the mat. The cat"))
    v["attention"][5][1][12]      # layer 5, head 1, query 12: its attention over keys 0..12
    page.write_html("inspect.html", v)

The head scores come from :func:`gpt2_common.interp.heads.head_scores` (repeated random tokens,
not the text); the logit lens from :func:`gpt2_common.interp.lens.logit_lens`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..constants import EOT_TOKEN
from . import heads
from .lens import logit_lens

ATTENTION_DECIMALS = 6
"""Attention weights are rounded to this many decimals in the view (page and JSON alike)."""
PROB_DIGITS = 6
"""Logit-lens probabilities keep this many significant digits."""
TOP_HEADS = 3
"""Heads listed (and highlighted on the page) per score."""


def token_label(encoder: Any, token: int) -> str:
    """A token as the view shows it: its text, with a newline as ``↵``, a tab as ``⇥``, other
    control characters as ``\\xNN`` and a token of spaces only as ``·`` per space. Byte-level BPE
    splits some characters over tokens: the bytes of such a piece show as ``\\xe6\\x9d``
    (whole characters around them stay text), never as a broken character."""
    text = encoder.decode_bytes([int(token)]).decode("utf-8", errors="backslashreplace")
    if text and not text.strip(" "):
        return "\u00b7" * len(text)
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\u21b5")
        elif ch == "\t":
            out.append("\u21e5")
        elif ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 or ch in "\u2028\u2029":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _round(a: np.ndarray, decimals: int) -> Any:
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def _sig(a: np.ndarray, digits: int) -> Any:
    a = np.asarray(a, dtype=np.float64)
    return np.vectorize(lambda x: float(f"{x:.{digits}g}"), otypes=[np.float64])(a).tolist() if a.size else a.tolist()


def inspect_text(model: Any, tokens: Sequence[int], *, top_k: int = 5, repeat_length: int = 20,
                 repeat_vocab: Optional[int] = None, repeat_low: int = 0, repeat_count: int = 8,
                 repeat_bos: bool = False, seed: int = 0, encoder: Any = None,
                 about: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything ``gpt2_inspect`` shows of one text's ``tokens`` (``T <= n_ctx``), as plain
    JSON-ready values:

    * ``tokens``, ``token_labels`` (:func:`token_label`), ``n_layer``, ``n_head``;
    * ``attention``: ``[L][H][T]`` rows, row ``q`` holding the ``q + 1`` weights of query ``q``
      over keys ``0..q`` (the causal part of ``blocks.{l}.attn.hook_pattern``; rounded to
      :data:`ATTENTION_DECIMALS` decimals);
    * ``logit_lens``: ``stages`` (``embed``, ``block 0`` ...), and per stage and position the
      ``top_k`` top tokens (``top_ids``, ``top_labels``, ``top_probs``), the next token of the text
      (``target``, -1 at the last position) and its ``target_rank`` (1 = top; 0: no target) and
      ``target_prob``;
    * ``head_scores``: ``induction``, ``previous``, ``duplicate`` ``[L][H]``
      (:func:`gpt2_common.interp.heads.head_scores` on ``repeat_count`` sequences of
      ``repeat_length`` random ids from ``repeat_low .. repeat_low + repeat_vocab - 1``, repeated,
      after ``<|endoftext|>`` when ``repeat_bos``), ``top`` (the :data:`TOP_HEADS` best heads of
      each as ``[layer, head, score]``) and ``repeat`` (those settings);
    * ``about``: what the caller passes (model, backend, ...).
    """
    hp = model.hparams
    encoder = encoder or model.encoder
    t = np.asarray(tokens, dtype=np.int64).reshape(-1)
    L = hp.n_layer
    _, cache = model.run_with_cache(t[None], names=[heads.pattern_name(l) for l in range(L)])
    T = len(t)
    attention = []
    for l in range(L):
        p = np.asarray(cache[heads.pattern_name(l)])[0]  # [H, T, T]
        attention.append([[_round(p[h, q, :q + 1], ATTENTION_DECIMALS) for q in range(T)] for h in range(hp.n_head)])
    lens = logit_lens(model, t, k=top_k)
    labels: Dict[int, str] = {}

    def label(tok: int) -> str:
        if tok not in labels:
            labels[tok] = token_label(encoder, tok)
        return labels[tok]

    vocab = hp.n_vocab - repeat_low if repeat_vocab is None else repeat_vocab
    s = heads.head_scores(model, length=repeat_length, vocab=vocab, count=repeat_count, seed=seed,
                          bos=EOT_TOKEN if repeat_bos else None, low=repeat_low)
    scores = {k: _round(getattr(s, k), ATTENTION_DECIMALS) for k in heads.SCORES}
    n_top = min(TOP_HEADS, L * hp.n_head)
    top = {k: [[lh[0], lh[1], round(v, ATTENTION_DECIMALS)] for lh, v in heads.top_heads(getattr(s, k), n_top)]
           for k in heads.SCORES}
    return {
        "about": dict(about or {}),
        "n_layer": L, "n_head": hp.n_head, "n_ctx": hp.n_ctx,
        "tokens": t.tolist(),
        "token_labels": [label(int(x)) for x in t],
        "attention": attention,
        "logit_lens": {
            "stages": list(lens.stages),
            "k": top_k,
            "top_ids": lens.top_ids.tolist(),
            "top_labels": [[[label(int(x)) for x in row] for row in stage] for stage in lens.top_ids],
            "top_probs": _sig(lens.top_probs, PROB_DIGITS),
            "target": lens.targets.tolist(),
            "target_rank": lens.target_rank.tolist(),
            "target_prob": _sig(lens.target_prob, PROB_DIGITS),
        },
        "head_scores": dict(scores, top=top, repeat={
            "length": repeat_length, "vocab": vocab, "low": repeat_low, "count": repeat_count,
            "bos": bool(repeat_bos), "seed": seed}),
    }


def top_heads_line(view: Dict[str, Any]) -> List[str]:
    """One line per score naming its best heads: ``induction: L1H0 0.912, L1H1 0.204, ...``."""
    return [f"{k}: " + ", ".join(f"L{l}H{h} {v:.3f}" for l, h, v in view["head_scores"]["top"][k])
            for k in heads.SCORES]
