"""Issue 22, files: no write follows a planted symbolic link (scoring parts, training saves,
gpt2_encode, gpt2_convert; the downloads are in test_download.py), a killed run leaves nothing
that the next one does not clean, and permission problems are one line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import need
from gpt2_common import cli

ROOT = Path(__file__).resolve().parents[1]
PRECIOUS = b"precious, 24 bytes long\n"


def outside_file(tmp_path: Path, name: str = "outside.txt") -> Path:
    p = tmp_path / "elsewhere" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(PRECIOUS)
    return p


def user_error_or_none(fn, *args, **kwargs):
    """Run ``fn``; a user error (one line) is fine, and returned; anything else propagates."""
    try:
        fn(*args, **kwargs)
    except cli.user_errors() as e:
        assert "\n" not in str(e).strip()
        return e
    return None


@pytest.fixture(scope="module")
def tiny_dir(make_model_dir):
    need("torch")
    return make_model_dir("tiny", vocab=True)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tokens.bin"
    np.random.default_rng(4).integers(0, 1000, 2000).astype("<u2").tofile(path)
    return path


# ------------------------------------------------------------------ writes through planted links
def test_scoring_part_file_that_is_a_link_is_refused(tiny_dir, tmp_path, monkeypatch):
    from gpt2_common import load_model, research

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Document number {i}."}) + "\n" for i in range(3)))
    target = outside_file(tmp_path)
    out = tmp_path / "scores.jsonl"
    (tmp_path / "scores.jsonl.part0").symlink_to(target)
    with pytest.raises(OSError, match="scores.jsonl.part0 is a symbolic link") as e:
        research.score_to_file(lambda r: load_model("torch", str(tiny_dir), device="cpu"), str(docs),
                               str(out), progress=False)
    assert isinstance(e.value, cli.user_errors())
    assert target.read_bytes() == PRECIOUS and not out.exists()


def test_training_writes_no_file_through_a_link(tiny_dir, tokens_file, tmp_path):
    """One link per run, in place of each file a training run writes: a one-line error or a
    replaced link, but the file outside stays byte-identical (and a dangling link's target is
    never created)."""
    need("tensorflow")
    from scripts.train import train

    ckpt = tmp_path / "checkpoint"
    names = ["hparams.json", "encoder.json", "vocab.bpe", "metrics.jsonl", "samples/step-1.txt", "samples",
             "model-1.index", "model-1.data-00000-of-00001", "train-1.npz", "checkpoint"]
    for i, name in enumerate(names):
        run = ckpt / f"r{i}"
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        target = outside_file(tmp_path, f"{i}.txt")
        dangling = tmp_path / "elsewhere" / f"{i}.new"
        if name == "samples":  # a folder link: nothing may land in the folder it points at
            target = tmp_path / "elsewhere" / "folder"
            target.mkdir()
        (run / name).symlink_to(target if i % 2 else dangling)
        error = user_error_or_none(train, dataset=str(tokens_file), model_dir=str(tiny_dir),
                                   checkpoint_dir=str(ckpt), run_name=f"r{i}", steps=2, save_every=1, keep=0,
                                   batch_size=1, context=8, sample_every=1, sample_length=2, val_every=0,
                                   progress=False)
        print(f"{name}: {error or 'trained (the link was replaced)'}")
        assert list(target.iterdir()) == [] if target.is_dir() else target.read_bytes() == PRECIOUS, name
        assert not dangling.exists(), name


def test_encode_and_convert_outputs_replace_links_not_targets(tiny_dir, tmp_path, capsys, monkeypatch):
    import sys

    from scripts import convert, encode

    text = tmp_path / "corpus.txt"
    text.write_text("Hello there. " * 20)
    out, target, val_target = tmp_path / "train.bin", outside_file(tmp_path), outside_file(tmp_path, "v.txt")
    out.symlink_to(target)
    (tmp_path / "train.val.bin").symlink_to(val_target)
    assert user_error_or_none(encode.encode, str(text), str(out), model_dir=str(tiny_dir), val_fraction=0.5,
                              progress=False) is None
    assert target.read_bytes() == PRECIOUS and val_target.read_bytes() == PRECIOUS
    assert not out.is_symlink() and out.stat().st_size > 0
    empty = tmp_path / "elsewhere" / "empty"
    empty.mkdir()
    (tmp_path / "hf").symlink_to(empty, target_is_directory=True)
    monkeypatch.setattr(sys, "argv", ["gpt2_convert", str(tiny_dir), str(tmp_path / "hf")])
    try:
        convert.main()
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    assert list(empty.iterdir()) == []


# ------------------------------------------------------------------ what a killed run leaves behind
def test_killed_runs_leave_nothing_and_saves_follow_the_umask(tiny_dir, tokens_file, tmp_path, monkeypatch):
    """Stale temporaries of a save killed half-way are removed by the next run; the fresh-weights
    folder of a process killed during start-up is removed by the next from-scratch run (a live
    process's stays); every file of the run folder gets 0666 less the umask, as other writers'."""
    import socket
    import subprocess
    import sys
    import tempfile

    from scripts.train import train

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    host = "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    for pid in (dead, "1"):  # pid 1 is always alive
        (tmp / f"gpt2-train-init-{host}-{pid}-x1y2").mkdir()
        (tmp / f"gpt2-train-init-{host}-{pid}-x1y2" / "model.ckpt.data-00000-of-00001").write_bytes(b"0" * 100)
    ckpt = tmp_path / "checkpoint"
    kw = dict(dataset=str(tokens_file), checkpoint_dir=str(ckpt), run_name="r", batch_size=1, sample_every=0,
              val_every=0, progress=False, n_layer=1, n_embd=8, n_head=2, n_ctx=16, sample_length=4,
              vocab_dir=str(tiny_dir))
    old_umask = os.umask(0o002)
    try:
        train(steps=1, **kw)
        assert sorted(p.name for p in tmp.iterdir()) == [f"gpt2-train-init-{host}-1-x1y2"]
        run = ckpt / "r"
        stale = [".train-1.npz.k3j4.tmp", ".model-1.data.a8b9.tmp", ".model-1.index.zz.tmp",
                 ".model-1.checkpoint.q.tmp", ".metrics.jsonl.w.tmp"]
        for f in stale + [".notes.tmp"]:
            (run / f).write_bytes(b"x" * 1000)
        train(steps=2, **kw)  # resumes at step 1
        assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".notes.tmp"]
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in run.iterdir() if p.is_file() and p.name != ".notes.tmp"}
    finally:
        os.umask(old_umask)
    print(modes)
    assert "train-2.npz" in modes and "model-2.index" in modes
    assert set(modes.values()) == {"0o664"}, modes
