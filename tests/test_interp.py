"""Research functions on the named activations (issue #21): logit lens, direct logit
attribution, activation-patching sweeps; each checked against a property it must have and
across the two backends."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import need
from gpt2_common import load_model
from gpt2_common.hooks import HookError
from gpt2_common.interp.lens import direct_logit_attribution, logit_lens
from gpt2_common.interp.patching import logit_diff_metric, patch_heads, patch_residual

need("torch")
need("tensorflow")

_models = {}


def models(make_model_dir):
    if not _models:
        d = make_model_dir("tiny")
        _models.update({b: load_model(b, d, device="cpu") for b in ("tf", "torch")})
    return _models


TEXT = [464, 3290, 3332, 319, 262, 2603, 13, 383, 3797, 3332]


def test_logit_lens_ends_at_the_models_prediction(make_model_dir):
    lenses = {}
    for b, m in models(make_model_dir).items():
        lens = logit_lens(m, TEXT, k=3)
        L, T = m.hparams.n_layer, len(TEXT)
        assert lens.stages == ["embed", "block 0", "block 1"]
        assert lens.top_ids.shape == (L + 1, T, 3) and lens.target_rank.shape == (L + 1, T)
        logits = m.logits([TEXT])[0].astype(np.float64)
        lp = logits - logits.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        np.testing.assert_array_equal(lens.top_ids[-1, :, 0], logits.argmax(-1))
        want = lp[np.arange(T - 1), TEXT[1:]]
        print(f"{b}: last stage target logprob vs the model's, max diff "
              f"{np.abs(lens.target_logprob[-1, :-1] - want).max():.2e}")
        np.testing.assert_allclose(lens.target_logprob[-1, :-1], want, atol=1e-4)
        # the rank among the model's logits; the lens's own product (numpy's) may order a near
        # tie (within float32 rounding of the target's logit) the other way: allowed, no more
        at = logits[np.arange(T - 1), TEXT[1:]][:, None]
        lo, hi = ((logits[np.arange(T - 1)] > at + d).sum(-1) + 1 for d in (1e-5, -1e-5))
        assert ((lo <= lens.target_rank[-1, :-1]) & (lens.target_rank[-1, :-1] <= hi)).all(), (lens.target_rank[-1], lo, hi)
        assert lens.target_rank[-1, -1] == 0 and lens.targets[-1] == -1  # no next token
        assert (np.diff(lens.top_probs, axis=-1) <= 0).all()
        lenses[b] = lens
    np.testing.assert_array_equal(lenses["tf"].top_ids, lenses["torch"].top_ids)
    print(f"lens target prob tf vs torch: {np.abs(lenses['tf'].target_prob - lenses['torch'].target_prob).max():.2e}")
    np.testing.assert_allclose(lenses["tf"].target_prob, lenses["torch"].target_prob, atol=1e-5)


def test_direct_logit_attribution_sums_to_the_logit(make_model_dir):
    res = {}
    for b, m in models(make_model_dir).items():
        a = direct_logit_attribution(m, TEXT, position=-1)
        logits = m.logits([TEXT])[0, -1]
        assert a.token == int(logits.argmax()) and a.heads.shape == (2, 2) and a.mlps.shape == (2,)
        print(f"{b}: DLA total {a.total:.5f} vs logit {a.logit:.5f}; top {a.top(3)}")
        assert abs(a.total - a.logit) <= 1e-4 * max(1.0, abs(a.logit))
        d = direct_logit_attribution(m, TEXT, position=4, token=11, against=13)
        assert abs(d.total - d.logit) <= 1e-4 * max(1.0, abs(d.logit))
        assert abs(d.logit - (m.logits([TEXT])[0, 4, 11] - m.logits([TEXT])[0, 4, 13])) <= 1e-5
        res[b] = a
    np.testing.assert_allclose(res["tf"].heads, res["torch"].heads, rtol=1e-4, atol=1e-5)
    with pytest.raises(HookError, match="outside the text's 10 tokens"):
        direct_logit_attribution(models(make_model_dir)["tf"], TEXT, position=10)


def test_patching_sweeps_localise_the_changed_token(make_model_dir):
    clean = TEXT
    corrupt = list(TEXT)
    corrupt[3] = 1110  # one token differs
    out = {}
    for b, m in models(make_model_dir).items():
        logits = m.logits([clean])[0, -1]
        good, bad = int(np.argsort(logits)[-1]), int(np.argsort(logits)[-2])
        metric = logit_diff_metric(-1, good, bad)
        res = patch_residual(m, clean, corrupt, metric)
        assert res.scores.shape == (2, len(TEXT))
        print(f"{b}: residual patching, block 0 {np.round(res.scores[0], 3)}")
        # block 0's input at the changed position restores the clean run; elsewhere it is the same
        assert abs(res.scores[0, 3] - 1.0) <= 1e-4
        assert np.abs(np.delete(res.scores[0], 3)).max() <= 1e-4
        assert np.abs(res.scores[:, :3]).max() <= 1e-4  # before the change nothing differs
        heads = patch_heads(m, clean, corrupt, metric)
        assert heads.scores.shape == (2, 2) and np.isfinite(heads.scores).all()
        out[b] = (res.scores, heads.scores)
    for i in range(2):
        print(f"tf vs torch patching scores: {np.abs(out['tf'][i] - out['torch'][i]).max():.2e}")
        np.testing.assert_allclose(out["tf"][i], out["torch"][i], atol=1e-4)
    with pytest.raises(HookError, match="same length"):
        patch_residual(models(make_model_dir)["tf"], clean, corrupt[:-1], metric)
