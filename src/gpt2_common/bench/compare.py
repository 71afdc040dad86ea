"""``gpt2_benchmark --baseline DIR``: this checkout against another one (before/after a change),
measured in lockstep so that a shared machine's drift cancels out.

Runs of the regular benchmark minutes apart differ by 10-20% on a shared VM, more than most changes
do. Here, for each column (backend, dtype, XLA), two processes stay loaded with the same weights:
one imports this checkout's packages, the other the baseline's (its ``src/`` first on
``PYTHONPATH``; each reports which ``gpt2_common`` it imported, and that is checked). They take
turns, one timed run each, the order rotating every round: prefill at each length, then greedy
decode at each batch size, after one warm-up run each (tracing, XLA compiling). Reported per
measurement: each side's median tokens/s and the median of the per-round ratios this/baseline,
with their interquartile range.

Two processes running the same code also differ by a few percent (where their memory landed), so
a third process, a second copy of this checkout, takes its turn too: its ratio to the first
(``control``, ideally 1.0) is the noise floor of the same run. A ratio is a measured difference
only where it lies outside both its own spread and the control's.
"""
from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..cli import UsageError
from . import log
from .worker import env_with_src, own_src

#: The order of the turns in successive rounds: each side goes first, second and last, and after
#: each of the others, equally often (a process's threads still spinning after its run slow the next).
ORDERS = list(itertools.permutations(range(3)))
#: Idle seconds before each turn, for the previous process's thread pools to go to sleep.
SETTLE_S = 0.25
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "live_worker.py")


def checkout_src(path: Any) -> str:
    """The folder holding ``gpt2_common`` for a checkout given as its root (with ``src/``) or as its
    ``src`` folder; a :class:`UsageError` (one line) when there is none."""
    for src in (os.path.join(str(path), "src"), str(path)):
        if os.path.isfile(os.path.join(src, "gpt2_common", "interface.py")):
            return os.path.abspath(src)
    raise UsageError(f"--baseline {path}: no gpt2_common package there (give a checkout of this toolkit, "
                     f"e.g. one made with: git worktree add DIR REV)")


class LiveWorker:
    """One column's model, loaded in its own process from the checkout whose packages are in ``src``
    (``live_worker.py``); :meth:`time` runs one request there and returns its tokens/s."""

    def __init__(self, src: str, backend: str, model_dir: str, device: str, dtype: str,
                 threads: Optional[int], xla: bool) -> None:
        env = env_with_src(src, GPT2_TF_XLA="1" if xla else "0")
        self.label = f"{backend} from {src}"
        self.proc = subprocess.Popen([sys.executable, WORKER, backend, model_dir, device, dtype, str(threads or 0)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().split(maxsplit=1) if self.proc.stdout else []
        if not line or line[0] != "ready":
            self.close()
            raise RuntimeError(f"{self.label}: the worker failed to load the model")
        if os.path.commonpath([os.path.abspath(line[1].strip()), src]) != src:
            self.close()
            raise RuntimeError(f"{self.label}: the worker imported gpt2_common from {line[1].strip()} instead")

    def time(self, request: Dict[str, Any]) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the worker exited (status {self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def compare(base_src: str, columns: List[Dict[str, Any]], model_dir: str, device: str, prefill: List[int],
            batches: List[int], decode_tokens: int, prompt: int, rounds: int,
            threads: Optional[int]) -> Dict[str, Any]:
    """Measure every column (``{"name", "backend", "dtype", "xla"}``) from this checkout and from the
    one whose packages are in ``base_src`` (see :func:`checkout_src`) in lockstep (see the module
    docstring); returns the result document."""
    this_src = own_src()
    requests = [(f"prefill T={T}", {"op": "prefill", "T": T}) for T in prefill]
    requests += [(f"decode b={B}", {"op": "decode", "batch": B, "tokens": decode_tokens, "prompt": prompt})
                 for B in batches]
    rows = []
    for col in columns:
        log(f"{col['name']}: loading this checkout's and the baseline's model")
        sides = []
        try:
            for src in (this_src, base_src, this_src):  # this, the baseline, this again (the control)
                sides.append(LiveWorker(src, col["backend"], model_dir, device, col["dtype"], threads, col["xla"]))
            for label, req in requests:
                log(f"{col['name']}: {label}, {rounds} rounds")
                for w in sides:  # warm-up
                    w.time(dict(req, seed=0))
                runs: List[List[float]] = [[], [], []]
                for r in range(rounds):
                    for i in ORDERS[r % len(ORDERS)]:
                        time.sleep(SETTLE_S)
                        runs[i].append(sides[i].time(dict(req, seed=r + 1)))  # the same prompt for all
                ratio, iqr = ratio_stats(runs[0], runs[1])
                control, control_iqr = ratio_stats(runs[2], runs[0])
                rows.append({"column": col["name"], "measure": label, "this": statistics.median(runs[0]),
                             "baseline": statistics.median(runs[1]), "ratio": ratio, "ratio_iqr": iqr,
                             "control": control, "control_iqr": control_iqr})
        finally:
            for w in sides:
                w.close()
    return {"this": this_src, "baseline": base_src, "device": device, "rounds": rounds, "rows": rows,
            "decode": f"prompt of {prompt} random tokens, {decode_tokens} greedy tokens; tok/s = batch * "
                      f"(steps after the first) / their time"}


def ratio_stats(a: List[float], b: List[float]) -> Tuple[float, List[float]]:
    """The median of the per-round ratios ``a[r] / b[r]`` and their interquartile range."""
    ratios = [x / y for x, y in zip(a, b)]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return statistics.median(ratios), [q1, q3]


def format_comparison(res: Dict[str, Any]) -> str:
    """The comparison (with its ``model`` name) as a plain-text table."""
    lines = [f"this checkout ({res['this']}) vs baseline ({res['baseline']})",
             f"{res['model']}, {res['device']}, lockstep: {res['rounds']} rounds, the order rotating each round",
             "tok/s: medians; ratio: median of the per-round ratios this/baseline (interquartile range);",
             "control: the same for a second process of this checkout against the first (the noise floor)",
             "", f"{'column':12s} {'measure':15s} {'this':>9s} {'baseline':>9s} {'ratio':>7s} {'(IQR)':13s} "
                 f"{'control':>7s} (IQR)"]
    for r in res["rows"]:
        lines.append(f"{r['column']:12s} {r['measure']:15s} {r['this']:9.1f} {r['baseline']:9.1f} "
                     f"{r['ratio']:7.3f} {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f}   {r['control']:7.3f} "
                     f"{r['control_iqr'][0]:.3f}-{r['control_iqr'][1]:.3f}")
    lines += ["", f"decode: {res['decode']}"]
    return "\n".join(lines)
