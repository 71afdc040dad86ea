"""Scalar metrics of the logits, for ``model.activation_gradients`` (framework-free).

A :class:`Metric` is a linear function of chosen logits plus a weighted sum of log-sum-exps,

    value = sum_i coef[i] * logits[rows[i], positions[i], tokens[i]] + sum_{b,t} lse[b, t] * logsumexp(logits[b, t])

which covers the next-token loss (``-logit[target] + logsumexp``, averaged), a log-probability and
a logit difference between two tokens. Each backend evaluates it with its own ops (and autodiff);
:meth:`Metric.value` is the numpy reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..hooks import HookError


@dataclass
class Metric:
    """``sum(coef * logits[rows, positions, tokens]) + sum(lse * logsumexp(logits, -1))``;
    ``rows``, ``positions``, ``tokens`` int64 ``[N]``, ``coef`` float32 ``[N]``, ``lse`` float32
    ``[B, T]`` or None (no log-sum-exp term)."""

    rows: np.ndarray
    positions: np.ndarray
    tokens: np.ndarray
    coef: np.ndarray
    lse: Optional[np.ndarray] = None

    def value(self, logits: np.ndarray) -> float:
        """The metric of numpy ``logits [B, T, V]`` (float64 arithmetic)."""
        x = logits.astype(np.float64)
        v = float((x[self.rows, self.positions, self.tokens] * self.coef).sum())
        if self.lse is not None:
            m = x.max(-1, keepdims=True)
            v += float((self.lse * (m[..., 0] + np.log(np.exp(x - m).sum(-1)))).sum())
        return v


MetricSpec = Union[str, Metric, Callable[[np.ndarray, Optional[np.ndarray]], Metric]]


def loss_metric(tokens: np.ndarray, mask: Optional[np.ndarray]) -> Metric:
    """The mean next-token cross-entropy (natural log) over positions whose token and next token are
    real (``mask`` 1; all with no mask): the logits at position t predict ``tokens[:, t + 1]``."""
    B, T = tokens.shape
    if T < 2:
        raise HookError("the loss needs at least 2 tokens per row")
    valid = np.ones((B, T - 1), bool) if mask is None else (mask[:, :-1] > 0) & (mask[:, 1:] > 0)
    rows, positions = np.nonzero(valid)
    n = len(rows)
    lse = np.zeros((B, T), np.float32)
    lse[rows, positions] = 1.0 / n
    return Metric(rows.astype(np.int64), positions.astype(np.int64), tokens[rows, positions + 1].astype(np.int64),
                  np.full(n, -1.0 / n, np.float32), lse)


def logit_diff(position: int, good: Union[int, Sequence[int]], bad: Union[int, Sequence[int]]
               ) -> Callable[[np.ndarray, Optional[np.ndarray]], Metric]:
    """A metric factory: ``logits[:, position, good] - logits[:, position, bad]``, averaged over
    the rows (``good``/``bad``: one token id, or one per row; ``position`` may be negative)."""
    def build(tokens: np.ndarray, mask: Optional[np.ndarray]) -> Metric:
        B, T = tokens.shape
        if not -T <= position < T:
            raise HookError(f"position {position} is outside the {T} positions")
        g, b = (np.broadcast_to(np.asarray(x, np.int64), (B,)) for x in (good, bad))
        rows = np.arange(B, dtype=np.int64)
        pos = np.full(B, position % T, np.int64)
        return Metric(np.concatenate([rows, rows]), np.concatenate([pos, pos]), np.concatenate([g, b]),
                      np.concatenate([np.full(B, 1.0 / B), np.full(B, -1.0 / B)]).astype(np.float32))
    return build


def resolve_metric(metric: MetricSpec, tokens: np.ndarray, mask: Optional[np.ndarray], n_vocab: int) -> Metric:
    """``metric`` (``"loss"``, a :class:`Metric`, or a factory ``fn(tokens, mask) -> Metric``) as a
    :class:`Metric` for these tokens, its token ids checked against the vocabulary."""
    if metric == "loss":
        m = loss_metric(tokens, mask)
    elif isinstance(metric, Metric):
        m = metric
    elif callable(metric):
        m = metric(tokens, mask)
    else:
        raise HookError(f"unknown metric {metric!r}: use 'loss' or a Metric (e.g. logit_diff(position, good, bad))")
    if not isinstance(m, Metric):
        raise HookError(f"a metric factory returned {type(m).__name__}, not a Metric")
    if m.tokens.size and (m.tokens.min() < 0 or m.tokens.max() >= n_vocab):
        raise HookError(f"metric token ids must be in [0, {n_vocab})")
    B, T = tokens.shape
    if m.rows.size and (m.rows.min() < 0 or m.rows.max() >= B or m.positions.min() < 0 or m.positions.max() >= T):
        raise HookError(f"metric rows/positions outside the [{B}, {T}] tokens")
    return m
