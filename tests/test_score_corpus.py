"""Scoring a .jsonl corpus at scale (issue 14): batched = one at a time, exactly; 2 torchrun ranks =
one process, exactly; an interrupted run resumes to the same output."""
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

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the a dog cat sat on mat quick brown fox jumps over lazy and then it was very good bad news of "
         "in time people said would could market city").split()


@pytest.fixture(scope="module")
def tiny_dir(make_model_dir):
    need("torch")
    return make_model_dir("tiny", vocab=True)


@pytest.fixture(scope="module")
def model(tiny_dir):
    from gpt2_common import load_model

    return load_model("torch", str(tiny_dir), device="cpu")


def write_docs(path: Path, n: int, seed: int = 0, max_words: int = 12) -> Path:
    """``n`` short documents (1..max_words words), with a blank line and ids, as the dataset has."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choice(WORDS, size=int(rng.integers(1, max_words + 1)))
            f.write(json.dumps({"id": i, "text": " ".join(words).capitalize() + "."}) + "\n")
            if i == 3:
                f.write("\n")  # blank lines are skipped: line numbers, not document numbers, are the key
    return path


def one_at_a_time(model, path: Path):
    """The reference: each document scored alone with score_text, as gpt2_score --json prints it."""
    from gpt2_common import research

    out = []
    for number, record in research.iter_jsonl(str(path)):
        d = {"line": number, "id": record["id"]}
        d.update(research.score_text(model, record["text"]).to_dict(model.encoder))
        out.append(d)
    return out


def read_lines(path: Path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_batched_equals_one_at_a_time_exactly(model, tmp_path):
    from gpt2_common import research

    docs = write_docs(tmp_path / "docs.jsonl", 40, max_words=40)
    want = one_at_a_time(model, docs)
    seen = []
    got = list(research.score_corpus(model, str(docs), batch_docs=16, on_batch=lambda d, t: seen.append((d, t))))
    assert got == want  # every number identical: equal-length windows batched, no padding
    assert [d for d, _ in seen] == [16, 16, 8] and sum(t for _, t in seen) == sum(d["n_tokens"] for d in want)
    padded = list(research.score_corpus(model, str(docs), batch_docs=40, pad=True))
    assert [d["tokens"] for d in padded] == [d["tokens"] for d in want]
    assert max(np.abs(np.subtract(a["logprobs"], b["logprobs"])).max() for a, b in zip(padded, want)) < 1e-4


def test_output_file_resumes_from_partial_parts(model, tmp_path, monkeypatch):
    from gpt2_common import research

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    docs = write_docs(tmp_path / "docs.jsonl", 30, seed=1)
    out = tmp_path / "scores.jsonl"
    loads = []

    def load(local_rank):
        loads.append(local_rank)
        return model

    got = research.score_to_file(load, str(docs), str(out), batch_docs=8, progress=False)
    assert got == {"documents": 30, "resumed": 0, "scored": 30}
    full = out.read_bytes()
    assert read_lines(out) == one_at_a_time(model, docs) and not list(tmp_path.glob("*.part*"))
    # An interrupted run: the final file is not there yet, two parts hold some results, one of
    # them cut off mid-line (the kill came while it was written).
    lines = full.splitlines(keepends=True)
    out.unlink()
    (tmp_path / "scores.jsonl.part0").write_bytes(b"".join(lines[0:20:2]) + lines[20][:25])
    (tmp_path / "scores.jsonl.part1").write_bytes(b"".join(lines[1:9:2]))
    got = research.score_to_file(load, str(docs), str(out), batch_docs=8, progress=False)
    assert got == {"documents": 30, "resumed": 14, "scored": 16}
    assert out.read_bytes() == full and not list(tmp_path.glob("*.part*"))
    # Everything recorded: a re-run scores nothing and does not load the model.
    assert research.score_to_file(load, str(docs), str(out), progress=False)["scored"] == 0
    assert out.read_bytes() == full and loads == [0, 0]
    # A result missing from every file is an error, not a silent hole; nothing is written.
    out.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(research.ResearchError, match="no result for 1 document"):
        research.merge(str(out), research.plan(str(docs)))
    assert out.read_bytes() == b"".join(lines[:-1]) and not list(tmp_path.glob("*.tmp"))


def test_score_cli_output_errors(tiny_dir, tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 3)
    cases = [(["--file", docs, "--output", tmp_path / "nope" / "o.jsonl"], "folder"),
             (["Some text", "--output", tmp_path / "o.jsonl"], "--output is for .jsonl input"),
             (["--file", docs, "--batch_docs", 0], "batch_docs")]
    for args, message in cases:
        p = run_score(*args, "--model_dir", tiny_dir)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_score("--file", docs, "--model_dir", tiny_dir, env={"WORLD_SIZE": "2", "RANK": "1"})
    assert p.returncode == 2 and "under torchrun (WORLD_SIZE > 1) give --output" in p.stderr
    assert not list(tmp_path.glob("o.jsonl*"))


def run_score(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "score.py"), *map(str, args), "--device", "cpu"],
                          capture_output=True, text=True, timeout=timeout, env=script_env(env))


def script_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8", **(extra or {}))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tiny_dir, docs, out, *extra):
    """The command: 2 ranks on this host, loopback rendezvous."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), str(ROOT / "scripts" / "score.py"), "--file", str(docs),
            "--output", str(out), "--model_dir", str(tiny_dir), "--device", "cpu", "--noprogress", *extra]


