"""scripts/benchmark.py, run as a user would: a quick end-to-end run on a tiny random model (both
backends, plus the Hugging Face row where transformers is installed) checking the JSON report
field by field, and flag errors (one line on stderr, exit status 2)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need

ROOT = Path(__file__).resolve().parents[1]


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def run_benchmark(*args, timeout: int = 150) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_tiny_run_reports_every_field(make_model_dir, vocab_dir, tmp_path):
    need("tensorflow"), need("torch")
    model_dir = make_model_dir("tiny", vocab=True)
    png = tmp_path / "bench.png"
    args = ["--model_dir", model_dir, "--backends", "tf,torch", "--prefill", "8,16", "--decode_tokens", 4,
            "--batch_sizes", "1,2", "--repeats", 1, "--rounds", 2, "--vocab_dir", vocab_dir, "--json", "--bf16"]
    if installed("matplotlib"):
        args += ["--plot", png]
    p = run_benchmark(*args, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)  # stdout is the JSON document and nothing else

    m = res["machine"]
    assert m["cpu"] and positive(m["cores"]) and positive(m["usable_cores"]) and m["python"] and m["numpy"]
    assert res["model"]["name"] and positive(res["model"]["n_params"])
    # fp32 weights read per token: every parameter but the position table
    assert res["model"]["bytes_per_token"] == 4 * (res["model"]["n_params"] - 64 * 32)
    assert positive(res["bandwidth_gbps"]) and positive(res["limit_tokens_per_s"])
    assert res["limit_tokens_per_s"] == pytest.approx(res["bandwidth_gbps"] * 1e9 / res["model"]["bytes_per_token"])

    expected = {"tf", "torch", "tf-bf16", "torch-bf16"} | ({"hf"} if installed("transformers") else set())
    assert set(res["backends"]) == expected
    for name, row in res["backends"].items():
        assert positive(row["load_s"]) and positive(row["peak_rss_mb"]), name
        assert row["first_s"] > row["load_s"], name  # load + tracing (and XLA compiling) the first steps
        if name != "hf":  # load peak memory in multiples of the weights (a fresh process each)
            assert isinstance(row["load_peak_x"], float) and row["load_peak_x"] >= 0, name
        assert row["rounds"] == 2, name  # interleaved rounds, best of each
        assert set(row["prefill"]) == {"8", "16"} and all(map(positive, row["prefill"].values())), name
        assert set(row["decode"]) == {"1", "2"}, name
        for stats in row["decode"].values():
            assert all(positive(stats[k]) for k in ("tokens_per_s", "p50_ms", "p90_ms")), (name, stats)
            assert stats["p90_ms"] >= stats["p50_ms"], (name, stats)
        assert positive(row["fraction_of_limit"]), name
        assert row["fraction_of_limit"] == pytest.approx(row["decode"]["1"]["tokens_per_s"] / res["limit_tokens_per_s"])

    if installed("tiktoken"):
        assert positive(res["encoder"]["tiktoken"])
    if installed("gpt2_common.encoder") or "gpt2_common" in res["encoder"]:
        assert positive(res["encoder"]["gpt2_common"])
    assert all(positive(v) for v in res["encoder"].values())

    t = res["targets"]
    assert set(t) == {"torch_decode_vs_hf", "tf_decode_vs_torch", "decode_vs_limit", "prefill_vs_hf"}
    assert t["prefill_vs_hf"]["T"] == 16 and t["decode_vs_limit"]["batch"] == 1
    assert positive(t["tf_decode_vs_torch"]["ratio"]) and isinstance(t["tf_decode_vs_torch"]["ok"], bool)
    assert t["decode_vs_limit"]["ok"] == (min(t["decode_vs_limit"]["tf"], t["decode_vs_limit"]["torch"]) >= 0.75)
    for name, target in t.items():
        assert positive(target["threshold"])
        assert (target["ok"] is None) == ("hf" not in res["backends"] and name in ("torch_decode_vs_hf", "prefill_vs_hf"))
    if installed("matplotlib"):
        assert png.stat().st_size > 1000


@pytest.mark.parametrize("args, needle", [
    (["--prefill", "0"], "--prefill"),
    (["--batch_sizes", "1,x"], "--batch_sizes"),
    (["--model", "999M"], "999M"),
    (["--backends", "tf,jax"], "jax"),
    (["--decode_tokens", "1"], "--decode_tokens"),
    (["--device", "tpu"], "tpu"),
    (["--bogus", "1"], "--bogus"),
    (["--xla", "sometimes"], "--xla"),
    (["--baseline", "/nonexistent/checkout"], "--baseline"),
    (["--baseline", str(ROOT), "--baseline_rounds", "0"], "--baseline_rounds"),
    (["--baseline", str(ROOT), "--train"], "--train"),
])
def test_bad_flags_one_line_exit_2(args, needle):
    p = run_benchmark(*args, timeout=60)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert p.stdout == ""


def test_prompt_longer_than_context_is_a_flag_error(make_model_dir):
    p = run_benchmark("--model_dir", make_model_dir("tiny"), "--prefill", "100", timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "context of 64" in p.stderr, p.stderr


SLEEP_S = 1.0


def test_baseline_compares_two_checkouts_in_lockstep(make_model_dir, tmp_path):
    """--baseline: each side runs its own checkout's code. The baseline here is a copy of this
    checkout whose decode loop sleeps SLEEP_S a step. What is asserted is what load cannot move:
    the baseline's decode can be no faster than one token per SLEEP_S (load only slows it), it is
    slower than this side's in the same interleaved rounds (both sides see the same load; it fails
    only if this side's steps took SLEEP_S longer than the baseline's), and an 8-token prefill (no
    sleep) is faster than one sleeping decode step. (Ratios against a margin failed under load: with
    20 ms, 1.4 and 1.2 against "> 2" at load 5-11; with 1 s, torch's ratio was 3.3 at load 20, where
    a tiny torch step took ~0.4 s, and tf's 107.)"""
    need("tensorflow"), need("torch")
    import shutil

    base = tmp_path / "base"
    shutil.copytree(ROOT / "src", base / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    interface = base / "src" / "gpt2_common" / "interface.py"
    code = interface.read_text()
    assert code.count("        new = sampler(logits)\n") == 1
    interface.write_text(code.replace("        new = sampler(logits)\n",
                                      f"        new = sampler(logits)\n        __import__('time').sleep({SLEEP_S})\n"))
    p = run_benchmark("--model_dir", make_model_dir("tiny"), "--backends", "tf,torch", "--prefill", "8",
                      "--batch_sizes", "1", "--decode_tokens", 3, "--baseline", base, "--baseline_rounds", 3,
                      "--json", timeout=900)  # 3 workers per column: minutes at load 15
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["this"] == str(ROOT / "src") and res["baseline"] == str(base / "src") and res["rounds"] == 3
    rows = {(r["column"], r["measure"]): r for r in res["rows"]}
    assert set(rows) == {(b, m) for b in ("tf", "torch") for m in ("prefill T=8", "decode b=1")}
    for (column, measure), r in rows.items():
        assert positive(r["this"]) and positive(r["baseline"]) and positive(r["ratio"]), r
        assert r["ratio_iqr"][0] <= r["ratio"] <= r["ratio_iqr"][1], r
        assert positive(r["control"]) and r["control_iqr"][0] <= r["control"] <= r["control_iqr"][1], r
        print(column, measure, f"this {r['this']:.3g} tok/s, baseline {r['baseline']:.3g}, ratio {r['ratio']:.2f}")
    for column in ("tf", "torch"):
        decode, prefill = rows[column, "decode b=1"], rows[column, "prefill T=8"]
        assert decode["baseline"] <= 1.01 / SLEEP_S, decode  # the baseline's code: one sleep per token
        assert decode["ratio"] > 1 and decode["this"] > decode["baseline"], decode  # this side's: no sleep
        assert prefill["baseline"] > 1.0 / SLEEP_S, prefill  # 8 tokens in < 8 s: the prefill has no sleep
    # the table form
    p = run_benchmark("--model_dir", make_model_dir("tiny"), "--backends", "torch", "--prefill", "8",
                      "--batch_sizes", "1", "--decode_tokens", 2, "--baseline", base / "src", "--baseline_rounds", 1,
                      "--hf", "False", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "vs baseline" in p.stdout and "torch" in p.stdout and "decode b=1" in p.stdout, p.stdout


def test_baseline_that_fails_to_load_is_one_error_line(make_model_dir, tmp_path):
    need("torch")
    broken = tmp_path / "broken" / "src" / "gpt2_common"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "interface.py").write_text("raise ImportError('this baseline is broken')\n")
    p = run_benchmark("--model_dir", make_model_dir("tiny"), "--backends", "torch", "--prefill", "8",
                      "--batch_sizes", "1", "--decode_tokens", 2, "--baseline", tmp_path / "broken", timeout=120)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and last.startswith("error: ") and "failed to load" in last, p.stderr[-2000:]
    assert "this baseline is broken" in p.stderr  # the worker's own traceback, above the error line
    assert p.stdout == ""
