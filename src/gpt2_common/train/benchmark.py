"""The benchmark's training rows: tokens/s, the update's share of a step and peak memory of one
forward + backward + AdamW step for TensorFlow, PyTorch and Hugging Face (``GPT2LMHeadModel`` +
``torch.optim.AdamW``, bfloat16 under ``torch.autocast``), with and without gradient
checkpointing, on the same weights and batches.

Each measurement runs in a fresh subprocess (``python -m gpt2_common.train.benchmark SPEC``) so
its peak memory (RSS on the CPU, the allocator's peak on a GPU) is its own. The rows are measured
in interleaved rounds (every row once per round, in turn), so a busy spell of a shared machine
hits all of them; a row reports the median over rounds of its median step. ``scripts/benchmark.py
--train`` calls :func:`training_rows` and prints :func:`format_training`.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bench.worker import gpu_peak_mb, peak_rss_mb

# tokens/s against Hugging Face's (same dtype, no checkpointing); step time with checkpointing
# against without (same backend and dtype): at most
TARGETS = {"torch_vs_hf": 1.2, "tf_vs_hf": 1.0, "ckpt_step_ratio": 1.4}


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
    mixed = spec["dtype"] != "float32"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(tokens):
        X = torch.from_numpy(tokens.astype(np.int64)).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if mixed else contextlib.nullcontext():
            loss = model(X, labels=X).loss
        loss.backward()
        sync()
        t0 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return float(loss), time.perf_counter() - t0
    return step, hp


def _native_step(spec: Dict[str, Any]):
    from .. import load_model
    from .optim import OptimConfig, step_scalars
    from .session import make_trainer

    model = load_model(spec["backend"], spec["model_dir"], device=spec["device"], trainable=True)
    cfg = OptimConfig(optimizer="adamw", learning_rate=1e-4, grad_clip=1.0, steps=1000)
    trainer = make_trainer(model, cfg, False, spec["memory_saving"], dtype=spec["dtype"])
    count = [0]

    def step(tokens):
        loss = trainer.forward_backward(tokens)
        t0 = time.perf_counter()
        trainer.apply(1, **step_scalars(cfg, count[0]))
        count[0] += 1
        return loss, time.perf_counter() - t0
    return step, model.hparams


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One measurement: ``spec`` = backend (tf, torch, hf), model_dir, device, dtype, batch,
    context, steps, memory_saving. A step predicts ``batch * (context - 1)`` tokens (HF's labels
    cover the same positions); one warm-up step first (tracing, allocator)."""
    step, hp = (_hf_step if spec["backend"] == "hf" else _native_step)(spec)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, hp.n_vocab, (spec["batch"], spec["context"])).astype(np.int32)
               for _ in range(spec["steps"] + 1)]
    step(batches[0])
    times, updates = [], []
    for b in batches[1:]:
        t0 = time.perf_counter()
        _, update = step(b)
        times.append(time.perf_counter() - t0)
        updates.append(update)
    row = {"step_s": statistics.median(times), "update_s": statistics.median(updates), "peak_rss_mb": peak_rss_mb()}
    gpu = gpu_peak_mb(spec["backend"], spec["device"])
    if gpu is not None:
        row["gpu_peak_mb"] = gpu
    return row


def row_name(backend: str, dtype: str, memory_saving: bool) -> str:
    """``torch``, ``tf bf16``, ``hf +ckpt``, ..."""
    return backend + (" bf16" if dtype != "float32" else "") + (" +ckpt" if memory_saving else "")


