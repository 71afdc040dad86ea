"""TensorFlow's XLA decode path (``gpt2_tf.backend``): on by default for fp32 on the CPU, the
decode step's dense work really runs as XLA functions, and it agrees with the path without XLA."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import need

need("tensorflow")


def xla_calls(m) -> int:
    """How many XLA-compiled calls the traced decode step makes."""
    graph = m._decode_fn.get_concrete_function().graph
    n = 0
    for op in graph.get_operations():
        try:
            n += bool(op.get_attr("_XlaMustCompile"))
        except ValueError:
            pass
    return n


def test_decode_step_runs_dense_work_in_xla_and_matches(make_model_dir, monkeypatch):
    from gpt2_tf.backend import TFGPT2

    d = str(make_model_dir("tiny"))
    on, off = TFGPT2(d), TFGPT2(d, xla=False)
    assert on.xla and not off.xla
    L = on.hparams.n_layer
    assert xla_calls(on) == 3 * L + 1 and xla_calls(off) == 0  # c_attn, c_proj, MLP per layer; LM head
    rng = np.random.default_rng(0)
    for B in (1, 3):
        tokens = rng.integers(0, on.hparams.n_vocab, size=(B, 5)).astype(np.int32)
        a = on.generate(tokens, 12, temperature=0)
        assert np.array_equal(a, off.generate(tokens, 12, temperature=0))
        mask = np.ones((B, 5), np.int32)
        (la, pa), (lb, pb) = on._prefill(tokens, mask), off._prefill(tokens, mask)
        np.testing.assert_array_equal(la, lb)  # prompts: the same kernels either way
        step, mask = tokens[:, -1:], np.ones((B, 6), np.int32)
        (la, pa), (lb, pb) = on._decode(step, pa, mask), off._decode(step, pb, mask)
        assert np.abs(la - lb).max() <= 1e-5
        assert max(float(np.abs(x.numpy() - y.numpy()).max()) for ka, kb in zip(pa, pb) for x, y in zip(ka, kb)) <= 1e-5
    # the variables and their checkpoint names do not change
    assert [v.name for v in on.model.variables] == [v.name for v in off.model.variables]


@pytest.mark.parametrize("env, expected", [(None, True), ("0", False), ("off", False), ("1", True)])
def test_env_var_turns_xla_off(env, expected, monkeypatch):
    from gpt2_tf.backend import XLA_ENV, xla_enabled

    if env is None:
        monkeypatch.delenv(XLA_ENV, raising=False)
    else:
        monkeypatch.setenv(XLA_ENV, env)
    assert xla_enabled(None, "/CPU:0", "float32") is expected
    assert xla_enabled(None, "/CPU:0", "bfloat16") is False  # measured in fp32 on the CPU only
    assert xla_enabled(True, "/GPU:0", "bfloat16") is True and xla_enabled(False, "/CPU:0", "float32") is False


def test_load_model_passes_the_backends_own_options(make_model_dir):
    from gpt2_common.interface import ModelError, load_model

    d = make_model_dir("tiny")
    assert load_model("tf", d, xla=False).xla is False
    with pytest.raises(ModelError, match="the torch backend takes no option 'xla'"):
        load_model("torch", d, xla=False)
