"""Training data: gpt2_encode, token files, nshepperd .npz, the document split and the sampler."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt2_common.constants import EOT_TOKEN
from gpt2_common.encoder import load_encoder
from gpt2_common.train.data import (BatchSampler, DataError, encode_corpus, load_tokens,
                                    split_documents, validation_path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def docs_folder(tmp_path, n=20):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    for i in range(n):
        (d / ("sub" if i % 2 else "") / f"doc{i:02d}.txt").write_text(f"Document number {i}. " * (i + 1))
    return d


def test_encode_folder_jsonl_and_split(tmp_path, vocab_dir):
    enc = load_encoder(vocab_dir)
    d = docs_folder(tmp_path)
    out = str(tmp_path / "data.bin")
    docs, n, vdocs, vn = encode_corpus([str(d)], out, enc, val_fraction=0.3, progress=False)
    assert docs + vdocs == 20 and 0 < vdocs < 20
    train, val = np.memmap(out, np.uint16, "r"), np.memmap(validation_path(out), np.uint16, "r")
    assert len(train) == n and len(val) == vn
    assert (train == EOT_TOKEN).sum() == docs and (val == EOT_TOKEN).sum() == vdocs
    # the same split, in memory, from the whole corpus (as gpt2_train --val_fraction does)
    whole = str(tmp_path / "whole.bin")
    encode_corpus([str(d)], whole, enc, progress=False)
    t2, v2 = split_documents(load_tokens(whole), 0.3)
    np.testing.assert_array_equal(t2, train)
    np.testing.assert_array_equal(v2, val)
    # text is encoded on the fly, identically; jsonl documents are lines
    np.testing.assert_array_equal(load_tokens(str(d), enc), load_tokens(whole))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"Line {i}."}) + "\n" for i in range(3)))
    got = load_tokens(str(tmp_path / "d.jsonl"), enc)
    assert list(got) == enc.encode("Line 0.") + [EOT_TOKEN] + enc.encode("Line 1.") + [EOT_TOKEN] + \
        enc.encode("Line 2.") + [EOT_TOKEN]


def test_npz_and_sampler(tmp_path):
    np.savez(tmp_path / "d.npz", np.arange(10), np.arange(100, 130))
    tokens = load_tokens(str(tmp_path / "d.npz"))
    assert len(tokens) == 42 and tokens[10] == EOT_TOKEN and tokens[11] == 100
    s = BatchSampler(tokens, 8, 3, seed=5)
    b = s.batch(7)
    assert b.shape == (3, 8) and b.dtype == np.int32
    np.testing.assert_array_equal(b, BatchSampler(tokens, 8, 3, seed=5).batch(7))  # pure function
    assert not np.array_equal(b, s.batch(8))
    for row in b:  # every row is a window of the data
        assert any(np.array_equal(row, tokens[i:i + 8]) for i in range(len(tokens) - 7))
    with pytest.raises(DataError, match="shorter than one window"):
        BatchSampler(tokens, 64, 1)


def test_undecodable_names_file(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe not utf-8")
    with pytest.raises(DataError, match="bad.txt: not UTF-8"):
        load_tokens(str(tmp_path / "bad.txt"), encoder=object())


def test_encode_cli(tmp_path, vocab_dir):
    d = docs_folder(tmp_path, 4)
    out = tmp_path / "o.bin"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT]))
    # --vocab_dir: the vocabulary alone, no model folder (the README's recipe on a machine with no weights)
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "encode.py"), str(d), str(out), "--vocab_dir", str(vocab_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 documents" in r.stdout and out.stat().st_size > 0
    (d / "bad.txt").write_bytes(b"\xff")
    out2 = tmp_path / "o2.bin"
    r = subprocess.run(cmd[:3] + [str(out2)] + cmd[4:], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "bad.txt" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out2.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # no vocabulary at all (no models/124M here): one line that says how to give one
    r = subprocess.run(cmd[:3] + [str(out2)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {os.path.join('models', '124M')}: no GPT-2 vocabulary"), r.stderr
    assert "--vocab_dir" in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not out2.exists()


def test_checkpoint_pointer_lists_every_kept_save(tmp_path):
    """--keep N keeps N saves, and the ``checkpoint`` pointer lists them (all_model_checkpoint_paths,
    oldest first, as TensorFlow's saver writes it); the latest is model_checkpoint_path."""
    from gpt2_common.checkpoint import resolve_checkpoint_prefix
    from gpt2_common.train.run import RunFolder

    run = RunFolder(str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    weights = {"model/w": np.zeros((2, 2), np.float32)}
    expected = {1: ["model-1"], 2: ["model-1", "model-2"], 3: ["model-2", "model-3"], 4: ["model-3", "model-4"]}
    for step, kept in expected.items():
        run.save(step, weights, {}, {}, {"step": step}, keep=2)
        text = (tmp_path / "run" / "checkpoint").read_text()
        assert text == f'model_checkpoint_path: "model-{step}"\n' + "".join(
            f'all_model_checkpoint_paths: "{k}"\n' for k in kept), text
        assert run.steps() == [int(k.split("-")[1]) for k in kept]
    assert resolve_checkpoint_prefix(str(tmp_path / "run")) == str(tmp_path / "run" / "model-4")
    run.save(5, weights, {}, {}, {"step": 5}, keep=0)  # 0: keep all
    assert (tmp_path / "run" / "checkpoint").read_text().count("all_model_checkpoint_paths") == 3
