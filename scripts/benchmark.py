#!/usr/bin/env python3
"""Benchmark both backends (and Hugging Face transformers as a peer) on the same GPT-2 weights.

    gpt2_benchmark                                  # 124M shapes, random weights, tf + torch + hf
    gpt2_benchmark --model 355M --batch_sizes 1 --json
    python scripts/benchmark.py --model_dir models/124M --plot bench.png

Each backend runs in a fresh subprocess of this script (hidden ``--_worker`` flag) so that its
peak RSS is its own. Measured per backend: load time; prefill throughput (``_prefill`` on one
random prompt of T tokens: KV cache + last-position logits); greedy decode with the KV cache
(``generate(temperature=0)``, a timestamp per step through its callback or HF's streamer). Also:
the machine's memory read bandwidth (a multi-threaded float32 GEMV over 512 MiB, best of 10) and the
batch-1 decode limit it implies, ``bandwidth / (4 bytes * (n_params - n_ctx * n_embd))`` (every fp32
weight but the position table is read once per token; KV-cache reads are ignored), and the BPE
encoder's throughput next to tiktoken's built from the same vocabulary files.
"""
from __future__ import annotations

import importlib.util
import json as _json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402

from gpt2_common.cli import UsageError

DECODE_PROMPT = 32          # prompt tokens before timed decoding
BANDWIDTH_BYTES = 512 << 20
ENCODER_TEXT_BYTES = 300_000
TARGETS = {"torch_decode_vs_hf": 1.8, "tf_decode_vs_torch": 0.9, "decode_vs_limit": 0.75,
           "prefill_vs_hf": 1.0}


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout stays a clean table or JSON document."""
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Worker: one backend, in its own process
# ------------------------------------------------------------------------------------------------

def decode_stats(stamps_of_run: Callable[[], List[float]], batch: int, repeats: int) -> Dict[str, float]:
    """Time greedy generation: ``stamps_of_run()`` returns one timestamp per new token. The first
    step (prefill) and a warm-up run are excluded; medians over ``repeats`` runs."""
    stamps_of_run()
    rates, p50s, p90s = [], [], []
    for _ in range(repeats):
        ts = stamps_of_run()
        steps = [b - a for a, b in zip(ts, ts[1:])]
        rates.append(batch * len(steps) / (ts[-1] - ts[0]))
        q = statistics.quantiles(steps, n=10, method="inclusive") if len(steps) > 1 else steps * 9
        p50s.append(1e3 * statistics.median(steps))
        p90s.append(1e3 * q[8])
    return {"tokens_per_s": statistics.median(rates), "p50_ms": statistics.median(p50s),
            "p90_ms": statistics.median(p90s)}


def timed_median(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per call of ``fn``: one warm-up call, then the median of ``repeats``."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


Measure = Tuple[int, Callable[[Any], None], Callable[[Any, int], List[float]]]


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one backend (``tf``, ``torch`` or ``hf``) as ``spec`` says; returns its row."""
    import numpy as np

    if spec["threads"]:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(spec["threads"])
    if "xla" in spec:  # the TF backend's XLA decode path (gpt2_tf.backend), on or off
        os.environ["GPT2_TF_XLA"] = "1" if spec["xla"] else "0"
    backend, repeats = spec["backend"], spec["repeats"]
    row: Dict[str, Any] = {"prefill": {}, "decode": {}}
    n_vocab, prefill, generate = (_hf_measure if backend == "hf" else _native_measure)(spec, row)
    rng = np.random.default_rng(0)
    t = time.perf_counter()  # the first call: tracing (and XLA compiling) a prefill and a decode step
    generate(rng.integers(0, n_vocab, size=(1, 8), dtype=np.int32), 2)
    row["first_s"] = row["load_s"] + time.perf_counter() - t
    for T in spec["prefill"]:
        log(f"{backend}: prefill T={T}")
        tokens = rng.integers(0, n_vocab, size=(1, T), dtype=np.int32)
        row["prefill"][str(T)] = T / timed_median(lambda: prefill(tokens), repeats)
    for B in spec["batch_sizes"]:
        log(f"{backend}: decode batch {B}, {spec['decode_tokens']} tokens")
        ctx = rng.integers(0, n_vocab, size=(B, spec["decode_prompt"]), dtype=np.int32)
        row["decode"][str(B)] = decode_stats(lambda: generate(ctx, spec["decode_tokens"]), B, repeats)
    row["peak_rss_mb"] = peak_rss_mb()
    gpu = _gpu_peak_mb(backend, spec["device"])
    if gpu is not None:
        row["gpu_peak_mb"] = gpu
    return row


