"""Machine facts, the memory-bandwidth limit of batch-1 decoding, and the encoder's speed."""
from __future__ import annotations

import importlib.util
import math
import os
import platform
import time
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional

from . import log
from .worker import timed_median

BANDWIDTH_BYTES = 512 << 20
ENCODER_TEXT_BYTES = 300_000


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
