"""The backend-neutral contract: load_model, logits, generate, and their errors."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gpt2_common import HParamsError, ModelError, SamplingError, load_model, sample_sequence
from gpt2_common.hparams import HParams, load_hparams
from conftest import need

BACKENDS = ["tf", "torch"]


@pytest.fixture(scope="module")
def tiny(make_model_dir):
    d = make_model_dir("tiny")
    return {b: load_model(b, d, device="cpu") for b in BACKENDS}


def test_hparams_defaults_and_errors(tmp_path):
    assert HParams() == HParams(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)
    f = tmp_path / "hparams.json"
    cases = {
        "": "not valid JSON", "[1]": "expected a JSON object",
        '{"n_vocab": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2}': "missing field 'n_layer'",
        '{"n_vocab": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1, "n_foo": 1}': "unknown field 'n_foo'",
        '{"n_vocab": 10, "n_ctx": 0, "n_embd": 8, "n_head": 2, "n_layer": 1}': "'n_ctx' must be positive",
        '{"n_vocab": 10, "n_ctx": 8, "n_embd": 9, "n_head": 2, "n_layer": 1}': "divisible",
        '{"n_vocab": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1.5}': "'n_layer' must be an integer",
    }
    for text, msg in cases.items():
        f.write_text(text)
        with pytest.raises(HParamsError, match=msg) as e:
            load_hparams(tmp_path)
        assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HParamsError, match="file not found"):
        load_hparams(tmp_path / "nowhere")


def test_unknown_backend_device_dtype(make_model_dir):
    d = make_model_dir("tiny")
    with pytest.raises(ModelError, match="unknown backend 'jax'"):
        load_model("jax", d)
    for b in BACKENDS:
        with pytest.raises(ModelError, match="device"):
            load_model(b, d, device="tpu")
    with pytest.raises(ModelError, match="dtype"):
        load_model("torch", d, dtype="int8")


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_input_errors(tiny, backend):
    m = tiny[backend]
    with pytest.raises(ModelError, match="outside"):
        m.logits([[1, 2, m.hparams.n_vocab]])
    with pytest.raises(ModelError, match="exceed the context"):
        m.logits(np.zeros((1, m.hparams.n_ctx + 1), dtype=np.int32))
    with pytest.raises(ModelError, match="non-empty integer array"):
        m.logits(np.zeros((2,), dtype=np.int32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_shapes_and_argument_errors(tiny, backend):
    m = tiny[backend]
    out = m.generate([1, 2, 3], 5, batch_size=3, seed=0)
    assert out.shape == (3, 5) and out.dtype == np.int64
    assert m.generate(None, 4, seed=0).shape == (1, 4)  # unconditional: starts from <|endoftext|>
    assert m.generate([1, 2], 0).shape == (1, 0)
    with pytest.raises(ModelError, match="exceeds the model's context of 64"):
        m.generate(list(range(60)), 6)
    # the last new token is never fed back: 60 + 5 - 1 = 64 positions fit exactly
    assert m.generate(list(range(60)), 5, temperature=0).shape == (1, 5)
    for kw, msg in [(dict(temperature=-1), "temperature"), (dict(top_k=-1), "top_k"),
                    (dict(top_p=0), "top_p"), (dict(batch_size=0), "batch_size")]:
        with pytest.raises(SamplingError, match=msg):
            m.generate([1], 3, **kw)
    with pytest.raises(ModelError, match="outside"):
        m.generate([1, 99999], 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_goes_past_n_ctx(tiny, backend):
    m = tiny[backend]  # n_ctx = 64
    out = m.generate(list(range(40)), 100, temperature=0, sliding_window=True)
    assert out.shape == (1, 100)
    # the first tokens, before the window slides, equal a plain run
    np.testing.assert_array_equal(out[:, :24], m.generate(list(range(40)), 24, temperature=0))


def test_sliding_window_identical_across_backends(tiny):
    kw = dict(top_k=40, seed=3, sliding_window=True)
    a, b = tiny["tf"].generate([5, 6, 7], 150, **kw), tiny["torch"].generate([5, 6, 7], 150, **kw)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_at_endoftext(tiny, backend):
    m = tiny[backend]
    eot = 50256
    # Find a seed whose first sampled row contains <|endoftext|> early by biasing with temperature.
    full = m.generate([eot], 40, temperature=3.0, seed=0, batch_size=4)
    stopped = m.generate([eot], 40, temperature=3.0, seed=0, batch_size=4, stop_at_endoftext=True)
    for r in range(4):
        hits = np.flatnonzero(full[r] == eot)
        if len(hits):  # identical up to and including the first <|endoftext|>, then padding
            k = hits[0]
            np.testing.assert_array_equal(stopped[r, :k + 1], full[r, :k + 1])
            assert (stopped[r, k:] == eot).all()
        else:
            np.testing.assert_array_equal(stopped[r], full[r, :stopped.shape[1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_ends_early_when_every_row_stopped(tiny, backend, monkeypatch):
    m = tiny[backend]
    calls = []
    import gpt2_common.interface as interface

    class AlwaysEOT(interface.Sampler):
        def __call__(self, logits):
            return np.full(logits.shape[0], 50256)

    monkeypatch.setattr(interface, "Sampler", AlwaysEOT)
    out = m.generate([1, 2], 30, stop_at_endoftext=True, batch_size=2, callback=lambda i, t: calls.append(i))
    assert out.shape == (2, 1) and calls == [0]


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's ``src``; asserts it exits 0."""
    env = dict(env, PYTHONPATH=os.pathsep.join([os.path.abspath("src")] + sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_torch_backend_never_imports_tensorflow(make_model_dir):
    """Installing only the torch extra must give a working backend: TF is blocked from importing."""
    d = make_model_dir("tiny")
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from gpt2_common import load_model\n"
        f"m = load_model('torch', {str(d)!r}, device='cpu')\n"
        "print(m.generate([1, 2, 3], 4, seed=0).tolist())\n"
        "assert not any(k.startswith('tensorflow') and sys.modules[k] is not None for k in sys.modules)\n"
    )
    r = run_python(code, dict(os.environ))
    assert r.stdout.startswith("[[")


@pytest.mark.parametrize("preset, expected", [({}, "1"), ({"TF_NUM_INTEROP_THREADS": "3"}, "0"),
                                              ({"SET_FIRST": "4"}, "4")])
def test_tf_backend_uses_one_inter_op_thread_unless_told(preset, expected):
    """On a CPU, importing gpt2_tf sets TF's inter-op pool to one thread, unless the user already
    chose (through the API before the import, or TF_NUM_INTEROP_THREADS)."""
    need("tensorflow")
    code = ("import os, tensorflow as tf\n"
            "if 'SET_FIRST' in os.environ: tf.config.threading.set_inter_op_parallelism_threads(4)\n"
            "import gpt2_tf.backend\n"
            "print(tf.config.threading.get_inter_op_parallelism_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    r = run_python(code, {**env, **preset, "CUDA_VISIBLE_DEVICES": ""})
    assert r.stdout.split()[-1] == expected


def test_sample_sequence_keeps_the_original_contract(tiny):
    import gpt2_tf.sample
    import gpt2_torch.sample

    kw = dict(length=6, top_k=40, seed=11)
    a = gpt2_tf.sample.sample_sequence(tiny["tf"], start_token=50256, batch_size=2, **kw)
    b = gpt2_torch.sample.sample_sequence(tiny["torch"], start_token=50256, batch_size=2, **kw)
    assert a.shape == (2, 7) and (a[:, 0] == 50256).all()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, 1:], tiny["tf"].generate([50256], 6, batch_size=2, top_k=40, seed=11))
    # rows of different lengths: prompts come back left-padded with <|endoftext|>
    out = sample_sequence(tiny["torch"], context=[[1, 2, 3], [4]], length=2, temperature=0)
    assert out.shape == (2, 5)
    np.testing.assert_array_equal(out[:, :3], [[1, 2, 3], [50256, 50256, 4]])
    with pytest.raises(ModelError, match="exactly one"):
        sample_sequence(tiny["tf"], start_token=1, context=[1], length=1)
    with pytest.raises(ModelError, match="batch_size"):
        sample_sequence(tiny["tf"], context=[[1], [2]], batch_size=3, length=1)
