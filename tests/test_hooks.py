"""Named activations, hooks and interventions on both backends (issue #21), with parity.

Every named activation is compared TF vs torch (fp32, CPU) with and without left padding, each
comparison printing its max relative difference; interventions give the same logits on both
backends, an empty intervention is the plain forward bit for bit, activation gradients agree."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import CONFIGS, need
from gpt2_common import load_model
from gpt2_common.hooks import HookError, hook_names, merge_hooks
from gpt2_common.interface import pad_left
from gpt2_common.interp import interventions as iv
from gpt2_common.interp.metrics import logit_diff

need("torch")
need("tensorflow")

BACKENDS = ("tf", "torch")
REL = 1e-5
_models = {}


def models(make_model_dir, config="tiny"):
    if config not in _models:
        d = make_model_dir(config)
        _models[config] = {b: load_model(b, d, device="cpu") for b in BACKENDS}
    return _models[config]


def batch(hp, padded: bool, T: int = 12, seed: int = 3):
    rng = np.random.default_rng(seed)
    lengths = [T, T - 5, T - 1] if padded else [T, T, T]
    tokens, mask = pad_left([list(rng.integers(0, hp.n_vocab, n)) for n in lengths])
    return tokens, (mask if padded else None)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def real_positions(name: str, arr: np.ndarray, mask) -> np.ndarray:
    """The entries that mean something: query rows of real tokens (and unmasked scores)."""
    if mask is None:
        return arr
    m = mask.astype(bool)
    if name.endswith(("hook_attn_scores", "hook_pattern")):  # [B, H, T, S]: real query and key
        keep = m[:, None, :, None] & m[:, None, None, :]
        return arr[np.broadcast_to(keep, arr.shape)]
    return arr[m]


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("config", ["tiny", "mid", pytest.param("124M", marks=pytest.mark.slow)])
def test_every_activation_agrees_across_backends(make_model_dir, config, padded):
    ms = models(make_model_dir, config)
    hp = ms["tf"].hparams
    tokens, mask = batch(hp, padded)
    B, T = tokens.shape
    caches = {b: m.run_with_cache(tokens, attention_mask=mask) for b, m in ms.items()}
    assert list(caches["tf"][1]) == list(caches["torch"][1]) == hook_names(hp.n_layer)
    E, H, D = hp.n_embd, hp.n_head, hp.head_dim
    shapes = {"hook_scale": (B, T, 1), "hook_q": (B, T, H, D), "hook_k": (B, T, H, D), "hook_v": (B, T, H, D),
              "hook_z": (B, T, H, D), "hook_attn_scores": (B, H, T, T), "hook_pattern": (B, H, T, T),
              "hook_pre": (B, T, 4 * E), "hook_post": (B, T, 4 * E)}
    worst = (0.0, "")
    for name in hook_names(hp.n_layer):
        a, c = caches["tf"][1][name], caches["torch"][1][name]
        assert a.shape == c.shape == shapes.get(name.split(".")[-1], (B, T, E)), name
        assert a.dtype == c.dtype == np.float32
        r = rel(real_positions(name, a, mask), real_positions(name, c, mask))
        worst = max(worst, (r, name))
        assert r <= REL, f"{name}: tf vs torch relative difference {r:.2e}"
    print(f"{config} {'padded' if padded else 'unpadded'}: {len(caches['tf'][1])} activations, "
          f"max relative tf-vs-torch difference {worst[0]:.2e} ({worst[1]})")
    for b, m in ms.items():  # the cached forward's logits are the plain forward's
        print(f"{b}: cached vs plain logits {rel(caches[b][0], m.logits(tokens, attention_mask=mask)):.2e}")
        assert rel(caches[b][0], m.logits(tokens, attention_mask=mask)) <= REL


def test_activations_mean_what_their_names_say(make_model_dir):
    """The cache is the forward pass: LayerNorm scale and output, the pattern's softmax and mask,
    z as pattern @ v, the residual sums and the logits as ln_final @ wte^T."""
    for b, m in models(make_model_dir).items():
        tokens, mask = batch(m.hparams, padded=True)
        logits, c = m.run_with_cache(tokens, attention_mask=mask)
        x = c["blocks.1.hook_resid_pre"]
        u = x.mean(-1, keepdims=True)
        np.testing.assert_allclose(c["blocks.1.ln1.hook_scale"], np.sqrt(((x - u) ** 2).mean(-1, keepdims=True) + 1e-5),
                                   rtol=1e-5)
        p = c["blocks.0.attn.hook_pattern"]
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        assert (np.triu(p[0, 0], 1) == 0).all()  # causal
        assert (p[1][..., mask[1] == 0][:, mask[1] == 1] == 0).all()  # padding keys get no attention
        z = np.einsum("bhts,bshd->bthd", p, c["blocks.0.attn.hook_v"])
        np.testing.assert_allclose(c["blocks.0.attn.hook_z"], z, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c["blocks.0.hook_resid_mid"],
                                   c["blocks.0.hook_resid_pre"] + c["blocks.0.hook_attn_out"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c["blocks.0.hook_resid_post"], c["blocks.1.hook_resid_pre"])
        np.testing.assert_allclose(c["blocks.0.hook_resid_pre"], c["hook_embed"] + c["hook_pos_embed"], rtol=1e-6)
        wte = m.run_with_cache(np.arange(m.hparams.n_vocab)[None], names="hook_embed")[1]["hook_embed"][0] \
            if m.hparams.n_vocab <= 4096 else None
        if wte is not None:
            np.testing.assert_allclose(logits, c["ln_final.hook_normalized"] @ wte.T, rtol=1e-4, atol=1e-4)


def test_names_filters_and_edits(make_model_dir):
    for b, m in models(make_model_dir).items():
        tokens, _ = batch(m.hparams, padded=False)
        _, c = m.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
        assert list(c) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
        _, c = m.run_with_cache(tokens, names=["blocks.1.hook_resid_post", "hook_embed"])
        assert list(c) == ["hook_embed", "blocks.1.hook_resid_post"]
        # an edit takes effect downstream: all heads of layer 0 silenced -> attn_out is c_proj's bias
        silenced = {"blocks.0.attn.hook_z": lambda a, n: np.zeros_like(a)}
        _, c = m.run_with_cache(tokens, names="blocks.0.hook_attn_out", hooks=silenced)
        out = c["blocks.0.hook_attn_out"]
        np.testing.assert_allclose(out, np.broadcast_to(out[0, 0], out.shape), atol=1e-6)
        seen = []
        m.run_with_hooks(tokens, {"blocks.1.mlp.hook_post": [lambda a, n: seen.append((n, a.shape))]})
        assert seen == [("blocks.1.mlp.hook_post", (3, 12, 4 * m.hparams.n_embd))]


def test_empty_interventions_are_the_plain_forward_exactly(make_model_dir):
    for b, m in models(make_model_dir).items():
        tokens, mask = batch(m.hparams, padded=True)
        plain = m.logits(tokens, attention_mask=mask)
        for hooks in (iv.ablate_heads(m, []), iv.ablate_neurons(m, []), {}, merge_hooks()):
            assert hooks == {}
            np.testing.assert_array_equal(m.run_with_hooks(tokens, hooks, attention_mask=mask), plain)
        np.testing.assert_array_equal(m.generate(tokens[0], 4, seed=2, hooks={}), m.generate(tokens[0], 4, seed=2))
    m = models(make_model_dir)["torch"]  # torch runs hooked forwards through the same kernels
    keep = {n: (lambda a, name: None) for n in hook_names(m.hparams.n_layer) if "attn_scores" not in n
            and "pattern" not in n and "scale" not in n}
    np.testing.assert_array_equal(m.run_with_hooks(tokens, keep, attention_mask=mask), m.logits(tokens, attention_mask=mask))


def test_interventions_agree_across_backends(make_model_dir):
    ms = models(make_model_dir, "mid")
    hp = ms["tf"].hparams
    tokens, mask = batch(hp, padded=True)
    corrupt, _ = batch(hp, padded=True, seed=9)
    direction = np.random.default_rng(1).standard_normal(hp.n_embd).astype(np.float32)
    out = {}
    for b, m in ms.items():
        _, clean = m.run_with_cache(tokens, attention_mask=mask)
        runs = {
            "zero-ablate heads": (tokens, iv.ablate_heads(m, [(1, 3), (2, 0)])),
            "mean-ablate heads": (tokens, iv.ablate_heads(m, [(0, 5)], mode="mean", means=clean)),
            "ablate neurons": (tokens, iv.ablate_neurons(m, [(3, 7), (3, 900)], mode="mean")),
            "patch resid": (corrupt, iv.patch(m, clean, "blocks.2.hook_resid_pre", positions=[-1, 4])),
            "patch head": (corrupt, iv.patch(m, clean, "blocks.1.attn.hook_z", heads=[2])),
            "patch pattern": (corrupt, iv.patch(m, clean, "blocks.3.attn.hook_pattern", heads=1, positions=-1)),
            "steer": (tokens, iv.steer(m, 2, direction, coeff=3.0)),
        }
        out[b] = {k: m.run_with_hooks(t, h, attention_mask=mask) for k, (t, h) in runs.items()}
        plain = m.logits(tokens, attention_mask=mask)
        for k in ("zero-ablate heads", "ablate neurons", "steer"):  # each one changes something
            assert np.abs(out[b][k] - plain).max() > 1e-3, k
        np.testing.assert_allclose(  # patching everything from the clean run gives the clean logits
            m.run_with_hooks(corrupt, iv.patch(m, clean, "blocks.0.hook_resid_pre"), attention_mask=mask), plain,
            rtol=1e-5, atol=1e-5)
    for k in out["tf"]:
        r = rel(out["tf"][k][mask.astype(bool)], out["torch"][k][mask.astype(bool)])
        print(f"{k}: tf vs torch logits, relative {r:.2e}")
        assert r <= REL, k


def test_steered_generation_agrees_across_backends(make_model_dir):
    ms = models(make_model_dir)
    v = np.random.default_rng(4).standard_normal(ms["tf"].hparams.n_embd).astype(np.float32)
    prompt = [464, 3290, 318]
    runs = {b: m.generate(prompt, 8, seed=5, temperature=0, hooks=iv.steer(m, 1, v, coeff=30.0)) for b, m in ms.items()}
    plain = ms["torch"].generate(prompt, 8, seed=5, temperature=0)
    np.testing.assert_array_equal(runs["tf"], runs["torch"])
    assert not np.array_equal(runs["torch"], plain)  # the steering did something


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
def test_activation_gradients_agree_across_backends(make_model_dir, padded):
    ms = models(make_model_dir, "mid")
    tokens, mask = batch(ms["tf"].hparams, padded)
    names = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.attn.hook_pattern",
             "blocks.3.mlp.hook_post", "blocks.3.hook_resid_post", "ln_final.hook_scale"]
    for metric in ("loss", logit_diff(-1, 262, 11)):
        res = {b: m.activation_gradients(tokens, names, metric, attention_mask=mask) for b, m in ms.items()}
        assert abs(res["tf"][0] - res["torch"][0]) <= 1e-5 * max(1.0, abs(res["torch"][0]))
        for n in names:
            g_tf, g_torch = res["tf"][1][n], res["torch"][1][n]
            assert np.abs(g_torch).max() > 0, n
            r = rel(g_tf, g_torch)
            print(f"{metric if isinstance(metric, str) else 'logit_diff'} d/d {n}: tf vs torch relative {r:.2e}")
            assert r <= 1e-4, n
    if not padded:  # the loss metric is the model's loss
        value, _ = ms["torch"].activation_gradients(tokens, ["hook_embed"])
        assert abs(value - ms["torch"].loss(tokens)) <= 1e-5 * value


def test_activation_gradients_match_finite_differences(make_model_dir):
    """d loss / d resid at one coordinate, against a central difference through run_with_hooks."""
    m = models(make_model_dir)["torch"]
    tokens, _ = batch(m.hparams, padded=False)
    name, at = "blocks.1.hook_resid_pre", (1, 4, 7)
    _, g = m.activation_gradients(tokens, [name], "loss")

    def loss_with(delta):
        def bump(a, n):
            a = a.astype(np.float64).copy()
            a[at] += delta
            return a
        logits = m.run_with_hooks(tokens, {name: bump}).astype(np.float64)
        lp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        return -np.take_along_axis(lp[:, :-1], tokens[:, 1:, None], -1).mean()
    fd = (loss_with(1e-2) - loss_with(-1e-2)) / 2e-2
    print(f"d loss/d {name}{list(at)}: autodiff {g[name][at]:.6f}, central difference {fd:.6f}")
    assert abs(fd - g[name][at]) <= 2e-3 * max(abs(fd), 1e-3) + 1e-5


def test_bad_hooks_are_clear_errors(make_model_dir):
    m = models(make_model_dir)["tf"]
    tokens, _ = batch(m.hparams, padded=False)
    cases = [
        (lambda: m.run_with_cache(tokens, names=["blocks.0.attn.hook_patern"]), "did you mean blocks.0.attn.hook_pattern"),
        (lambda: m.run_with_hooks(tokens, {"blocks.7.hook_resid_pre": lambda a, n: None}), "has 2 layers"),
        (lambda: m.run_with_hooks(tokens, {"hook_embed": lambda a, n: a[:, :3]}), "returned shape [3, 3, 32], expected [3, 12, 32]"),
        (lambda: m.run_with_hooks(tokens, {"hook_embed": lambda a, n: a.astype(np.int64)}), "dtype int64"),
        (lambda: m.run_with_hooks(tokens, {"hook_embed": "zero"}), "a hook must be a function"),
        (lambda: iv.ablate_heads(m, [(2, 0)]), "layer 2 is out of range"),
        (lambda: iv.ablate_heads(m, [(0, 2)]), "head 2 is out of range"),
        (lambda: iv.ablate_heads(m, [(0, 0)], mode="max"), "unknown ablation mode"),
        (lambda: iv.ablate_neurons(m, [(1, 128)]), "neuron 128 is out of range"),
        (lambda: iv.steer(m, 0, np.ones(7)), "shape [32]"),
        (lambda: m.run_with_hooks(tokens[:, :5], iv.patch(m, m.run_with_cache(tokens)[1], "hook_embed")),
         "another model, batch or length"),
        (lambda: iv.patch(m, {}, "blocks.0.hook_resid_pre"), "has no blocks.0.hook_resid_pre"),
        (lambda: m.activation_gradients(tokens, ["hook_embed"], "accuracy"), "unknown metric"),
    ]
    for call, message in cases:
        with pytest.raises(HookError) as e:
            call()
        assert message in str(e.value), (message, str(e.value))
