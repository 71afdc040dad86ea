"""From measured rounds to the result: each backend's best round, the targets, the table, the plot."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import log

TARGETS = {"torch_decode_vs_hf": 1.8, "tf_decode_vs_torch": 0.9, "decode_vs_limit": 0.75,
           "prefill_vs_hf": 1.0}


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
    if any("hooks" in rows[n] for n in names):  # --hooks T: run_with_cache of every name vs a plain forward
        h = [rows[n].get("hooks") for n in names]
        T = next(x["T"] for x in h if x)
        table.append([f"cache all T={T}: time (x plain)", *["-" if x is None else _fmt(x["ratio"], 2) for x in h]])
        table.append(["  cache MB / peak RSS rise MB",
                      *["-" if x is None else f"{x['cache_mb']:.0f} / {x['peak_rise_mb']:.0f}" for x in h]])
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
