"""The sampling rules both backends share.

A backend computes next-token logits ``[B, V]`` in its framework; the choice of the next token is
made here, in numpy, from one seeded source. So the two backends pick the same token whenever
their logits agree to within float noise, and "same seed, same text" holds across frameworks.

Rules (as the original ``sample.py`` unless noted):
* temperature divides the logits first; ``temperature == 0`` means greedy (the original divided by 0);
* top-k keeps every token whose logit is >= the k-th largest (ties are kept); ``top_k == 0`` is off;
* top-p ("original"): after top-k, keep the tokens whose *inclusive* cumulative probability, in
  descending order, is <= p, at least one; ties with the last kept logit are kept.
  top-p ("holtzman", as Hugging Face): keep the smallest prefix whose cumulative probability reaches p;
* the draw: row ``i`` of a batch uses its own generator, ``numpy.random.default_rng([seed, i])``
  (or ``[seed_i, 0]`` when a list of per-row seeds is given), one uniform per step, inverted through
  the cumulative distribution in vocabulary order. A prompt sampled alone with seed ``s`` therefore
  gives the same tokens as the same prompt in row ``i`` of a batch given ``seed[i] = s``.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from .constants import TOP_P_MODES, TOP_P_ORIGINAL
Seed = Union[None, int, Sequence[int]]


class SamplingError(ValueError):
    """Invalid sampling arguments."""


def validate_args(length: int, temperature: float, top_k: int, top_p: float,
                  batch_size: int = 1, top_p_mode: str = TOP_P_ORIGINAL) -> None:
    """Raise :class:`SamplingError` (one line) for arguments no sampler accepts."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise SamplingError(f"length must be a non-negative integer, got {length!r}")
    if not isinstance(temperature, (int, float, np.floating)) or not np.isfinite(temperature) \
            or temperature < 0:
        raise SamplingError(f"temperature must be >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise SamplingError(f"top_k must be a non-negative integer (0 = off), got {top_k!r}")
    if not isinstance(top_p, (int, float, np.floating)) or not 0.0 < top_p <= 1.0:
        raise SamplingError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SamplingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if top_p_mode not in TOP_P_MODES:
        raise SamplingError(f"top_p_mode must be one of {TOP_P_MODES}, got {top_p_mode!r}")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def filter_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  top_p_mode: str = TOP_P_ORIGINAL) -> np.ndarray:
    """Temperature, then top-k, then top-p: float64 logits ``[B, V]`` with dropped tokens at -inf."""
    x = np.asarray(logits, dtype=np.float64) / (temperature if temperature > 0 else 1.0)
    x = np.atleast_2d(x)
    V = x.shape[-1]
    keep = np.ones(x.shape, dtype=bool)
    if 0 < top_k < V:
        kth = np.partition(x, V - top_k, axis=-1)[:, V - top_k : V - top_k + 1]  # k-th largest
        keep &= x >= kth
    if top_p < 1.0:
        for r in range(x.shape[0]):
            idx = np.flatnonzero(keep[r])
            vals = x[r, idx]
            order = np.argsort(-vals, kind="stable")
            sorted_vals = vals[order]
            probs = _softmax(sorted_vals)
            cum = np.cumsum(probs)
            if top_p_mode == TOP_P_ORIGINAL:
                n = max(int(np.sum(cum <= top_p)), 1)
            else:  # smallest set whose probability reaches p
                n = min(int(np.searchsorted(cum, top_p, side="left")) + 1, len(cum))
            keep[r] &= x[r] >= sorted_vals[n - 1]
    return np.where(keep, x, -np.inf)


def row_generators(batch_size: int, seed: Seed) -> list:
    """One numpy Generator per batch row (see the module docstring)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [np.random.default_rng([int(seed), i]) for i in range(batch_size)]
    seeds = list(seed)
    if len(seeds) != batch_size:
        raise SamplingError(f"got {len(seeds)} seeds for a batch of {batch_size}")
    return [np.random.default_rng([int(s), 0]) for s in seeds]


class Sampler:
    """Chooses next tokens from ``[B, V]`` logits; deterministic given the seed."""

    def __init__(self, batch_size: int, seed: Seed = None, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, top_p_mode: str = TOP_P_ORIGINAL) -> None:
        validate_args(0, temperature, top_k, top_p, batch_size, top_p_mode)
        self.temperature, self.top_k, self.top_p, self.top_p_mode = temperature, top_k, top_p, top_p_mode
        self.rngs = row_generators(batch_size, seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Next token ids ``[B]`` (int64) for float logits ``[B, V]``."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != len(self.rngs):
            raise SamplingError(f"expected logits [{len(self.rngs)}, V], got {logits.shape}")
        if self.greedy:
            return np.argmax(logits, axis=-1).astype(np.int64)
        filtered = filter_logits(logits, self.temperature, self.top_k, self.top_p, self.top_p_mode)
        out = np.empty(logits.shape[0], dtype=np.int64)
        for r, rng in enumerate(self.rngs):
            cum = np.cumsum(np.exp(filtered[r] - filtered[r].max()))
            u = rng.random() * cum[-1]
            out[r] = min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)
        return out


def probabilities(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  top_p_mode: str = TOP_P_ORIGINAL) -> np.ndarray:
    """The distribution the sampler draws from, ``[B, V]`` float64 (for tests and analysis)."""
    return _softmax(filter_logits(logits, temperature, top_k, top_p, top_p_mode))
