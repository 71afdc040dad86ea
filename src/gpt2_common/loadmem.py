"""Peak memory of loading a model: how many times the weights' bytes ``load_model`` adds to the
process's peak resident set size, measured in a fresh interpreter (so nothing else has raised the
peak before). Used by the benchmark's load row and by ``tests/test_loadmem.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict

_CHILD = r"""
import json, resource, sys
backend, model_dir, dtype = sys.argv[1:4]
import numpy as np
if backend == "torch":
    import torch
else:
    import tensorflow as tf
    tf.constant(1.0) + 1.0  # start the runtime before the baseline
from gpt2_common import load_model
from gpt2_common.weights import expected_shapes
from gpt2_common.hparams import load_hparams

def rss(field):  # kB -> bytes, from /proc/self/status (Linux)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

try:  # Linux: reset the peak (VmHWM) to the current RSS, so imports' transient peaks do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak = rss("VmRSS"), lambda: rss("VmHWM")
except OSError:  # elsewhere: the process's peak so far (ru_maxrss: bytes on macOS)
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    before = peak()

hp = load_hparams(model_dir)
nbytes = 4 * sum(int(np.prod(s)) for s in expected_shapes(hp).values())  # fp32 in the checkpoint
model = load_model(backend, model_dir, device="cpu", dtype=dtype)
print(json.dumps({"weights_bytes": nbytes, "peak_rise_bytes": peak() - before}))
"""


def load_peak(backend: str, model_dir: str, dtype: str = "float32", timeout: float = 600) -> Dict[str, Any]:
    """``{"weights_bytes", "peak_rise_bytes", "ratio"}`` for ``load_model(backend, model_dir)`` on the
    CPU in a fresh Python process (Linux: the peak RSS reset through ``/proc/self/clear_refs`` just before loading, less the RSS
    then; elsewhere ``resource.getrusage``'s peak, which imports may already have raised)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", _CHILD, backend, os.fspath(model_dir), dtype],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"load_peak({backend}) failed: {p.stderr.strip()[-500:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["ratio"] = out["peak_rise_bytes"] / out["weights_bytes"]
    return out
