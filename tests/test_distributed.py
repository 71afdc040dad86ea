"""Data-parallel training on the frameworks' own engines, on this machine's CPUs over loopback:
2 torch ranks under ``torchrun`` and 2 TF workers under ``MultiWorkerMirroredStrategy`` give the
weights and losses of one process with accumulation 2; a resumed data-parallel run goes on
exactly; a killed rank makes the other exit with one clear line within a bounded time, and the
run folder still loads."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import need

from gpt2_common import load_model

torch = need("torch")
need("tensorflow")
from gpt2_common.checkpoint import read_checkpoint
from gpt2_common.train.distributed import World, batch_index, tf_config_world, torchrun_world

ROOT = Path(__file__).resolve().parents[1]
TOL = {"torch": 1e-6, "tf": 1e-5}
LAUNCH_TIMEOUT = 240  # seconds for a whole data-parallel run (TF start-up is slow on 2 busy cores)
DEATH_TIMEOUT = 60  # seconds the surviving rank may take to notice a dead one


def free_ports(count: int):
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), TF_CPP_MIN_LOG_LEVEL="2",
               GPT2_MODELS_URL="http://127.0.0.1:1", OMP_NUM_THREADS="1", GPT2_DIST_TIMEOUT="60")
    env.pop("TF_CONFIG", None)
    if os.path.isdir("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo on loopback
    env.update(extra)
    return env


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def launch(backend, args, cwd, direct=False):
    """Start 2 ranks: torch under torchrun (or, ``direct``, as 2 processes with torchrun's
    environment), TF as 2 workers with TF_CONFIG. Returns the Popen objects."""
    script = [str(ROOT / "scripts" / "train.py"), *map(str, args)]
    kw = dict(cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if backend == "torch" and not direct:
        port, = free_ports(1)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(port), *script]
        return [subprocess.Popen(cmd, env=child_env(), **kw)]
    ports = free_ports(2)
    envs = [child_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(ports[0])) if backend == "torch" else child_env(TF_CONFIG=tf_config(ports, r))
            for r in range(2)]
    return [subprocess.Popen([sys.executable, *script], env=env, **kw) for env in envs]


def finish(procs, timeout=LAUNCH_TIMEOUT):
    """Wait for ``procs``; kill any still running. Returns [(returncode, stdout, stderr)]."""
    out, deadline = [], time.monotonic() + timeout
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


def flat(d):
    return np.concatenate([np.asarray(d[n], np.float64).ravel() for n in sorted(d)])


def losses(run):
    return [json.loads(x)["loss"] for x in open(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tokens.bin"
    np.random.default_rng(4).integers(0, 1000, 4000).astype("<u2").tofile(path)
    return path


COMMON = ("--batch_size", 2, "--context", 32, "--learning_rate", 1e-3, "--warmup_steps", 2, "--lr_schedule",
          "cosine", "--sample_every", 0, "--val_every", 0, "--progress", False)


def test_sharding_rule():
    """N ranks x k micro-batches cover a step's N*k batches once, in order, as contiguous blocks."""
    for n, k in ((2, 1), (2, 3), (4, 2)):
        for step in range(3):
            got = [batch_index(step, j, k, World(r, n)) for r in range(n) for j in range(k)]
            assert got == list(range(step * n * k, (step + 1) * n * k))
    assert torchrun_world({"RANK": "1", "WORLD_SIZE": "2"}) == World(1, 2, "torchrun")
    assert torchrun_world({}) is None
    assert tf_config_world({"TF_CONFIG": tf_config([1, 2], 1)}) == World(1, 2, "tf_config")
    assert tf_config_world({"TF_CONFIG": tf_config([1], 0)}) is None


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_two_ranks_equal_one_process_with_accumulation(tmp_path, make_model_dir, data_file, backend):
    from scripts.train import train

    model = make_model_dir("tiny", vocab=True)
    args = ("--dataset", data_file, "--model_dir", model, "--backend", backend, "--steps", 3,
            "--checkpoint_dir", tmp_path / "checkpoint") + COMMON
    kwargs = {str(k)[2:]: v for k, v in zip(args[::2], args[1::2])}
    kwargs.update(dataset=str(data_file), model_dir=str(model), checkpoint_dir=str(tmp_path / "checkpoint"))
    t0 = time.perf_counter()
    # The same threads as the ranks' (torchrun: OMP_NUM_THREADS=1), so the same float rounding: the
    # key biases' gradients are rounding noise (zero in exact arithmetic) that Adam turns into ~lr.
    threads = torch.get_num_threads() if backend == "torch" else None
    if backend == "torch":
        torch.set_num_threads(1)
    try:
        train(run_name="single", accumulate_gradients=2, **kwargs)
    finally:
        if threads:
            torch.set_num_threads(threads)
    t1 = time.perf_counter()
    # torch: 2 steps, then a second torchrun resumes the run folder for the 3rd (every rank reads it)
    first = ("--stop_after", 2) if backend == "torch" else ()
    results = finish(launch(backend, args + ("--run_name", "ranks", "--accumulate_gradients", 1) + first, tmp_path))
    if first:
        results += finish(launch(backend, args + ("--run_name", "ranks", "--accumulate_gradients", 1), tmp_path))
    t2 = time.perf_counter()
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    stderr = "".join(e for _, _, e in results)
    assert stderr.count("2 ranks") == len(results) // (1 if backend == "torch" else 2)  # rank 0 alone speaks
    if first:
        assert "resuming" in results[1][2] and "at step 2" in results[1][2]
    runs = {r: tmp_path / "checkpoint" / r for r in ("single", "ranks")}
    a, b = (read_checkpoint(str(p)) for p in runs.values())
    diff = float(np.max(np.abs(flat(a) - flat(b))))
    loss_diff = float(np.max(np.abs(np.subtract(losses(runs["single"]), losses(runs["ranks"])))))
    print(f"[{backend}] 2 ranks x accumulation 1 vs 1 process x 2, 3 steps: weights max|diff| = {diff:.3e}, "
          f"losses max|diff| = {loss_diff:.3e} (single {t1 - t0:.1f} s, 2 ranks {t2 - t1:.1f} s)")
    assert diff <= TOL[backend] and loss_diff <= TOL[backend]
    assert len(losses(runs["ranks"])) == 3  # one metrics line per step: only rank 0 writes
    assert (runs["ranks"] / "checkpoint").read_text().startswith('model_checkpoint_path: "model-3"')
    assert not (runs["ranks"] / "samples").exists()


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_dead_rank_stops_the_other(tmp_path, make_model_dir, data_file, backend):
    model = make_model_dir("tiny", vocab=True)
    run = tmp_path / "checkpoint" / "dies"
    args = ("--dataset", data_file, "--model_dir", model, "--backend", backend, "--steps", 100000,
            "--checkpoint_dir", tmp_path / "checkpoint", "--run_name", "dies", "--save_every", 2) + COMMON
    procs = launch(backend, args, tmp_path, direct=True)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not ((run / "metrics.jsonl").is_file() and len(losses(run)) >= 3):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "training did not start"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.perf_counter()
        (rc, _, err), = finish(procs[:1], DEATH_TIMEOUT)
        took = time.perf_counter() - t0
    finally:
        finish(procs)
    last = err.strip().splitlines()[-1]
    print(f"[{backend}] rank 0 exited {took:.1f} s after rank 1 was killed (status {rc}): {last}")
    assert rc == 1 and "rank 0/2: another rank died" in last and "run the same command again to resume" in last
    assert "Traceback" not in err
    step = int((run / "checkpoint").read_text().split('"model-')[1].split('"')[0])
    assert step >= 2 and (run / f"train-{step}.npz").is_file()
    loaded = load_model(backend, str(run), device="cpu")  # the run folder loads
    assert np.isfinite(loaded.loss(np.arange(16).reshape(1, 16) + 100))


