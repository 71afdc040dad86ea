"""Scoring throughput: batched vs one document at a time, measured in one run (issue 14).

    from gpt2_common import load_model
    from gpt2_common.research.throughput import scoring_throughput

    scoring_throughput(load_model("torch", "models/124M"), n_docs=16, length=128)
    # {'one_at_a_time': tokens/s, 'batched': tokens/s, 'ratio': batched / one_at_a_time, ...}

The two ways alternate over ``rounds`` and each reports its best round, so a busy spell on a shared
machine does not decide the ratio. Both give the same numbers (checked on every round).
"""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from .score import score_many, score_tokens


def scoring_throughput(model: Any, n_docs: int = 16, length: int = 128, rounds: int = 2,
                       seed: int = 0) -> Dict[str, Any]:
    """Tokens/s of :func:`score_many` over ``n_docs`` random documents of ``length`` tokens (one
    call, windows batched) against :func:`score_tokens` on each in turn."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, int(model.hparams.n_vocab) - 1, size=length).tolist() for _ in range(n_docs)]
    best = {"one_at_a_time": float("inf"), "batched": float("inf")}
    score_many(model, docs[:2])  # warm-up
    for _ in range(rounds):
        t0 = time.perf_counter()
        single = [score_tokens(model, d) for d in docs]
        t1 = time.perf_counter()
        batched = score_many(model, docs)
        t2 = time.perf_counter()
        best["one_at_a_time"] = min(best["one_at_a_time"], t1 - t0)
        best["batched"] = min(best["batched"], t2 - t1)
        if any(not np.array_equal(a.logprobs, b.logprobs) for a, b in zip(single, batched)):
            raise AssertionError("batched scoring gave other numbers than one at a time")
    tokens = n_docs * length
    out: Dict[str, Any] = {k: tokens / v for k, v in best.items()}
    out.update(ratio=best["one_at_a_time"] / best["batched"], n_docs=n_docs, length=length,
               backend=getattr(model, "backend", None))
    return out
