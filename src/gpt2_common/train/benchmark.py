"""The benchmark's training rows: tokens/s and peak memory of one forward + backward + AdamW step
for TensorFlow, PyTorch and Hugging Face (``GPT2LMHeadModel`` + ``torch.optim.AdamW``), with and
without gradient checkpointing, on the same weights and batch.

Each row runs in a fresh subprocess (``python -m gpt2_common.train.benchmark SPEC``) so its peak
memory (RSS on the CPU, the allocator's peak on a GPU) is its own. ``scripts/benchmark.py --train``
calls :func:`training_rows` and prints :func:`format_training`.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..bench.worker import gpu_peak_mb, peak_rss_mb

TARGETS = {"torch_vs_hf": 1.0, "tf_vs_torch": 0.8}


def _hf_step(spec: Dict[str, Any]):
    import torch
    import transformers

    from ..hparams import load_hparams
    from ..weights import huggingface_state, load_weights

    hp = load_hparams(spec["model_dir"])
    config, state = huggingface_state(load_weights(spec["model_dir"], hp), hp)
    dev = torch.device("cuda" if spec["device"] not in (None, "cpu") else "cpu")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    model.to(dev).train()
    if spec["memory_saving"]:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step(tokens):
        X = torch.from_numpy(tokens.astype(np.int64)).to(dev)
        loss = model(X, labels=X).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)
    return step, hp


def _native_step(spec: Dict[str, Any]):
    from .. import load_model
    from .optim import OptimConfig, step_scalars
    from .session import make_trainer

    model = load_model(spec["backend"], spec["model_dir"], device=spec["device"], trainable=True)
    cfg = OptimConfig(optimizer="adamw", learning_rate=1e-4, grad_clip=1.0, steps=1000)
    trainer = make_trainer(model, cfg, False, spec["memory_saving"])
    count = [0]

    def step(tokens):
        loss = trainer.forward_backward(tokens)
        trainer.apply(1, **step_scalars(cfg, count[0]))
        count[0] += 1
        return loss
    return step, model.hparams


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One row: ``spec`` = backend (tf, torch, hf), model_dir, device, batch, context, steps,
    memory_saving. Tokens are ``batch * (context - 1)`` predicted tokens per step (HF's labels
    cover the same positions)."""
    step, hp = (_hf_step if spec["backend"] == "hf" else _native_step)(spec)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, hp.n_vocab, (spec["batch"], spec["context"])).astype(np.int32)
               for _ in range(spec["steps"] + 1)]
    step(batches[0])  # warm-up (tracing, allocator)
    times = []
    for b in batches[1:]:
        t0 = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
    tokens = spec["batch"] * (spec["context"] - 1)
    row = {"tokens_per_s": tokens / statistics.median(times), "step_s": statistics.median(times),
           "peak_rss_mb": peak_rss_mb()}
    gpu = gpu_peak_mb(spec["backend"], spec["device"])
    if gpu is not None:
        row["gpu_peak_mb"] = gpu
    return row


def training_rows(model_dir: str, backends: List[str], batch: int = 2, context: int = 256, steps: int = 2,
                  device: Optional[str] = "cpu", log=print, timeout: float = 1800) -> Dict[str, Dict[str, Any]]:
    """Measure every backend with and without gradient checkpointing, one subprocess each."""
    rows: Dict[str, Dict[str, Any]] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")] if p))
    for backend in backends:
        for saving in (False, True):
            key = f"{backend}{' +ckpt' if saving else ''}"
            spec = dict(backend=backend, model_dir=model_dir, device=device, batch=batch, context=context,
                        steps=steps, memory_saving=saving)
            log(f"training row {key}")
            p = subprocess.run([sys.executable, "-m", "gpt2_common.train.benchmark", json.dumps(spec)],
                               capture_output=True, text=True, env=env, timeout=timeout)
            if p.returncode:
                rows[key] = {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
            else:
                rows[key] = json.loads(p.stdout.strip().splitlines()[-1])
    return rows


def format_training(rows: Dict[str, Dict[str, Any]], batch: int, context: int) -> str:
    """The training rows as a table, with the targets' ratios."""
    lines = [f"training: one fwd+bwd+AdamW step, B={batch}, T={context}",
             f"  {'row':<12} {'tok/s':>9} {'step s':>8} {'peak MB':>9}"]
    for key, r in rows.items():
        if "error" in r:
            lines.append(f"  {key:<12} error: {r['error']}")
            continue
        mem = r.get("gpu_peak_mb", r["peak_rss_mb"])
        lines.append(f"  {key:<12} {r['tokens_per_s']:>9.1f} {r['step_s']:>8.2f} {mem:>9.0f}")
    tps = {k: r.get("tokens_per_s") for k, r in rows.items()}
    if tps.get("torch") and tps.get("hf"):
        lines.append(f"  torch / hf = {tps['torch'] / tps['hf']:.2f} (target >= {TARGETS['torch_vs_hf']})")
    if tps.get("tf") and tps.get("torch"):
        lines.append(f"  tf / torch = {tps['tf'] / tps['torch']:.2f} (target >= {TARGETS['tf_vs_torch']})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