def test_fsdp_two_ranks(tmp_path, make_model_dir, data_file):
    """``--fsdp`` (FSDP2 ``fully_shard`` on gloo): 2 sharded ranks, then a resumed step with
    validation, against one process with accumulation 2. Not bit-identical to it (unlike DDP):
    everything agrees to 1e-6 except the key biases, whose gradient is zero in exact arithmetic,
    so rounding noise that Adam turns into steps of up to ~lr."""
    from scripts.train import train

    model = make_model_dir("tiny", vocab=True)
    args = ("--dataset", data_file, "--model_dir", model, "--backend", "torch", "--steps", 3,
            "--checkpoint_dir", tmp_path / "checkpoint", "--val_dataset", data_file, "--val_every", 3,
            "--val_batch_count", 2) + COMMON[:-6] + ("--progress", False)
    kwargs = {str(k)[2:]: v for k, v in zip(args[::2], args[1::2])}
    kwargs.update(dataset=str(data_file), val_dataset=str(data_file), model_dir=str(model),
                  checkpoint_dir=str(tmp_path / "checkpoint"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(run_name="single", accumulate_gradients=2, sample_every=0, **kwargs)
    finally:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    ranks = args + ("--run_name", "fsdp", "--fsdp", True, "--sample_every", 0)
    results = finish(launch("torch", ranks + ("--stop_after", 2), tmp_path)) + finish(launch("torch", ranks, tmp_path))
    took = time.perf_counter() - t0
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "resuming" in results[1][2]
    runs = {r: tmp_path / "checkpoint" / r for r in ("single", "fsdp")}
    a, b = (read_checkpoint(str(p)) for p in runs.values())
    n_embd = a["model/wpe"].shape[1]
    keys = {n for n in a if n.endswith("attn/c_attn/b")}
    rest = float(max(np.max(np.abs(a[n] - b[n])) for n in a if n not in keys))
    kb = float(max(np.max(np.abs(a[n][..., n_embd:2 * n_embd] - b[n][..., n_embd:2 * n_embd])) for n in keys))
    qv = float(max(np.max(np.abs(np.delete(a[n] - b[n], np.s_[n_embd:2 * n_embd], axis=-1))) for n in keys))
    val = [json.loads(x).get("val_loss") for x in open(runs["fsdp"] / "metrics.jsonl")][-1]
    ref = [json.loads(x).get("val_loss") for x in open(runs["single"] / "metrics.jsonl")][-1]
    print(f"[torch fsdp] 2 sharded ranks (2 steps + 1 resumed) vs 1 process x 2: weights max|diff| = "
          f"{max(rest, qv):.3e} (key biases {kb:.3e}), val loss {val:.6f} vs {ref:.6f}, 2 launches {took:.1f} s")
    assert max(rest, qv) <= TOL["torch"] and kb <= 1e-3  # lr
    assert abs(val - ref) <= 1e-5
