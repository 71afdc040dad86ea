"""One backend's measurements (``tf``, ``torch``, ``hf``), run in a fresh interpreter so that its
peak RSS is its own: ``python -m gpt2_common.bench.worker SPEC`` prints the row as JSON."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import log
from .live_worker import set_thread_env


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


Measure = Tuple[int, Callable[[Any], None], Callable[[Any, int], List[float]], Optional[Any]]


def hooks_cost(model: Any, T: int, repeats: int) -> Dict[str, float]:
    """``run_with_cache`` of every named activation against a plain forward (``model.logits``) of
    the same ``T`` random tokens, alternated: median seconds of each, their ratio, the cache's
    size and how far it raised the process's peak RSS above the plain forward's."""
    import numpy as np

    tokens = np.random.default_rng(1).integers(0, model.hparams.n_vocab, size=(1, T), dtype=np.int32)
    model.logits(tokens)  # warm-up (and the plain forward's own peak)
    before = peak_rss_mb()
    cache_mb = sum(a.nbytes for a in model.run_with_cache(tokens)[1].values()) / 2 ** 20
    plain, cached = [], []
    for _ in range(repeats):
        for times, fn in ((plain, model.logits), (cached, model.run_with_cache)):
            t = time.perf_counter()
            fn(tokens)
            times.append(time.perf_counter() - t)
    p, c = statistics.median(plain), statistics.median(cached)
    return {"T": T, "plain_s": p, "cache_s": c, "ratio": c / p, "cache_mb": cache_mb,
            "peak_rise_mb": peak_rss_mb() - before}


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one backend (``tf``, ``torch`` or ``hf``) as ``spec`` says; returns its row."""
    import numpy as np

    set_thread_env(spec["threads"])
    if "xla" in spec:  # the TF backend's XLA decode path (gpt2_tf.backend), on or off
        os.environ["GPT2_TF_XLA"] = "1" if spec["xla"] else "0"
    backend, repeats = spec["backend"], spec["repeats"]
    row: Dict[str, Any] = {"prefill": {}, "decode": {}}
    n_vocab, prefill, generate, model = (_hf_measure if backend == "hf" else _native_measure)(spec, row)
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
    if spec.get("hooks") and model is not None:  # named activations: every one cached vs none
        log(f"{backend}: run_with_cache of every activation, T={spec['hooks']}")
        row["hooks"] = hooks_cost(model, spec["hooks"], repeats)
    gpu = gpu_peak_mb(backend, spec["device"])
    if gpu is not None:
        row["gpu_peak_mb"] = gpu
    return row


def _native_measure(spec: Dict[str, Any], row: Dict[str, Any]) -> Measure:
    """Load the checkpoint with ``load_model``; returns (n_vocab, prefill, generate, model)."""
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

    return model.hparams.n_vocab, prefill, generate, model


def _hf_measure(spec: Dict[str, Any], row: Dict[str, Any]) -> Measure:
    """Build transformers' GPT2LMHeadModel from the checkpoint; returns (n_vocab, prefill, generate, None)."""
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

    return hp.n_vocab, prefill, generate, None


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB)."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024  # macOS reports bytes
    except ImportError:
        import psutil

        return psutil.Process().memory_info().rss / (1 << 20)


def gpu_peak_mb(backend: str, device: Optional[str]) -> Optional[float]:
    """Peak GPU memory of this process (MB); ``None`` on the CPU."""
    if not device or device == "cpu":
        return None
    if backend == "tf":
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / (1 << 20)
    import torch

    return torch.cuda.max_memory_allocated() / (1 << 20) if torch.cuda.is_available() else None


def own_src() -> str:
    """The folder holding this checkout's ``gpt2_common`` (its ``src/``, or site-packages)."""
    import gpt2_common

    return os.path.dirname(os.path.dirname(os.path.abspath(gpt2_common.__file__)))


def env_with_src(src: str, **extra: str) -> Dict[str, str]:
    """This process's environment with ``src`` first on ``PYTHONPATH`` (and ``extra`` variables), so
    that a child process imports the packages found there."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])), **extra)


def run_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter (stderr passes through); returns its JSON row."""
    p = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)],
                       stdout=subprocess.PIPE, env=env_with_src(own_src()))
    if p.returncode != 0:
        raise RuntimeError(f"{spec['backend']} worker exited with status {p.returncode}")
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
