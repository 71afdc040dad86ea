"""A bounded load test of a running server (loopback): concurrency against one-at-a-time.

    python -m gpt2_common.serve.load --model_dir models/124M --backend torch --clients 32 --requests 64
    python -m gpt2_common.serve.load --url http://127.0.0.1:8000 --clients 32 --requests 64

With ``--model_dir`` a ``gpt2_serve`` is started on a free loopback port for the run (and stopped
after); with ``--url`` an existing server is used. The same ``requests`` streaming completions
(prompts of different lengths, each its own seed, ``max_tokens`` each, sampled with top-k 40) are
sent twice: one at a time (the reference), then from ``clients`` concurrent clients. Checks: no
request lost or failed, and every concurrent response's tokens and log-probabilities bit-identical
to its one-at-a-time twin (batch invariance). Reports throughput (generated tokens/s) of both runs,
and p50/p99 time to first token and time between tokens under load.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


def make_requests(n: int, max_tokens: int, n_ctx: int, n_vocab: int = 50257, seed: int = 0) -> List[Dict[str, Any]]:
    """``n`` completion bodies: token-id prompts of 1..min(48, n_ctx - max_tokens) tokens, seeds 0..n-1."""
    rng = np.random.default_rng(seed)
    longest = max(1, min(48, n_ctx - max_tokens))
    out = []
    for i in range(n):
        prompt = rng.integers(0, min(n_vocab, 50256), size=int(rng.integers(1, longest + 1))).tolist()
        out.append({"prompt": prompt, "max_tokens": max_tokens, "seed": i, "temperature": 1.0, "top_k": 40,
                    "logprobs": 0, "stream": True})
    return out


async def _one(client: Any, url: str, body: Dict[str, Any], headers: Dict[str, str]) -> Dict[str, Any]:
    """Stream one completion: its tokens, logprobs, finish reason and timings."""
    t0 = time.perf_counter()
    times: List[float] = []
    tokens: List[int] = []
    logprobs: List[float] = []
    finish, done, error = None, False, None
    try:
        async with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread()).decode()[:200]}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    msg = json.loads(data)
                    if "error" in msg:
                        error = msg["error"]["message"]
                        continue
                    ch = msg["choices"][0]
                    if ch.get("token_ids"):
                        times.append(time.perf_counter())
                        tokens.extend(ch["token_ids"])
                        logprobs.extend(ch["logprobs"]["token_logprobs"])
                    if ch.get("finish_reason"):
                        finish = ch["finish_reason"]
    except Exception as e:  # a lost request is a result, not a crash of the test
        error = f"{type(e).__name__}: {e}"
    return {"tokens": tokens, "logprobs": logprobs, "finish": finish, "done": done, "error": error,
            "ttft": times[0] - t0 if times else None, "gaps": list(np.diff(times)) if len(times) > 1 else [],
            "start": t0, "end": time.perf_counter()}


async def _run(url: str, bodies: List[Dict[str, Any]], clients: int, headers: Dict[str, str],
               timeout: float) -> Tuple[List[Dict[str, Any]], float]:
    import httpx

    results: List[Optional[Dict[str, Any]]] = [None] * len(bodies)
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def worker() -> None:
            nonlocal next_i
            while next_i < len(bodies):
                i = next_i
                next_i += 1
                results[i] = await _one(client, url, bodies[i], headers)

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), timeout)
        return results, time.perf_counter() - t0  # type: ignore[return-value]


def _pct(xs: List[float], q: float) -> Optional[float]:
    return float(np.percentile(xs, q)) if xs else None


def load_test(url: str, clients: int = 32, requests: int = 64, max_tokens: int = 32, n_ctx: int = 1024,
              api_key: Optional[str] = None, timeout: float = 600.0) -> Dict[str, Any]:
    """Run the load test against ``url`` (see the module docstring); returns the figures and checks:
    ``{"requests", "clients", "lost", "failed", "mismatched", "sequential": {...}, "concurrent":
    {...}, "speedup"}``, each run with ``seconds``, ``tokens``, ``tokens_per_s``, ``ttft_p50/p99``,
    ``token_p50/p99`` (seconds)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    bodies = make_requests(requests, max_tokens, n_ctx)
    seq, seq_s = asyncio.run(_run(url, bodies, 1, headers, timeout))
    con, con_s = asyncio.run(_run(url, bodies, clients, headers, timeout))

    def summary(res: List[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
        n = sum(len(r["tokens"]) for r in res if r)
        ttft = [r["ttft"] for r in res if r and r["ttft"] is not None]
        gaps = [g for r in res if r for g in r["gaps"]]
        return {"seconds": seconds, "tokens": n, "tokens_per_s": n / seconds if seconds else None,
                "ttft_p50": _pct(ttft, 50), "ttft_p99": _pct(ttft, 99), "token_p50": _pct(gaps, 50),
                "token_p99": _pct(gaps, 99)}

    lost = sum(1 for r in con if r is None or not r["done"])
    failed = sum(1 for r in con if r is not None and r["error"] is not None)
    mismatched = sum(1 for a, b in zip(seq, con) if a is None or b is None or a["tokens"] != b["tokens"]
                     or a["logprobs"] != b["logprobs"])
    s, c = summary(seq, seq_s), summary(con, con_s)
    return {"requests": requests, "clients": clients, "max_tokens": max_tokens, "lost": lost, "failed": failed,
            "mismatched": mismatched, "sequential": s, "concurrent": c,
            "speedup": c["tokens_per_s"] / s["tokens_per_s"] if s["tokens_per_s"] and c["tokens_per_s"] else None}


def decode_cost(model_dir: str, backend: str = "torch", steps: int = 20, rounds: int = 3) -> Dict[str, float]:
    """What batch invariance costs a decoding step, in-process (seconds, best of ``rounds``): one
    prompt's plain step (``_decode``, what ``generate`` of one prompt runs by default) against its
    batch-invariant step (``decode_rows``: the server's, and ``generate(batch_invariant=True)``'s),
    and a batch-invariant step of 16 rows. A 32-token prompt; ``steps`` steps per round."""
    from ..interface import load_model

    m = load_model(backend, model_dir, device="cpu")
    prompt = list(range(100, 132))

    def plain(n: int) -> float:
        x = np.asarray([prompt], np.int32)
        _, past = m._prefill(x, np.ones_like(x))
        t = time.perf_counter()
        for i in range(n):
            _, past = m._decode(np.array([[5]], np.int32), past, np.ones((1, len(prompt) + 1 + i), np.int32))
        return (time.perf_counter() - t) / n

    def rows(n: int, B: int) -> float:
        caches = [m.prefill_row(prompt)[1] for _ in range(B)]
        t = time.perf_counter()
        for _ in range(n):
            _, caches = m.decode_rows([5] * B, caches)
        return (time.perf_counter() - t) / n

    plain(2), rows(2, 1), rows(2, 16)  # traces, checks, warm-up
    p = min(plain(steps) for _ in range(rounds))
    r1 = min(rows(steps, 1) for _ in range(rounds))
    r16 = min(rows(max(2, steps // 4), 16) for _ in range(rounds))
    return {"plain_1": p, "invariant_1": r1, "invariant_16": r16, "slowdown_1": r1 / p}


def start_server(model_dir: str, backend: str = "torch", max_batch: int = 16, max_queue: int = 256,
                 extra: Tuple[str, ...] = (), timeout: float = 180.0,
                 env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.Popen, str]:
    """Start ``gpt2_serve`` on a free loopback port: ``(process, base url)``; ``env``: its
    environment (default: this process's)."""
    import gpt2_scripts

    script = os.path.join(os.path.dirname(os.path.abspath(gpt2_scripts.__file__)), "serve.py")
    cmd = [sys.executable, script, "--model_dir", model_dir, "--backend", backend,
           "--port", "0", "--max_batch", str(max_batch), "--max_queue", str(max_queue), "--log_level", "info",
           *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(env if env is not None else os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"running on (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("gpt2_serve did not start:\n" + "".join(lines[-20:]))


def main(*, url=None, model_dir=None, backend='torch', clients=32, requests=64, max_tokens=32, max_batch=16,
         api_key=None, json_out=False, decode_cost_only=False):
    """Load-test a server (see the module docstring) and print the table.

    Args:
        url: Base URL of a running gpt2_serve (or give --model_dir to start one).
        model_dir: A model folder to serve for the run on a free loopback port.
        backend: The backend of the started server: torch (default) or tf.
        clients: Concurrent streaming clients (default 32).
        requests: Completions sent, in each of the two runs (default 64).
        max_tokens: Tokens per completion (default 32).
        max_batch: The started server's --max_batch (default 16).
        api_key: The server's API key, if it has one.
        json_out: Print the figures as JSON instead of the table.
        decode_cost_only: Instead, time one prompt's plain and batch-invariant decoding steps (and
            a 16-row step) in this process, on --model_dir with --backend.
    """
    from .. import cli

    if decode_cost_only:
        if model_dir is None:
            raise cli.UsageError("--decode_cost_only needs --model_dir")
        c = decode_cost(model_dir, backend)
        load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
        print(f"{backend}: one prompt, plain step {c['plain_1'] * 1000:.1f} ms, batch-invariant step "
              f"{c['invariant_1'] * 1000:.1f} ms ({c['slowdown_1']:.2f}x); batch-invariant step of 16 rows "
              f"{c['invariant_16'] * 1000:.1f} ms ({c['invariant_16'] / 16 * 1000:.1f} ms a row); "
              f"load average {' '.join(load)}")
        return

    if (url is None) == (model_dir is None):
        raise cli.UsageError("give --url or --model_dir")
    proc = None
    n_ctx = 1024
    if model_dir is not None:
        from ..hparams import load_hparams

        n_ctx = int(load_hparams(model_dir).n_ctx)
        proc, url = start_server(model_dir, backend, max_batch)
    else:
        import httpx

        info = httpx.get(url.rstrip("/") + "/v1/models", timeout=30,
                         headers={"Authorization": f"Bearer {api_key}"} if api_key else {}).json()
        n_ctx = int(info["data"][0].get("max_model_len", n_ctx))
    try:
        out = load_test(url.rstrip("/"), clients, requests, max_tokens, n_ctx, api_key)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    out["loadavg"] = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
    if json_out:
        print(json.dumps(out, indent=1))
        return
    ms = lambda x: "-" if x is None else f"{x * 1000:.1f}"  # noqa: E731
    print(f"{out['requests']} requests x {out['max_tokens']} tokens; lost {out['lost']}, failed {out['failed']}, "
          f"not batch-invariant {out['mismatched']}; load average {' '.join(out['loadavg'] or [])}")
    print("| run | seconds | tokens/s | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | per-token p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, key in (("one at a time", "sequential"), (f"{out['clients']} clients", "concurrent")):
        r = out[key]
        print(f"| {name} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} | {ms(r['ttft_p50'])} | {ms(r['ttft_p99'])} "
              f"| {ms(r['token_p50'])} | {ms(r['token_p99'])} |")
    print(f"throughput: {out['speedup']:.2f}x one at a time")
    if out["lost"] or out["failed"] or out["mismatched"]:
        raise SystemExit(1)


if __name__ == "__main__":
    from ..cli import run

    run(main, name="python -m gpt2_common.serve.load")
