"""The two model files as one design: the same public names, one decoding-cache protocol that
round-trips (prefill + decode steps == one full forward), the original ``model(X, past)`` contract,
and torch CPU results that do not depend on the thread count."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MKL_CBWR_STRICT
from gpt2_common.hparams import HParams
from gpt2_common.weights import random_weights

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=4, n_layer=2)
TOL = 1e-5


def public_names(module) -> set:
    """Names the module's file defines at top level (classes, functions, constants, aliases)."""
    tree = ast.parse(open(module.__file__).read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_both_model_files_define_the_same_public_names():
    import gpt2_tf.model
    import gpt2_torch.model

    tf_names, torch_names = public_names(gpt2_tf.model), public_names(gpt2_torch.model)
    # framework-only helpers (TF's variable factory, torch's matmul block count) are private
    assert tf_names == torch_names == {
        "GPT2", "Attention", "Block", "MLP", "LayerNorm", "Conv1D", "attention", "attention_bias",
        "write_cache", "position_ids", "from_weights", "matmul", "checkpoint_name", "MASK_VALUE", "LN_EPS",
        "LayerCache", "Past", "new_cache", "Drop", "dropout", "rows_attention", "decode_head", "lm_head_loss"}


@pytest.fixture(scope="module")
def models():
    import tensorflow as tf
    import torch

    import gpt2_tf.model
    import gpt2_torch.model

    w = random_weights(HP, seed=3, scale=0.2)
    return {"tf": gpt2_tf.model.from_weights(HP, w), "torch": gpt2_torch.model.from_weights(HP, w),
            "tf_mod": tf, "torch_mod": torch}


def run(models, backend, X, **kw):
    """One forward on numpy input; returns ``(logits np.float32, present)``."""
    if backend == "tf":
        tf = models["tf_mod"]
        mask = kw.pop("attention_mask", None)
        out = models["tf"](tf.constant(X, tf.int32), attention_mask=None if mask is None else tf.constant(mask), **kw)
        return out["logits"].numpy(), out["present"]
    torch = models["torch_mod"]
    mask = kw.pop("attention_mask", None)
    with torch.inference_mode():
        out = models["torch"](torch.from_numpy(X.astype(np.int64)),
                              attention_mask=None if mask is None else torch.from_numpy(mask), **kw)
    return out["logits"].numpy(), out["present"]


def empty_cache(models, backend, B, capacity):
    if backend == "tf":
        tf = models["tf_mod"]
        z = tf.zeros([B, HP.n_head, 0, HP.head_dim])
        return [(z, z)] * HP.n_layer
    import gpt2_torch.model

    return gpt2_torch.model.new_cache(HP, B, capacity, models["torch"].wte)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_cache_protocol_round_trips(models, backend, padded):
    """Prefill 7 tokens into the decoding cache, then 9 single-token steps: the same logits as
    one forward over all 16 (with left padding too)."""
    X = np.random.default_rng(0).integers(0, HP.n_vocab, (2, 16))
    mask = np.ones_like(X, dtype=np.int32)
    if padded:
        mask[1, :3] = 0
    full, _ = run(models, backend, X, attention_mask=mask if padded else None)
    past = empty_cache(models, backend, 2, 16)
    logits, past = run(models, backend, X[:, :7], past=past, past_length=0,
                       attention_mask=mask[:, :7] if padded else None)
    steps = [logits]
    for t in range(7, 16):
        logits, past = run(models, backend, X[:, t:t + 1], past=past, past_length=t,
                           attention_mask=mask[:, :t + 1] if padded else None)
        steps.append(logits)
    cached = np.concatenate(steps, axis=1)
    diff = np.abs(cached - full)[mask.astype(bool)].max()
    print(f"{backend} padded={padded}: prefill + 9 decode steps vs one forward: max|diff| = {diff:.2e}")
    assert diff <= TOL


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_original_past_contract(models, backend):
    """``model(X, past) -> {'logits', 'present'}`` with ``present`` ``[B, L, 2, H, T, D]`` and past
    the concatenation of earlier presents, as in the original release."""
    X = np.random.default_rng(1).integers(0, HP.n_vocab, (2, 12))
    full, present_full = run(models, backend, X)
    assert tuple(present_full.shape) == (2, HP.n_layer, 2, HP.n_head, 12, HP.head_dim)
    a, pa = run(models, backend, X[:, :5])
    b, pb = run(models, backend, X[:, 5:], past=pa)
    assert tuple(pb.shape) == (2, HP.n_layer, 2, HP.n_head, 7, HP.head_dim)
    assert np.abs(np.concatenate([a, b], axis=1) - full).max() <= TOL
    assert np.abs(np.concatenate([np.asarray(pa), np.asarray(pb)], axis=-2) - np.asarray(present_full)).max() <= TOL


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_targets_give_the_cross_entropy_of_the_logits(models, backend):
    """``model(X, targets=Y)['loss']`` (the training loss: LM head and cross-entropy fused in
    PyTorch, with a hand-written backward) equals the mean cross-entropy of ``model(X)``'s logits,
    computed in numpy; in PyTorch its gradients equal autograd's through ``cross_entropy``."""
    rng = np.random.default_rng(5)
    for B, T in ((1, 5), (3, 20)):  # 4 and 57 rows: the LM head's two matmul paths
        X, Y = rng.integers(0, HP.n_vocab, (B, T)), rng.integers(0, HP.n_vocab, (B, T))
        logits, _ = run(models, backend, X)
        z = logits.reshape(-1, HP.n_vocab).astype(np.float64)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        expected = float(np.mean(lse - z[np.arange(len(z)), Y.reshape(-1)]))
        if backend == "tf":
            tf = models["tf_mod"]
            loss = float(models["tf"](tf.constant(X, tf.int32), targets=tf.constant(Y, tf.int32))["loss"])
        else:
            torch, model = models["torch_mod"], models["torch"]
            params = list(model.parameters())
            Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
            with torch.enable_grad():
                for p in params:
                    p.requires_grad_(True)
                try:
                    fused = model(Xt, targets=Yt)["loss"]
                    got = torch.autograd.grad(fused, params)
                    plain = torch.nn.functional.cross_entropy(model(Xt)["logits"].reshape(-1, HP.n_vocab), Yt.reshape(-1))
                    want = torch.autograd.grad(plain, params)
                finally:
                    for p in params:
                        p.requires_grad_(False)
            loss = float(fused.detach())
            rel = max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))
            print(f"torch B={B} T={T}: fused loss's gradients vs autograd's: max relative diff = {rel:.2e}")
            assert all(g.layout == torch.strided and g.shape == w.shape for g, w in zip(got, want))
            assert rel < 1e-5
        print(f"{backend} B={B} T={T}: loss {loss:.6f}, numpy {expected:.6f}")
        assert abs(loss - expected) < 1e-5


