"""Per-head induction, previous-token and duplicate-token scores on repeated random tokens
(framework-free, numpy; TransformerLens's and Olsson et al. 2022's definitions).

The model reads sequences ``[bos] + r + r`` (:func:`~gpt2_common.interp.data.repeated_random_tokens`:
``r`` is ``n`` random token ids, then the same ``n`` again). With ``o`` = 1 if there is a ``bos``
else 0, the first copy is at positions ``o .. o+n-1`` and the second at ``o+n .. o+2n-1``. From the
attention patterns ``blocks.{l}.attn.hook_pattern`` ``[B, H, T, S]`` (query t, key s):

* **induction score**: the mean attention from each position ``i`` of the second copy to
  ``i - n + 1``, the token that followed the earlier occurrence of the token at ``i`` (what an
  induction head reads, to predict it comes next again);
* **duplicate-token score**: the mean attention from ``i`` in the second copy to ``i - n``, the
  earlier occurrence of the same token;
* **previous-token score**: the mean attention from every position ``i >= 1`` to ``i - 1``.

Each score is a mean attention weight, in 0..1, one per head: an ``[n_layer, n_head]`` array.

    from gpt2_common import load_model
    from gpt2_common.interp import heads

    model = load_model("torch", "checkpoint/induction")
    s = heads.head_scores(model, length=16, vocab=64)
    s.induction                      # float64 [n_layer, n_head]
    heads.top_heads(s.induction, 3)  # [((layer, head), score), ...], best first
    heads.repeated_losses(model, s.tokens, 16)  # (first copy's loss, second copy's loss)
    print(heads.induction_report(model, length=16, vocab=64).text())  # + each head zero-ablated
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .data import repeated_random_tokens

SCORES = ("induction", "previous", "duplicate")
"""The three per-head scores, by their field name in :class:`HeadScores`."""


def pattern_name(layer: int) -> str:
    """The activation name of block ``layer``'s attention pattern."""
    return f"blocks.{layer}.attn.hook_pattern"


@dataclass
class HeadScores:
    """Per-head scores, each float64 ``[n_layer, n_head]``, and the tokens they were measured on
    (int32 ``[B, T]``) with the repeat ``length`` and ``offset`` (1 with a bos token, else 0)."""

    induction: np.ndarray
    previous: np.ndarray
    duplicate: np.ndarray
    tokens: np.ndarray
    length: int
    offset: int

    def table(self, digits: int = 3) -> str:
        """The three scores of every head as a text table (one row per head)."""
        rows = [f"{'head':>6} {'induction':>10} {'previous':>10} {'duplicate':>10}"]
        L, H = self.induction.shape
        for l in range(L):
            for h in range(H):
                rows.append(f"{l:>4}.{h:<1} " + " ".join(f"{getattr(self, k)[l, h]:>10.{digits}f}" for k in SCORES))
        return "\n".join(rows)


def _check_layout(T: int, length: int, offset: int) -> None:
    if length < 1 or offset < 0:
        raise ValueError(f"length must be >= 1 and offset >= 0, got {length}, {offset}")
    if offset + 2 * length > T:
        raise ValueError(f"{T} positions hold no two copies of {length} tokens after {offset} "
                         f"(need {offset + 2 * length})")


def scores_from_patterns(patterns: np.ndarray, length: int, offset: int = 0) -> Dict[str, np.ndarray]:
    """The three scores of attention ``patterns`` ``[L, B, H, T, S]`` (or one layer's
    ``[B, H, T, S]``, giving ``[H]`` arrays) over sequences ``[bos] + r + r``, ``len(r) == length``,
    ``offset`` 1 with a bos token first, else 0. Returns ``{"induction", "previous", "duplicate"}``
    float64 arrays ``[L, H]``."""
    p = np.asarray(patterns, dtype=np.float64)
    if p.ndim not in (4, 5):
        raise ValueError(f"patterns must be [L, B, H, T, S] or [B, H, T, S], got shape {list(p.shape)}")
    T = p.shape[-2]
    _check_layout(T, length, offset)
    second = np.arange(offset + length, offset + 2 * length)  # queries in the second copy
    every = np.arange(1, T)
    score = lambda q, k: p[..., q, k].mean(axis=(-3, -1))  # noqa: E731  [(L,) B, H, queries]: mean over B, queries
    return {"induction": score(second, second - length + 1),
            "previous": score(every, every - 1),
            "duplicate": score(second, second - length)}


def collect_patterns(model: Any, tokens: np.ndarray) -> np.ndarray:
    """Every layer's attention pattern of ``tokens`` ``[B, T]`` through ``model.run_with_cache``:
    float32 ``[L, B, H, T, S]``."""
    L = model.hparams.n_layer
    _, cache = model.run_with_cache(tokens, names=[pattern_name(l) for l in range(L)])
    return np.stack([np.asarray(cache[pattern_name(l)]) for l in range(L)])


def head_scores(model: Any, length: int = 16, vocab: int = 64, count: int = 32, seed: int = 0,
                bos: Optional[int] = None, low: int = 0) -> HeadScores:
    """Induction, previous-token and duplicate-token scores of every head of ``model`` (what
    ``load_model`` returns, either backend) on ``count`` sequences ``[bos] + r + r`` of
    ``repeated_random_tokens(count, length, vocab, seed, bos, low)``."""
    tokens = repeated_random_tokens(count, length, vocab, seed=seed, bos=bos, low=low)
    if tokens.shape[1] > model.hparams.n_ctx:
        raise ValueError(f"{tokens.shape[1]} tokens exceed the model's n_ctx {model.hparams.n_ctx}: "
                         f"use a length up to {(model.hparams.n_ctx - (bos is not None)) // 2}")
    offset = 0 if bos is None else 1
    s = scores_from_patterns(collect_patterns(model, tokens), length, offset)
    return HeadScores(s["induction"], s["previous"], s["duplicate"], tokens, length, offset)


