"""Issue 22, files: no write follows a planted symbolic link (scoring parts, training saves,
gpt2_encode, gpt2_convert; the downloads are in test_download.py), a killed run leaves nothing
that the next one does not clean, and permission problems are one line."""
from __future__ import annotations

import contextlib
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


# ------------------------------------------------------------------ errors: one line, and early
@contextlib.contextmanager
def unprivileged():
    """Run the block with permission checks in force. As root (CI's containers, this VM), mode
    000 blocks nothing, so the block runs with the effective ids of ``nobody`` (65534) and
    switches back after; otherwise it runs as is."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def cli_error(capsys, monkeypatch, script, *args) -> str:
    """Run console script ``script`` in-process; assert exit 2 with one ``error:`` line; return it."""
    import importlib
    import sys

    module = importlib.import_module(f"scripts.{script}")
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        module.main()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (e.value.code, err)
    return lines[0]


@pytest.fixture
def world_readable(tmp_path):
    """A folder that ``nobody`` can reach (pytest's own are root's 0700)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="gpt2-perm-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d)


def test_permission_errors_are_one_line(tiny_dir, tokens_file, world_readable, capsys, monkeypatch):
    import shutil

    from gpt2_common import interface

    base = world_readable
    for name in ("noread", "nocheckpoint", "noindex", "m"):
        shutil.copytree(tiny_dir, base / name)
        (base / name).chmod(0o755)  # mktemp's 0700 came along
    (base / "data.bin").write_bytes(tokens_file.read_bytes())
    (base / "docs.jsonl").write_text('{"text": "One."}\n{"text": "Two."}\n')
    (base / "corpus.txt").write_text("Some text.\n")
    (base / "readonly").mkdir()
    (base / "c").mkdir()
    (base / "c").chmod(0o777)  # writable by whoever runs the cases
    # Import, as root, what the scripts import lazily: nobody cannot read root's site-packages.
    import importlib
    import sys

    for m in ("fire", "tqdm", "gpt2_common.gltr", "gpt2_common.research", "gpt2_common.train.session",
              "gpt2_common.train.loop", "gpt2_common.train.distributed", "gpt2_torch.train", "scripts.score",
              "scripts.train", "scripts.encode"):
        importlib.import_module(m)
    monkeypatch.setattr(sys, "argv", ["score", "Hi", "--model_dir", str(base / "m"), "--device", "cpu"])
    importlib.import_module("scripts.score").main()  # and what loading and scoring import
    (base / "noread").chmod(0)
    (base / "nocheckpoint" / "checkpoint").chmod(0)
    (base / "noindex" / "model.ckpt.index").chmod(0)
    (base / "data.bin").chmod(0)
    (base / "readonly").chmod(0o555)
    (base / "afile").write_text("")
    common = ("--sample_every", 0, "--val_every", 0, "--steps", 1, "--context", 8, "--noprogress")
    loaded = []
    real_load = interface.load_model
    monkeypatch.setattr(interface, "load_model", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    import gpt2_common

    monkeypatch.setattr(gpt2_common, "load_model", interface.load_model)
    cases = [
        (("score", "Hi", "--model_dir", base / "noread"), "noread", True),
        (("score", "Hi", "--model_dir", base / "nocheckpoint"), "nocheckpoint/checkpoint", True),
        (("score", "Hi", "--model_dir", base / "noindex"), "noindex/model.ckpt.index", True),
        (("train", "--dataset", base / "data.bin", "--model_dir", base / "m", "--checkpoint_dir", base / "c", *common),
         "data.bin", False),
        (("encode", base / "corpus.txt", base / "readonly" / "out.bin", "--model_dir", base / "m"), "readonly", False),
        (("score", "--file", base / "docs.jsonl", "--output", base / "readonly" / "o.jsonl", "--model_dir", base / "m"),
         "readonly", False),
        (("train", "--dataset", base / "data.bin", "--model_dir", base / "m", "--checkpoint_dir", base / "readonly",
          *common), "readonly", False),
        (("train", "--dataset", base / "data.bin", "--model_dir", base / "m", "--checkpoint_dir", base / "afile",
          *common), "afile is a file", False),
        (("train", "--dataset", base / "data.bin", "--model_dir", base / "m", "--checkpoint_dir", base,
          "--run_name", "afile", *common), "afile is a file", False),
    ]
    for args, needle, may_load in cases:
        loaded.clear()
        with unprivileged():
            line = cli_error(capsys, monkeypatch, *args)
        with capsys.disabled():
            print(" ".join(map(str, args[:2])), "->", line)
        assert needle in line and "Errno" not in line, line
        assert may_load or not loaded, f"{line}: reported only after the model loaded"
    assert list((base / "c").iterdir()) == []
    assert sorted(p.name for p in base.iterdir()) == ["afile", "c", "corpus.txt", "data.bin", "docs.jsonl", "m",
                                                       "nocheckpoint", "noindex", "noread", "readonly"]
    assert list((base / "readonly").iterdir()) == []


def test_damaged_or_foreign_train_state_is_one_line(tiny_dir, tokens_file, tmp_path, monkeypatch):
    import gpt2_common
    from scripts.train import train

    kw = dict(dataset=str(tokens_file), model_dir=str(tiny_dir), checkpoint_dir=str(tmp_path), run_name="r",
              batch_size=1, context=8, sample_every=0, val_every=0, save_every=1, keep=0, progress=False)
    train(steps=2, **kw)
    state = tmp_path / "r" / "train-2.npz"
    good = state.read_bytes()
    record = np.array(json.dumps({"step": 2}))

    def write(**arrays):
        with open(state, "wb") as f:
            np.savez(f, **arrays)
    damages = {"garbage": lambda: state.write_bytes(b"\x00" * 100),
               "cut": lambda: state.write_bytes(good[:len(good) // 2]),
               "foreign npz": lambda: write(x=np.zeros(3)),
               "record not JSON": lambda: write(record=np.array("{")),
               "moment of another shape": lambda: write(record=record, **{"opt/m/model/wte": np.zeros(3)}),
               "moment of no variable": lambda: write(record=record, **{"opt/m/model/h9/ln_1/g": np.zeros(32)})}
    real_load, loaded = gpt2_common.load_model, []
    monkeypatch.setattr(gpt2_common, "load_model", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    for name, damage in damages.items():
        damage()
        with pytest.raises(cli.UsageError) as e:
            train(steps=3, **kw)
        assert not loaded, f"{name}: reported after the model loaded"
        text = str(e.value)
        print(f"{name}: {text}")
        assert "\n" not in text and str(state) in text and "model-1" in text and "--restore_from fresh" in text
    state.write_bytes(good)
    train(steps=3, **kw)  # the undamaged state resumes


def test_hparams_that_disagree_with_the_checkpoint(tiny_dir, tmp_path):
    """n_layer 1000000000 used to build a billion layers' names (hang, memory); 1 layer for a
    2-layer checkpoint loaded silently without the second layer."""
    import resource
    import shutil
    import subprocess
    import sys

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    hp = json.loads((d / "hparams.json").read_text())
    code = ("import sys; from gpt2_common.weights import load_weights\n"
            "try:\n    load_weights(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)")

    def limit():  # a billion layers' names must not take the machine down
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    for n_layer, words in ((1_000_000_000, "missing variables model/h2/"), (1, "does not account for: model/h1/"),
                           (3, "missing variables model/h2/")):
        (d / "hparams.json").write_text(json.dumps({**hp, "n_layer": n_layer}))
        p = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=300,
                           preexec_fn=limit, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        print(f"n_layer {n_layer}: {p.stdout.strip()}")
        assert p.returncode == 0 and p.stdout.startswith("CheckpointError") and words in p.stdout, p.stdout + p.stderr