def test_tf_recomputed_layer_norm_gelu_and_attention_give_the_gradients_of_their_operations(models, monkeypatch):
    """TensorFlow's LayerNorm, GELU and attention keep only their inputs for the backward pass and
    recompute the rest (``tf.recompute_grad``): the gradients of every variable equal those of the
    same operations differentiated as they run (to float32 rounding: the graphs are optimised apart)."""
    import gpt2_tf.model as tm

    tf, model = models["tf_mod"], models["tf"]
    X = tf.constant(np.random.default_rng(7).integers(0, HP.n_vocab, (2, 12)), tf.int32)

    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(model.trainable_variables + model.variables)
            loss = model(X[:, :-1], targets=X[:, 1:])["loss"]
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.variables)]

    recomputed = gradients()
    monkeypatch.setattr(tm, "_layer_norm", tm._layer_norm_ops)
    monkeypatch.setattr(tm, "_gelu", tm._gelu_ops)
    monkeypatch.setattr(tm, "_attention_recomputed", lambda q, k, v, bias, drop, site: tm.attention(q, k, v, bias))
    kept = gradients()
    rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(recomputed, kept))
    print(f"tf: gradients with LayerNorm, GELU and attention recomputed vs kept: max relative diff = {rel:.2e}")
    assert rel < 1e-5


def test_torch_logits_do_not_depend_on_the_thread_count(make_model_dir):
    """Decode steps (the blocked matmul, spelled-out one-query attention; here 39 of them after a
    one-token prefill, whose rows are too few for MKL to split) give bit-identical logits
    with 1 and 4 threads in MKL's default mode; a full forward does too in its strict mode
    (MKL_CBWR=AUTO,STRICT, which the toolkit leaves to the user: it makes small products 6-20x
    slower), and not without it on some CPUs (AVX-512: MKL splits K of [80, 1024] @ [1024, 256])."""
    d = make_model_dir("mid")
    code = (
        "import sys, numpy as np, torch\n"
        "torch.set_num_threads(int(sys.argv[2]))\n"
        "from gpt2_common import load_model\n"
        "m = load_model('torch', sys.argv[1], device='cpu')\n"
        "X = np.random.default_rng(5).integers(0, m.hparams.n_vocab, (2, 40)).astype(np.int32)\n"
        "mask = np.ones_like(X)\n"
        "out = []\n"
        "logits, past = m._prefill(X[:, :1], mask[:, :1])\n"
        "for t in range(1, 40):\n"
        "    logits, past = m._decode(X[:, t:t + 1], past, mask[:, :t + 1]); out.append(logits)\n"
        "np.save(sys.argv[3], np.concatenate([o.reshape(-1) for o in out]))\n"
        "np.save(sys.argv[4], m.logits(X))\n"
    )
    for mode in ("default", MKL_CBWR_STRICT):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env.pop("MKL_CBWR", None)  # the tests' conftest sets strict mode for everything else
        if mode != "default":
            env["MKL_CBWR"] = mode
        results = []
        for threads in (1, 4):
            paths = [str(d / f"{kind}-{threads}.npy") for kind in ("decode", "full")]
            r = subprocess.run([sys.executable, "-c", code, str(d), str(threads), *paths], capture_output=True,
                               text=True, env=env, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            results.append([np.load(p) for p in paths])
        (dec1, full1), (dec4, full4) = results
        print(f"MKL {mode}, 1 vs 4 threads: decode steps max|diff| = {np.abs(dec1 - dec4).max():.2e}, "
              f"full forward max|diff| = {np.abs(full1 - full4).max():.2e}")
        np.testing.assert_array_equal(dec1, dec4)
        if mode != "default":
            np.testing.assert_array_equal(full1, full4)