def top_heads(scores: np.ndarray, k: int = 1) -> List[Tuple[Tuple[int, int], float]]:
    """The ``k`` heads with the highest ``scores`` ``[L, H]``: ``[((layer, head), score), ...]``,
    best first (ties: lower layer, then lower head first)."""
    s = np.asarray(scores)
    order = np.argsort(-s, axis=None, kind="stable")[:k]
    return [((int(i // s.shape[1]), int(i % s.shape[1])), float(s.flat[i])) for i in order]


def token_losses(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Next-token cross-entropy (natural log, float64) ``[B, T-1]``: entry ``t`` is the loss of
    ``tokens[:, t+1]`` under ``logits[:, t]``."""
    x = np.asarray(logits, dtype=np.float64)[:, :-1]
    m = x.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(x - m).sum(-1))
    return lse - np.take_along_axis(x, np.asarray(tokens)[:, 1:, None].astype(np.int64), -1)[..., 0]


def split_losses(losses: np.ndarray, length: int, offset: int = 0) -> Tuple[float, float]:
    """Mean loss of the first copy and of the second (repeated) copy, from :func:`token_losses`
    ``[B, T-1]`` of sequences ``[bos] + r + r``. Each copy's first token is left out (nothing
    before it tells what it is): the first copy's mean is over its tokens 2..n, the second's over
    its tokens 2..n, which an induction head can predict."""
    _check_layout(losses.shape[1] + 1, length, offset)
    first = losses[:, offset:offset + length - 1]  # predicting r[1..n-1] of the first copy
    second = losses[:, offset + length:offset + 2 * length - 1]  # predicting r[1..n-1] again
    return float(first.mean()), float(second.mean())


def repeated_losses(model: Any, tokens: np.ndarray, length: int, offset: int = 0,
                    hooks: Optional[Mapping[str, Callable]] = None) -> Tuple[float, float]:
    """``(first copy's loss, repeated copy's loss)`` of ``model`` on ``tokens`` ``[bos] + r + r``
    (see :func:`split_losses`), with ``hooks`` (e.g. ``interventions.ablate_heads``) run through
    ``model.run_with_hooks`` when given."""
    logits = model.logits(tokens) if not hooks else model.run_with_hooks(tokens, hooks=hooks)
    return split_losses(token_losses(logits, tokens), length, offset)


def induction_heads(scores: np.ndarray, fraction: float = 0.5) -> List[Tuple[int, int]]:
    """The heads whose induction ``scores`` ``[L, H]`` reach ``fraction`` of the best head's,
    best first: the heads a known-answer check ablates."""
    s = np.asarray(scores)
    return [h for h, v in top_heads(s, s.size) if v >= fraction * s.max()]


@dataclass
class InductionReport:
    """What :func:`induction_report` measured: the copies' losses, the per-head scores, each head's
    repeated-copy loss when it alone is zero-ablated (``[L, H]``), the induction heads and the
    losses with all of them zero-ablated together."""

    first: float
    repeated: float
    scores: HeadScores
    ablated_each: np.ndarray
    heads: List[Tuple[int, int]]
    ablated: Tuple[float, float]

    def text(self) -> str:
        """The report as text: losses, then one row per head."""
        s = self.scores
        lines = [f"first copy loss {self.first:.3f} (ln vocab = uniform), repeated copy loss {self.repeated:.3f}",
                 f"{'head':>6} {'induction':>10} {'previous':>10} {'duplicate':>10} {'ablated: repeated loss':>23}"]
        L, H = s.induction.shape
        for l in range(L):
            for h in range(H):
                lines.append(f"{l:>4}.{h:<1} {s.induction[l, h]:>10.3f} {s.previous[l, h]:>10.3f} "
                             f"{s.duplicate[l, h]:>10.3f} {self.ablated_each[l, h]:>23.3f}")
        names = ", ".join(f"{l}.{h}" for l, h in self.heads)
        lines.append(f"induction heads {names} ablated together: first copy loss {self.ablated[0]:.3f}, "
                     f"repeated copy loss {self.ablated[1]:.3f}")
        return "\n".join(lines)


def induction_report(model: Any, length: int = 16, vocab: int = 64, count: int = 64, seed: int = 99,
                     bos: Optional[int] = None, low: int = 0, fraction: float = 0.5) -> InductionReport:
    """The known-answer check of a model trained on repeated random tokens: on ``count`` fresh
    sequences ``[bos] + r + r`` (see :func:`head_scores`), the first and repeated copy's losses,
    every head's scores, each head's zero-ablation, and the induction heads (:func:`induction_heads`
    with ``fraction``) zero-ablated together (``interventions.ablate_heads``)."""
    from .interventions import ablate_heads

    s = head_scores(model, length, vocab, count, seed, bos, low)
    first, repeated = repeated_losses(model, s.tokens, length, s.offset)
    L, H = s.induction.shape
    each = np.array([[repeated_losses(model, s.tokens, length, s.offset, ablate_heads(model, [(l, h)]))[1]
                      for h in range(H)] for l in range(L)])
    top = induction_heads(s.induction, fraction)
    ablated = repeated_losses(model, s.tokens, length, s.offset, ablate_heads(model, top))
    return InductionReport(first, repeated, s, each, top, ablated)
