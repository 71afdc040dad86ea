"""The benchmark behind ``gpt2_benchmark`` (``scripts/benchmark.py`` is its command line).

    gpt2_benchmark                                  # 124M shapes, random weights, tf + torch + hf
    gpt2_benchmark --model 355M --batch_sizes 1 --json
    python scripts/benchmark.py --model_dir models/124M --plot bench.png

Each backend runs in a fresh interpreter (``python -m gpt2_common.bench.worker SPEC``) so that its
peak RSS is its own. Measured per backend: load time; prefill throughput (``_prefill`` on one
random prompt of T tokens: KV cache + last-position logits); greedy decode with the KV cache
(``generate(temperature=0)``, a timestamp per step through its callback or HF's streamer). Also:
the machine's memory read bandwidth (a multi-threaded float32 GEMV over 512 MiB, best of 10) and the
batch-1 decode limit it implies, ``bandwidth / (4 bytes * (n_params - n_ctx * n_embd))`` (every fp32
weight but the position table is read once per token; KV-cache reads are ignored), and the BPE
encoder's throughput next to tiktoken's built from the same vocabulary files.

Modules: :mod:`.run` (the command: flags, rounds, the result), :mod:`.worker` (one backend's
measurements, in its own process), :mod:`.machine` (machine facts, bandwidth limit, encoder speed),
:mod:`.report` (best round, targets, table, plot), :mod:`.compare` (``--baseline``: this checkout
against another, in lockstep) with ``live_worker.py`` (run as a file in each of its processes).
"""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout stays a clean table or JSON document."""
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)
