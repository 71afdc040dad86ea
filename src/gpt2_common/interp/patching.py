"""Activation-patching sweeps (framework-free): which activations carry the difference between a
clean and a corrupted prompt (Meng et al. 2022, Wang et al. 2022).

Each sweep runs the corrupted prompt with one activation taken from the clean run and reports
``(metric(patched) - metric(corrupt)) / (metric(clean) - metric(corrupt))``: 0 where the patch
changes nothing, 1 where it restores the clean behaviour entirely. ``metric`` is a function of the
logits ``[1, T, V]`` to a float, e.g. :func:`logit_diff_metric`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..hooks import HookError
from .interventions import patch

LogitsMetric = Callable[[np.ndarray], float]


def logit_diff_metric(position: int, good: int, bad: int) -> LogitsMetric:
    """``logits[:, position, good] - logits[:, position, bad]`` (mean over rows), as a float."""
    return lambda logits: float((logits[:, position, good].astype(np.float64) - logits[:, position, bad]).mean())


@dataclass
class PatchingResult:
    """A sweep's normalised scores (``scores``: ``[L, T]`` for the residual sweep, ``[L, H]`` for
    heads) with the metric on the clean and the corrupted run."""

    scores: np.ndarray
    clean: float
    corrupt: float


def _pair(model: Any, clean: Sequence[int], corrupt: Sequence[int], metric: LogitsMetric, names: Any):
    c, r = np.asarray(clean, np.int64).reshape(1, -1), np.asarray(corrupt, np.int64).reshape(1, -1)
    if c.shape != r.shape:
        raise HookError(f"clean and corrupted prompts must have the same length, got {c.shape[1]} and {r.shape[1]} tokens")
    clean_logits, cache = model.run_with_cache(c, names=names)
    m_clean, m_corrupt = metric(clean_logits), metric(model.logits(r))
    if m_clean == m_corrupt:
        raise HookError(f"the metric is the same on the clean and the corrupted prompt ({m_clean:g}): nothing to restore")
    return r, cache, m_clean, m_corrupt


def patch_residual(model: Any, clean: Sequence[int], corrupt: Sequence[int], metric: LogitsMetric,
                   positions: Optional[Sequence[int]] = None) -> PatchingResult:
    """Patch the residual stream entering each block (``blocks.{l}.hook_resid_pre``) at each
    position (or those given), one at a time: scores ``[L, T]`` (NaN at positions not swept)."""
    L = model.hparams.n_layer
    r, cache, m_clean, m_corrupt = _pair(model, clean, corrupt, metric, lambda n: n.endswith("hook_resid_pre"))
    T = r.shape[1]
    scores = np.full((L, T), np.nan)
    for l in range(L):
        for p in range(T) if positions is None else positions:
            logits = model.run_with_hooks(r, patch(model, cache, f"blocks.{l}.hook_resid_pre", positions=[p]))
            scores[l, p] = (metric(logits) - m_corrupt) / (m_clean - m_corrupt)
    return PatchingResult(scores, m_clean, m_corrupt)


def patch_heads(model: Any, clean: Sequence[int], corrupt: Sequence[int], metric: LogitsMetric,
                positions: Optional[Sequence[int]] = None) -> PatchingResult:
    """Patch each head's output (``blocks.{l}.attn.hook_z``, all positions or those given), one head
    at a time: scores ``[L, H]``."""
    hp = model.hparams
    r, cache, m_clean, m_corrupt = _pair(model, clean, corrupt, metric, lambda n: n.endswith("attn.hook_z"))
    scores = np.zeros((hp.n_layer, hp.n_head))
    for l in range(hp.n_layer):
        for h in range(hp.n_head):
            logits = model.run_with_hooks(r, patch(model, cache, f"blocks.{l}.attn.hook_z", positions=positions, heads=[h]))
            scores[l, h] = (metric(logits) - m_corrupt) / (m_clean - m_corrupt)
    return PatchingResult(scores, m_clean, m_corrupt)