def children(pid: int):
    """The child process ids of ``pid`` (Linux /proc), [] once it is gone."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stop(p: subprocess.Popen) -> None:
    """Interrupt the launcher (SIGTERM: it terminates its ranks, each in its own session) and reap
    it; SIGKILL whatever is still alive after 30 s."""
    ranks = children(p.pid)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    finally:
        for pid in [p.pid] * (p.poll() is None) + ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)


def test_two_torchrun_ranks_equal_one_process_and_resume(model, tiny_dir, tmp_path):
    need("torch.distributed")
    docs = write_docs(tmp_path / "docs.jsonl", 200, seed=2, max_words=8)
    want = one_at_a_time(model, docs)
    out = tmp_path / "scores.jsonl"
    p = subprocess.run(torchrun(tiny_dir, docs, out), capture_output=True, text=True, timeout=300,
                       env=script_env(), start_new_session=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert read_lines(out) == want and not list(tmp_path.glob("scores.jsonl.*"))
    assert "200 documents (0 resumed" in p.stderr
    full = out.read_bytes()

    # Interrupted: stop the launcher and both ranks once some batches are recorded, then re-run.
    out.unlink()
    p = subprocess.Popen(torchrun(tiny_dir, docs, out, "--batch_docs", "4"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=script_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            parts = list(tmp_path.glob("scores.jsonl.part*"))
            if sum(f.read_bytes().count(b"\n") for f in parts) >= 16:
                break
            time.sleep(0.05)
    finally:
        stop(p)
    parts = list(tmp_path.glob("scores.jsonl.part*"))
    recorded = sum(f.read_bytes().count(b"\n") for f in parts)
    assert not out.exists() and 16 <= recorded < 200, recorded  # killed mid-run: parts, no output
    p = subprocess.run(torchrun(tiny_dir, docs, out), capture_output=True, text=True, timeout=300,
                       env=script_env(), start_new_session=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.read_bytes() == full and not list(tmp_path.glob("scores.jsonl.*"))
    assert f"200 documents ({recorded} resumed" in p.stderr


def test_scoring_throughput_reports_both_ways(model):
    from gpt2_common.research.throughput import scoring_throughput

    r = scoring_throughput(model, n_docs=4, length=20, rounds=1)
    assert r["one_at_a_time"] > 0 and r["batched"] > 0 and r["backend"] == "torch"
    assert r["ratio"] == pytest.approx(r["batched"] / r["one_at_a_time"])
