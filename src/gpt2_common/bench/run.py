"""The ``gpt2_benchmark`` command: checks the flags, writes random weights when no model is given,
runs every backend's worker in interleaved rounds, and prints the table or JSON."""
from __future__ import annotations

import importlib.util
import json as _json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

from .. import cli
from ..cli import UsageError
from . import log
from .compare import checkout_src, compare, format_comparison
from .machine import encoder_speeds, machine_info, measure_bandwidth, model_size
from .report import add_load_peaks, best_of, evaluate_targets, format_report, save_plot
from .worker import run_worker
from ..train.benchmark import format_training, training_rows

DECODE_PROMPT = 32          # prompt tokens before timed decoding


def int_list(value: Any, flag: str) -> List[int]:
    """``8``, ``"1,8"`` or fire's ``(1, 8)`` -> ``[1, 8]``; positive integers only."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        try:
            n = int(item.strip()) if isinstance(item, str) else item
        except ValueError:
            n = None
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"--{flag} must be comma-separated positive integers, got {value!r}")
        out.append(n)
    if not out:
        raise UsageError(f"--{flag} is empty")
    return out


def as_bool(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("0", "false", "no"):
        return False
    raise UsageError(f"--{flag} must be True or False, got {value!r}")


def column_settings(column: str, xla: bool) -> Dict[str, Any]:
    """A column's worker settings: ``torch-bf16`` -> backend torch, dtype bfloat16; ``tf-noxla`` ->
    XLA off (``hf`` -> backend hf)."""
    return {"backend": column.split("-")[0], "dtype": "bfloat16" if column.endswith("-bf16") else "float32",
            "xla": xla and not column.endswith("-noxla")}


def measure_training(model_dir: str, backends: List[str], shapes, bf16: bool, rounds: int, device: str, log):
    """The training rows (``gpt2_common.train.benchmark``), fp32 and with ``bf16`` bfloat16 too."""
    return training_rows(model_dir, backends, shapes, ("float32", "bfloat16") if bf16 else ("float32",),
                         rounds=rounds, device=device, log=log)


def benchmark(*, model="124M", model_dir=None, backends="tf,torch", hf=True, prefill="128,512,1024",
              decode_tokens=64, batch_sizes="1,8", repeats=2, rounds=2, threads=None, vocab_dir=None,
              json=False, plot=None, device="cpu", bf16=False, xla=True, train=False, train_batch="4,1",
              train_context="256,1024", train_rounds=3, baseline=None, baseline_rounds=10, hooks=0):
    """Measure load time, prefill and KV-cache decode throughput, peak memory of both backends (and
    Hugging Face transformers) on the same weights, against the machine's memory-bandwidth limit.

    Args:
        model: 124M (default), 355M, 774M or 1558M: random weights (scale 0.02) with that shape.
        model_dir: A model folder in the original layout (e.g. a downloaded model) instead.
        backends: Comma-separated, from tf and torch (default both).
        hf: Add the Hugging Face transformers row when it is installed (--hf False: skip it).
        prefill: Prompt lengths for prefill throughput (each <= n_ctx).
        decode_tokens: Greedy tokens generated per decode run (>= 2).
        batch_sizes: Batch sizes for decode throughput.
        repeats: Timed runs per measurement (after one warm-up); medians are reported.
        rounds: Rounds of every backend's measurements, interleaved (tf, torch, hf, tf, ...); each
            row reports its best round, so a busy spell on a shared machine does not decide a ratio.
        threads: Intra-op threads for every framework (default: each framework's own default).
        vocab_dir: Folder with encoder.json and vocab.bpe for the encoder row (default:
            $GPT2_VOCAB_DIR, else the model folder); the row is skipped when there is none.
        json: Print one JSON object on stdout instead of the table.
        plot: Save a bar chart (PNG) to this path (needs matplotlib).
        device: cpu (default), cuda or cuda:N.
        bf16: Add tf-bf16 and torch-bf16 columns (the same measurements in bfloat16).
        xla: TensorFlow's XLA decode path on (default) or off (--noxla); --xla both adds a
            tf-noxla column, interleaved with the others.
        train: Also measure training (see gpt2_common.train.benchmark): tokens/s, the update's share
            and peak memory of a fwd+bwd+AdamW step, with and without gradient checkpointing, for
            each backend and hf (with --bf16, bfloat16 mixed precision rows too); --train only gives
            the training rows alone.
        train_batch: Batches of the training rows, paired with train_context.
        train_context: Tokens per sequence of the training rows (one per train_batch).
        train_rounds: Interleaved rounds of the training rows (medians are reported).
        baseline: Another checkout of the toolkit (its root or its src/ folder, e.g. made with
            ``git worktree add DIR REV``); instead of the report, compare this checkout with it,
            prefill and decode of every column in lockstep (see gpt2_common.bench.compare).
        baseline_rounds: Rounds of the --baseline comparison (one timed run per side each).
        hooks: Also time run_with_cache of every named activation over this many tokens against
            a plain forward of them, tf and torch (0 turns it off); reports the time ratio, the
            cache size and the peak RSS rise.
    """
    from gpt2_common.hparams import MODEL_SHAPES, load_hparams

    names = [b.strip() for b in backends.split(",")] if isinstance(backends, str) else list(backends)
    for b in names:
        cli.check_backend(b)
    names = list(dict.fromkeys(names))
    prefill_T = sorted(set(int_list(prefill, "prefill")))
    batches = sorted(set(int_list(batch_sizes, "batch_sizes")))
    (n_new,), (repeats,) = int_list(decode_tokens, "decode_tokens"), int_list(repeats, "repeats")
    (rounds,) = int_list(rounds, "rounds")
    threads = None if threads is None else int_list(threads, "threads")[0]
    hf, json, device = as_bool(hf, "hf"), as_bool(json, "json"), cli.check_device(device) or "cpu"
    train_only = str(train).lower() == "only"
    train = train_only or as_bool(train, "train")
    train_batches, train_contexts = int_list(train_batch, "train_batch"), int_list(train_context, "train_context")
    if len(train_batches) != len(train_contexts):
        raise UsageError("--train_batch and --train_context need as many values each (they pair up)")
    train_shapes = list(zip(train_batches, train_contexts))
    (train_rounds,) = int_list(train_rounds, "train_rounds")
    columns = names + ([f"{b}-bf16" for b in names] if as_bool(bf16, "bf16") else [])  # bf16 columns
    xla_both = str(xla).lower() == "both"
    xla = True if xla_both else as_bool(xla, "xla")
    columns += ["tf-noxla"] if xla_both and "tf" in names else []
    if n_new < 2:
        raise UsageError("--decode_tokens must be at least 2 (the first token comes from the prefill)")
    if baseline is not None:
        baseline = checkout_src(baseline)  # its src/ folder
        (baseline_rounds,) = int_list(baseline_rounds, "baseline_rounds")
        for flag, value in (("plot", plot is not None), ("train", train)):
            if value:
                raise UsageError(f"--{flag} does not go with --baseline (a comparison has no {flag} rows)")
    if plot is not None:
        if not isinstance(plot, str) or not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
            raise UsageError(f"--plot needs a file name in an existing folder, got {plot!r}")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib (pip install matplotlib)")
    if model_dir is not None:
        model_dir = cli.check_folder("--model_dir", str(model_dir))
        hp, label = load_hparams(model_dir), os.path.basename(os.path.normpath(str(model_dir)))
    elif str(model) in MODEL_SHAPES:
        hp, label = MODEL_SHAPES[str(model)], f"{model} (random weights)"
    else:
        raise UsageError(f"unknown --model {model!r}: choose one of {', '.join(MODEL_SHAPES)} or give --model_dir")
    hooks_T = cli.check_int("hooks", hooks, 0)
    if hooks_T > hp.n_ctx:
        raise UsageError(f"--hooks {hooks_T} exceeds the model's context of {hp.n_ctx} tokens")
    if max(prefill_T) > hp.n_ctx:
        raise UsageError(f"--prefill {max(prefill_T)} exceeds the model's context of {hp.n_ctx} tokens")
    prompt = min(DECODE_PROMPT, hp.n_ctx + 1 - n_new)
    if prompt < 1:
        raise UsageError(f"--decode_tokens {n_new} exceeds the model's context of {hp.n_ctx} tokens")
    vocab = vocab_dir or os.environ.get("GPT2_VOCAB_DIR") or model_dir
    if vocab is not None and not all(os.path.isfile(os.path.join(vocab, f)) for f in cli.VOCAB_FILES):
        if vocab_dir is not None:
            raise UsageError(f"--vocab_dir {vocab_dir}: no encoder.json and vocab.bpe there")
        vocab = None
    hf = hf and importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None

    b0 = batches[0]  # fraction_of_limit: batch 1 unless not measured (the limit scales with batch)
    started, notes, tmp = time.perf_counter(), [], None
    try:
        if model_dir is None:
            from gpt2_common.weights import random_weights, save_model

            log(f"writing random {model} weights")
            tmp = tempfile.mkdtemp(prefix="gpt2-benchmark-")
            save_model(tmp, hp, random_weights(hp, seed=0, scale=0.02), vocab_dir=vocab)
        if baseline is not None:  # a lockstep comparison with another checkout instead of the report
            cols = [dict(column_settings(c, xla), name=c) for c in columns]
            try:
                res = compare(baseline, cols, os.fspath(model_dir or tmp), device, prefill_T, batches, n_new,
                              prompt, baseline_rounds, threads)
            except RuntimeError as e:  # a worker failed (its own traceback is above, on stderr)
                cli.fail(str(e), code=1)
            res["model"] = label
            print(_json.dumps(res, indent=2) if json else format_comparison(res), flush=True)
            log(f"done in {time.perf_counter() - started:.0f} s")
            return
        if train_only:
            training = measure_training(os.fspath(model_dir or tmp), names + (["hf"] if hf else []), train_shapes,
                                        as_bool(bf16, "bf16"), train_rounds, device, log)
            print(_json.dumps({"model": label, "machine": machine_info(), "training": training}, indent=2) if json
                  else f"{label}\n{format_training(training, train_rounds)}", flush=True)
            log(f"done in {time.perf_counter() - started:.0f} s")
            return
        size = model_size(hp)
        log("measuring memory bandwidth")
        bandwidth = measure_bandwidth()
        rows: Dict[str, Dict[str, Any]] = {}
        spec = {"model_dir": os.fspath(model_dir or tmp), "device": device, "prefill": prefill_T,
                "batch_sizes": batches, "decode_tokens": n_new, "decode_prompt": prompt,
                "repeats": repeats, "threads": threads, "hooks": hooks_T}
        runs: Dict[str, List[Dict[str, Any]]] = {}
        for r in range(rounds):  # interleaved, so a slow spell of a shared machine hits every row
            for b in columns + (["hf"] if hf else []):
                if r and b not in runs:
                    continue  # failed in the first round
                log(f"{b}: starting worker (round {r + 1} of {rounds})")
                try:
                    runs.setdefault(b, []).append(run_worker(dict(spec, **column_settings(b, xla))))
                except (RuntimeError, ValueError) as e:
                    notes.append(f"{b} row missing: {e}")
                    runs.pop(b, None)
            if r + 1 < rounds:
                bandwidth = max(bandwidth, measure_bandwidth())
        limit = bandwidth * 1e9 / size["bytes_per_token"]
        add_load_peaks(runs, spec["model_dir"])  # the load row's peak memory (gpt2_common.loadmem)
        for b, results in runs.items():
            rows[b] = best_of(results)
            rows[b]["fraction_of_limit"] = rows[b]["decode"][str(b0)]["tokens_per_s"] / (b0 * limit)
        if not hf:
            notes.append("hf row skipped (--hf False or transformers not installed)")
        machine = machine_info()
        machine["blas"] = "; ".join([machine["blas"]] + [r.pop("blas") for r in rows.values() if "blas" in r])
        machine["threads"] = threads or "framework defaults"
        encoder = encoder_speeds(vocab, repeats, notes)
        training = None
        if train:
            training = measure_training(os.fspath(model_dir or tmp), names + (["hf"] if hf else []), train_shapes,
                                        as_bool(bf16, "bf16"), train_rounds, device, log)
            notes.append(format_training(training, train_rounds))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    notes.append(f"decode: prompt of {prompt} random tokens, {n_new} greedy tokens; tok/s = batch * "
                 f"(steps after the first) / their time; fraction_of_limit = batch-{b0} tok/s / "
                 f"({b0} * limit)")
    if "hf" in rows:
        notes.append("hf load_s includes building GPT2LMHeadModel (random init) before load_state_dict")
    res = {"machine": machine, "model": {"name": label, **size}, "bandwidth_gbps": bandwidth,
           "limit_tokens_per_s": limit, "backends": rows, "encoder": encoder,
           "targets": evaluate_targets(rows, 1024 if 1024 in prefill_T else max(prefill_T), str(b0)),
           "prefill_lengths": prefill_T, "batch_sizes": batches, "notes": notes,
           "training": training, "total_s": time.perf_counter() - started}
    print(_json.dumps(res, indent=2) if json else format_report(res), flush=True)
    if plot is not None:
        save_plot(res, plot)
    log(f"done in {res['total_s']:.0f} s")
    if any(b not in rows for b in names):
        sys.exit(1)