def _native_measure(spec: Dict[str, Any], row: Dict[str, Any]) -> Measure:
    """Load the checkpoint with ``load_model``; returns (n_vocab, prefill, generate)."""
    import numpy as np

    if spec["backend"] == "tf":
        import tensorflow as tf

        if spec["threads"]:
            tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])  # inter-op: 1 (gpt2_tf)
        row["version"], row["blas"] = f"tensorflow {tf.__version__}", "tf: Eigen + oneDNN"
        if spec.get("xla", True) and spec["device"] == "cpu":
            row["blas"] += " (decode steps: XLA)"
    else:
        import torch

        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        row["version"] = f"torch {torch.__version__}"
        row["blas"] = (f"torch: {torch.get_num_threads()} threads, MKL={torch.backends.mkl.is_available()}, "
                       f"oneDNN={torch.backends.mkldnn.is_available()}")
    from gpt2_common.interface import load_model

    t = time.perf_counter()
    model = load_model(spec["backend"], spec["model_dir"], device=spec["device"], dtype=spec.get("dtype", "float32"))
    row["load_s"] = time.perf_counter() - t

    def prefill(tokens: Any) -> None:  # the KV cache and the last position's logits
        model._prefill(tokens, np.ones_like(tokens))

    def generate(ctx: Any, n: int) -> List[float]:
        stamps: List[float] = []
        model.generate(ctx, n, temperature=0, callback=lambda step, new: stamps.append(time.perf_counter()))
        return stamps

    return model.hparams.n_vocab, prefill, generate


def _hf_measure(spec: Dict[str, Any], row: Dict[str, Any]) -> Measure:
    """Build transformers' GPT2LMHeadModel from the checkpoint; returns (n_vocab, prefill, generate)."""
    import numpy as np
    import torch
    import transformers

    from gpt2_common.hparams import load_hparams
    from gpt2_common.weights import huggingface_state, load_weights

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    row["version"] = f"transformers {transformers.__version__}"
    dev = torch.device(spec["device"].replace("gpu", "cuda"))
    t = time.perf_counter()
    hp = load_hparams(spec["model_dir"])
    config, state = huggingface_state(load_weights(spec["model_dir"], hp), hp)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    model.to(dev)
    del state
    row["load_s"] = time.perf_counter() - t

    class Stamps(transformers.generation.streamers.BaseStreamer):
        def __init__(self) -> None:
            self.stamps: List[float] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:  # first call: the prompt; then one per new token
            if self.prompt_seen:
                self.stamps.append(time.perf_counter())
            self.prompt_seen = True

        def end(self) -> None:
            pass

    @torch.inference_mode()
    def prefill(tokens: Any) -> None:
        out = model(torch.from_numpy(tokens.astype(np.int64)).to(dev), use_cache=True, logits_to_keep=1)
        out.logits.cpu()

    @torch.inference_mode()
    def generate(ctx: Any, n: int) -> List[float]:
        ids = torch.from_numpy(ctx.astype(np.int64)).to(dev)
        streamer = Stamps()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=hp.n_vocab - 1, streamer=streamer)
        return streamer.stamps

    return hp.n_vocab, prefill, generate


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB)."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024  # macOS reports bytes
    except ImportError:
        import psutil

        return psutil.Process().memory_info().rss / (1 << 20)