def training_rows(model_dir: str, backends: List[str], shapes: Sequence[Tuple[int, int]] = ((4, 256), (1, 1024)),
                  dtypes: Sequence[str] = ("float32",), steps: int = 2, rounds: int = 3,
                  device: Optional[str] = "cpu", log=print, timeout: float = 1800) -> Dict[str, Dict[str, Any]]:
    """``{"B=4 T=256": {row: {tokens_per_s, step_s, update_share, peak_rss_mb, ...}}}``: every
    backend, dtype, with and without gradient checkpointing, at each ``(batch, context)``; one
    subprocess per measurement, ``rounds`` interleaved rounds of ``steps`` timed steps each."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")] if p))
    runs: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    errors: Dict[Tuple[str, str], str] = {}
    for r in range(rounds):
        for batch, context in shapes:
            shape = f"B={batch} T={context}"
            for dtype in dtypes:
                for backend in backends:
                    for saving in (False, True):
                        key = (shape, row_name(backend, dtype, saving))
                        if key in errors:
                            continue
                        spec = dict(backend=backend, model_dir=model_dir, device=device, dtype=dtype, batch=batch,
                                    context=context, steps=steps, memory_saving=saving)
                        log(f"training {key[0]} {key[1]} (round {r + 1} of {rounds})")
                        p = subprocess.run([sys.executable, "-m", "gpt2_common.train.benchmark", json.dumps(spec)],
                                           capture_output=True, text=True, env=env, timeout=timeout)
                        if p.returncode:
                            errors[key] = (p.stderr.strip().splitlines() or ["failed"])[-1]
                            runs.pop(key, None)
                        else:
                            runs.setdefault(key, []).append(json.loads(p.stdout.strip().splitlines()[-1]))
    out: Dict[str, Dict[str, Any]] = {}
    for batch, context in shapes:
        shape = f"B={batch} T={context}"
        rows = out.setdefault(shape, {})
        for dtype in dtypes:
            for backend in backends:
                for saving in (False, True):
                    name = row_name(backend, dtype, saving)
                    if (shape, name) in errors:
                        rows[name] = {"error": errors[shape, name]}
                        continue
                    results = runs[shape, name]
                    step_s = statistics.median(x["step_s"] for x in results)
                    rows[name] = {"tokens_per_s": batch * (context - 1) / step_s, "step_s": step_s,
                                  "update_share": statistics.median(x["update_s"] for x in results) / step_s,
                                  "peak_rss_mb": max(x["peak_rss_mb"] for x in results), "rounds": len(results)}
                    if "gpu_peak_mb" in results[0]:
                        rows[name]["gpu_peak_mb"] = max(x["gpu_peak_mb"] for x in results)
    return out


def ratios(rows: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    """``{"torch / hf": x, "tf bf16 / hf bf16": y, "torch +ckpt step / torch step": z, ...}`` of
    one shape's rows, where both rows were measured."""
    tps = {k: r["tokens_per_s"] for k, r in rows.items() if "tokens_per_s" in r}
    out = {}
    for name in tps:
        base, _, _ = name.partition(" +ckpt")
        backend, _, dtype = base.partition(" ")
        hf = "hf" + (f" {dtype}" if dtype else "")
        if name.endswith(" +ckpt") and base in tps:
            out[f"{name} step / {base} step"] = tps[base] / tps[name]
        elif backend != "hf" and not name.endswith(" +ckpt") and hf in tps:
            out[f"{name} / {hf}"] = tps[name] / tps[hf]
    return out


def format_training(rows: Dict[str, Dict[str, Dict[str, Any]]], rounds: int) -> str:
    """The training rows as tables (one per shape), with the targets' ratios."""
    lines = [f"training: one fwd+bwd+AdamW step, median of {rounds} interleaved rounds; update = "
             "the optimizer step's share of it"]
    for shape, table in rows.items():
        lines += [f" {shape}", f"  {'row':<16} {'tok/s':>9} {'step s':>8} {'update':>7} {'peak MB':>9}"]
        for key, r in table.items():
            if "error" in r:
                lines.append(f"  {key:<16} error: {r['error']}")
                continue
            mem = r.get("gpu_peak_mb", r["peak_rss_mb"])
            lines.append(f"  {key:<16} {r['tokens_per_s']:>9.1f} {r['step_s']:>8.2f} {r['update_share']:>6.1%} "
                         f"{mem:>9.0f}")
        for what, x in ratios(table).items():
            target = (f"<= {TARGETS['ckpt_step_ratio']}" if "step /" in what else
                      f">= {TARGETS['torch_vs_hf' if what.startswith('torch') else 'tf_vs_hf']}")
            lines.append(f"  {what} = {x:.2f} (target {target})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