def _gpu_peak_mb(backend: str, device: Optional[str]) -> Optional[float]:
    if not device or device == "cpu":
        return None
    if backend == "tf":
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / (1 << 20)
    import torch

    return torch.cuda.max_memory_allocated() / (1 << 20) if torch.cuda.is_available() else None


def run_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter (stderr passes through); returns its JSON row."""
    import gpt2_common

    src = os.path.dirname(os.path.dirname(os.path.abspath(gpt2_common.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", _json.dumps(spec)],
                       stdout=subprocess.PIPE, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{spec['backend']} worker exited with status {p.returncode}")
    return _json.loads(p.stdout.decode().strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# Machine, physical limit, encoder
# ------------------------------------------------------------------------------------------------

def best_of(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from several rounds of a backend: each measurement's best round (fastest prefill,
    the decode run with the most tokens/s and its latencies, quickest load, largest peak RSS)."""
    row = dict(results[0])
    row["load_s"] = min(r["load_s"] for r in results)
    row["first_s"] = min(r["first_s"] for r in results)
    row["prefill"] = {T: max(r["prefill"][T] for r in results) for T in row["prefill"]}
    row["decode"] = {b: max((r["decode"][b] for r in results), key=lambda d: d["tokens_per_s"])
                     for b in row["decode"]}
    for key in ("peak_rss_mb", "gpu_peak_mb"):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            row[key] = max(values)
    row["rounds"] = len(results)
    return row


def _version(*dists: str) -> Optional[str]:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    return None


def machine_info() -> Dict[str, Any]:
    """CPU model, core counts and library versions (read without importing the frameworks)."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"numpy: {blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        blas = "numpy: unknown BLAS"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": affinity,
            "python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": _version("tensorflow-cpu", "tensorflow"), "torch": _version("torch"),
            "transformers": _version("transformers"), "tiktoken": _version("tiktoken"), "blas": blas}


def measure_bandwidth(runs: int = 10) -> float:
    """Memory read bandwidth (GB/s): a float32 GEMV streams a 512 MiB matrix once through
    OpenBLAS on all cores; the best of ``runs`` (other load on the machine lowers it)."""
    import numpy as np

    a = np.full((BANDWIDTH_BYTES // (4 * 4096), 4096), 0.5, dtype=np.float32)
    v = np.ones(4096, dtype=np.float32)
    best = float("inf")
    for _ in range(runs + 1):  # the first run is a warm-up
        t = time.perf_counter()
        np.dot(a, v)
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def model_size(hp: Any) -> Dict[str, int]:
    """``n_params`` and ``bytes_per_token`` = 4 * (n_params - n_ctx * n_embd): fp32 weights read
    per decoded token (all but the position table, of which one row is used)."""
    from gpt2_common.weights import expected_shapes

    n = sum(math.prod(shape) for shape in expected_shapes(hp).values())
    return {"n_params": n, "bytes_per_token": 4 * (n - hp.n_ctx * hp.n_embd)}


def synth_text(size: int = ENCODER_TEXT_BYTES) -> str:
    """A reproducible mix of English-like prose, Python-like code and some non-ASCII text."""
    import numpy as np

    rng = np.random.default_rng(1)
    words = ("the of and to in is that it for was on are as with his they at be this from have or "
             "by one had not but what all were when we there can an your which their said if do will "
             "each about how up out them then she many some so these would other into has more her two "
             "like him see time could no make than first been its who now people my made over did down "
             "only way find use may water long little very after words called just where most know "
             "model token layer attention weights benchmark decoder memory bandwidth throughput").split()
    code = ["def {w}_{v}(self, x):", "    return np.{w}(x, axis=-1) + {n}", "for i in range({n}):",
            "    {w}[i] = {v}.get('{w}', None)", "if {w} is not None and {v} >= {n}:", "# {w} {v} {n}"]
    extra = ["café", "naïve", "Ünïcödé", "日本語のテキスト", "数据", "🙂", "€{n}", "—"]
    parts, total = [], 0
    while total < size:
        kind = rng.random()
        if kind < 0.6:
            sent = [str(rng.choice(words)) if rng.random() > 0.05 else
                    "".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(3, 10)))
                    for _ in range(rng.integers(5, 20))]
            piece = " ".join(sent).capitalize() + str(rng.choice([".", ",", "?", "!", ":"])) + " "
        elif kind < 0.9:
            piece = str(rng.choice(code)).format(w=rng.choice(words), v=rng.choice(words),
                                                 n=int(rng.integers(0, 4096))) + "\n"
        else:
            piece = str(rng.choice(extra)).format(n=int(rng.integers(0, 100))) + " "
        parts.append(piece)
        total += len(piece.encode("utf-8"))
    return "".join(parts)


def encoder_speeds(vocab_dir: Optional[str], repeats: int, notes: List[str]) -> Dict[str, float]:
    """Encode throughput (MB/s, warm caches, median of ``max(repeats, 2)`` passes) of
    ``gpt2_common.encoder`` and of tiktoken on the same text and vocabulary."""
    if vocab_dir is None:
        notes.append("encoder row skipped: no vocabulary (set --vocab_dir or GPT2_VOCAB_DIR)")
        return {}
    text = synth_text()
    mb = len(text.encode("utf-8")) / 1e6
    from gpt2_common.encoder import load_encoder

    ours = load_encoder(vocab_dir)
    encoders: Dict[str, Callable[[str], List[int]]] = {"gpt2_common": ours.encode}
    if importlib.util.find_spec("tiktoken"):
        encoders["tiktoken"] = ours.tiktoken().encode_ordinary  # the same files, tiktoken's engine
    speeds, tokens = {}, {}
    for name, encode in encoders.items():
        log(f"encoder: {name} on {mb:.2f} MB")
        tokens[name] = encode(text)
        speeds[name] = mb / timed_median(lambda: encode(text), max(repeats, 2))
    if len(tokens) == 2:
        a, b = tokens.values()
        notes.append("encoder: gpt2_common and tiktoken give identical tokens" if list(a) == list(b)
                     else "encoder: WARNING gpt2_common and tiktoken tokens differ")
    return speeds


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def evaluate_targets(rows: Dict[str, Dict[str, Any]], prefill_T: int, batch: str) -> Dict[str, Any]:
    """The issue's targets (thresholds in ``TARGETS``), each ``{"ok": bool, or None when a row is
    missing, "threshold": x, and the measured ratios}``."""
    def ratio(a: str, b: str, get: Callable[[Dict[str, Any]], float]) -> Optional[float]:
        return get(rows[a]) / get(rows[b]) if a in rows and b in rows else None

    def result(name: str, **values: Any) -> Dict[str, Any]:
        nums = [v for k, v in values.items() if k not in ("batch", "T")]
        ok = None if None in nums else all(v >= TARGETS[name] for v in nums)
        return {"ok": ok, "threshold": TARGETS[name], **values}

    def decode(r: Dict[str, Any]) -> float:
        return r["decode"][batch]["tokens_per_s"]

    def prefill(r: Dict[str, Any]) -> float:
        return r["prefill"][str(prefill_T)]

    limit = {b: rows[b]["fraction_of_limit"] if b in rows else None for b in ("tf", "torch")}
    return {"torch_decode_vs_hf": result("torch_decode_vs_hf", ratio=ratio("torch", "hf", decode), batch=int(batch)),
            "tf_decode_vs_torch": result("tf_decode_vs_torch", ratio=ratio("tf", "torch", decode), batch=int(batch)),
            "decode_vs_limit": result("decode_vs_limit", **limit, batch=int(batch)),
            "prefill_vs_hf": result("prefill_vs_hf", tf=ratio("tf", "hf", prefill), torch=ratio("torch", "hf", prefill),
                                    T=prefill_T)}


def add_load_peaks(runs: Dict[str, List[Dict[str, Any]]], model_dir: str) -> None:
    """Each native row's ``load_peak_x``: the rise of peak RSS while loading, in multiples of the
    weights' bytes, measured in a fresh process (see :mod:`gpt2_common.loadmem`)."""
    from gpt2_common.loadmem import load_peak

    for b, results in runs.items():
        if b != "hf":
            log(f"{b}: load peak memory")
            dtype = "bfloat16" if b.endswith("-bf16") else "float32"
            results[0]["load_peak_x"] = load_peak(b.split("-")[0], model_dir, dtype)["ratio"]


def _fmt(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


def format_report(res: Dict[str, Any]) -> str:
    """The plain-text report: header, one column per backend, encoder and target lines."""
    m, mod, rows = res["machine"], res["model"], res["backends"]
    lines = [f"GPT-2 benchmark: {mod['name']}, {mod['n_params']:,} params, "
             f"{mod['bytes_per_token'] / 1e6:.1f} MB of fp32 weights read per decoded token",
             f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); python {m['python']}, "
             f"numpy {m['numpy']}, tensorflow {m['tensorflow']}, torch {m['torch']}, "
             f"transformers {m['transformers']}",
             f"BLAS: {m['blas']}",
             f"memory read bandwidth {res['bandwidth_gbps']:.1f} GB/s -> batch-1 decode limit "
             f"{res['limit_tokens_per_s']:.1f} tok/s (bandwidth / (4 B * (n_params - n_ctx*n_embd)))", ""]
    names = list(rows)
    table = [["", *names], ["load (s)", *[_fmt(rows[n]["load_s"], 2) for n in names]],
             ["  peak RSS rise (x weights)", *[_fmt(rows[n].get("load_peak_x"), 2) for n in names]],
             ["load + first token (s)", *[_fmt(rows[n].get("first_s"), 2) for n in names]]]
    for T in res["prefill_lengths"]:
        table.append([f"prefill T={T} (tok/s)", *[_fmt(rows[n]["prefill"][str(T)]) for n in names]])
    for B in res["batch_sizes"]:
        d = [rows[n]["decode"][str(B)] for n in names]
        table.append([f"decode b={B} (tok/s)", *[_fmt(x["tokens_per_s"]) for x in d]])
        table.append(["  p50 / p90 step (ms)", *[f"{x['p50_ms']:.1f} / {x['p90_ms']:.1f}" for x in d]])
    table.append(["peak RSS (MB)", *[_fmt(rows[n]["peak_rss_mb"], 0) for n in names]])
    if any("gpu_peak_mb" in rows[n] for n in names):
        table.append(["GPU peak (MB)", *[_fmt(rows[n].get("gpu_peak_mb"), 0) for n in names]])
    table.append([f"b={min(res['batch_sizes'])} decode / limit", *[_fmt(rows[n]["fraction_of_limit"], 2) for n in names]])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in table]
    if res["encoder"]:
        lines += ["", "encoder (MB/s): " + ", ".join(f"{k} {v:.2f}" for k, v in res["encoder"].items())]
    lines += ["", "targets:"]
    for name, t in res["targets"].items():
        nums = ", ".join(f"{k}={_fmt(v, 2)}" for k, v in t.items() if k != "ok")
        lines.append(f"  {name:<20} {'n/a' if t['ok'] is None else 'PASS' if t['ok'] else 'FAIL'}  ({nums})")
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)


def save_plot(res: Dict[str, Any], path: str) -> None:
    """Bar charts of prefill and decode throughput per backend, with the decode limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["backends"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, groups, title in ((axes[0], "prefill", res["prefill_lengths"], "prefill (prompt length T)"),
                                   (axes[1], "decode", res["batch_sizes"], "decode (batch size)")):
        width = 0.8 / max(len(rows), 1)
        for i, (name, row) in enumerate(rows.items()):
            vals = [row[key][str(g)] if key == "prefill" else row[key][str(g)]["tokens_per_s"] for g in groups]
            ax.bar([j + i * width for j in range(len(groups))], vals, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [str(g) for g in groups])
        ax.set_title(title)
        ax.set_ylabel("tokens/s")
    axes[1].axhline(res["limit_tokens_per_s"], color="k", ls="--", label="b=1 bandwidth limit")
    axes[1].legend()
    fig.suptitle(f"GPT-2 {res['model']['name']} on {res['machine']['cpu']}")
    fig.tight_layout()
    fig.savefig(path)


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------

def benchmark(model="124M", model_dir=None, backends="tf,torch", hf=True, prefill="128,512,1024",
              decode_tokens=64, batch_sizes="1,8", repeats=2, rounds=2, threads=None, vocab_dir=None,
              json=False, plot=None, device="cpu", bf16=False, xla=True):
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
    columns = names + ([f"{b}-bf16" for b in names] if as_bool(bf16, "bf16") else [])  # bf16 columns
    xla_both = str(xla).lower() == "both"
    xla = True if xla_both else as_bool(xla, "xla")
    columns += ["tf-noxla"] if xla_both and "tf" in names else []
    if n_new < 2:
        raise UsageError("--decode_tokens must be at least 2 (the first token comes from the prefill)")
    if plot is not None:
        if not isinstance(plot, str) or not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
            raise UsageError(f"--plot needs a file name in an existing folder, got {plot!r}")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib (pip install matplotlib)")
    if model_dir is not None:
        if not os.path.isdir(str(model_dir)):
            raise UsageError(f"--model_dir {model_dir}: no such folder")
        hp, label = load_hparams(model_dir), os.path.basename(os.path.normpath(str(model_dir)))
    elif str(model) in MODEL_SHAPES:
        hp, label = MODEL_SHAPES[str(model)], f"{model} (random weights)"
    else:
        raise UsageError(f"unknown --model {model!r}: choose one of {', '.join(MODEL_SHAPES)} or give --model_dir")
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
        size = model_size(hp)
        log("measuring memory bandwidth")
        bandwidth = measure_bandwidth()
        rows: Dict[str, Dict[str, Any]] = {}
        spec = {"model_dir": os.fspath(model_dir or tmp), "device": device, "prefill": prefill_T,
                "batch_sizes": batches, "decode_tokens": n_new, "decode_prompt": prompt,
                "repeats": repeats, "threads": threads}
        runs: Dict[str, List[Dict[str, Any]]] = {}
        for r in range(rounds):  # interleaved, so a slow spell of a shared machine hits every row
            for b in columns + (["hf"] if hf else []):
                if r and b not in runs:
                    continue  # failed in the first round
                log(f"{b}: starting worker (round {r + 1} of {rounds})")
                try:
                    dtype = "bfloat16" if b.endswith("-bf16") else "float32"
                    runs.setdefault(b, []).append(run_worker(dict(spec, backend=b.split("-")[0], dtype=dtype,
                                                                  xla=xla and not b.endswith("-noxla"))))
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
           "total_s": time.perf_counter() - started}
    print(_json.dumps(res, indent=2) if json else format_report(res), flush=True)
    if plot is not None:
        save_plot(res, plot)
    log(f"done in {res['total_s']:.0f} s")
    if any(b not in rows for b in names):
        sys.exit(1)


def main() -> None:
    """Console-script entry point (``--_worker SPEC`` is the hidden per-backend mode)."""
    if sys.argv[1:2] == ["--_worker"]:
        print(_json.dumps(worker(_json.loads(sys.argv[2]))), flush=True)
        return
    import inspect

    known = set(inspect.signature(benchmark).parameters)
    for arg in sys.argv[1:]:
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
        if name and name not in known and not (name.startswith("no") and name[2:] in known) \
                and name not in ("help", ""):
            cli.fail(f"unknown flag --{name} (see --help)")
    cli.run(benchmark, name="gpt2_benchmark")


if __name__ == "__main__":
    main()
