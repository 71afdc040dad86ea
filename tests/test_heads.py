"""Per-head induction, previous-token and duplicate-token scores (gpt2_common.interp.heads) on
hand-made attention patterns whose answer is known, on repeated random tokens, and through a model."""
from __future__ import annotations

import numpy as np
import pytest

from gpt2_common.interp import heads
from gpt2_common.interp.data import repeated_random_tokens, write_token_file


def stripe(T: int, offset: int) -> np.ndarray:
    """A causal pattern [T, T] attending from each query t to key t - offset (to itself where
    t - offset < 0): a one-hot per row."""
    p = np.zeros((T, T))
    for t in range(T):
        p[t, t - offset if t >= offset else t] = 1.0
    return p


@pytest.mark.parametrize("bos", [None, 50256])
def test_scores_of_known_patterns(bos):
    n, B = 6, 3
    off = 0 if bos is None else 1
    T = off + 2 * n
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    # layer 0: head 0 previous-token, head 1 uniform; layer 1: head 0 induction, head 1 duplicate
    layers = [[stripe(T, 1), uniform], [stripe(T, n - 1), stripe(T, n)]]
    patterns = np.stack([np.stack([np.stack(hs)] * B) for hs in layers])  # [L, B, H, T, S]
    s = heads.scores_from_patterns(patterns, n, off)
    assert set(s) == set(heads.SCORES) and all(v.shape == (2, 2) for v in s.values())
    np.testing.assert_allclose(s["previous"][0, 0], 1.0)
    np.testing.assert_allclose(s["induction"][1, 0], 1.0)
    np.testing.assert_allclose(s["duplicate"][1, 1], 1.0)
    # the uniform head: the mean of 1/(t+1) over the scored queries t
    second = np.arange(off + n, off + 2 * n)
    np.testing.assert_allclose(s["induction"][0, 1], np.mean(1.0 / (second + 1)))
    np.testing.assert_allclose(s["previous"][0, 1], np.mean(1.0 / np.arange(2, T + 1)))
    # each one-hot head scores 0 on the others' offsets
    assert s["induction"][0, 0] == s["duplicate"][0, 0] == 0.0
    assert s["previous"][1, 0] == s["duplicate"][1, 0] == 0.0
    assert s["induction"][1, 1] == s["previous"][1, 1] == 0.0
    assert heads.top_heads(s["induction"], 2)[0] == ((1, 0), 1.0)
    # one layer's [B, H, T, S] gives [H]
    np.testing.assert_allclose(heads.scores_from_patterns(patterns[1], n, off)["induction"], [1.0, 0.0])


def test_scores_average_over_batch_and_queries():
    n, T = 4, 8
    a, b = stripe(T, n - 1), stripe(T, 1)
    half = np.stack([np.stack([a]), np.stack([b])])[None]  # [L=1, B=2, H=1, T, S]: one row induction, one not
    s = heads.scores_from_patterns(half, n)
    assert s["induction"][0, 0] == pytest.approx(0.5)


def test_bad_layout():
    with pytest.raises(ValueError, match="no two copies"):
        heads.scores_from_patterns(np.zeros((1, 1, 1, 7, 7)), 4)
    with pytest.raises(ValueError, match="must be"):
        heads.scores_from_patterns(np.zeros((7, 7)), 3)


def test_top_heads_order():
    s = np.array([[0.1, 0.9], [0.9, 0.3]])
    assert heads.top_heads(s, 3) == [((0, 1), 0.9), ((1, 0), 0.9), ((1, 1), 0.3)]


def test_split_losses():
    n, off = 5, 1
    T = off + 2 * n
    losses = np.zeros((2, T - 1))
    losses[:, off:off + n - 1] = 3.0  # predicting r[1..n-1] the first time
    losses[:, off + n - 1] = 100.0  # predicting the second copy's first token: left out
    losses[:, off + n:] = 0.5  # predicting r[1..n-1] again
    assert heads.split_losses(losses, n, off) == (3.0, 0.5)


def test_token_losses():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))
    tokens = np.array([[0, 1, 2]])
    np.testing.assert_allclose(heads.token_losses(logits, tokens), [[-np.log(0.25), -np.log(0.8)]])


def test_repeated_random_tokens(tmp_path):
    t = repeated_random_tokens(4, 5, 10, seed=3, bos=50256, low=100)
    assert t.shape == (4, 11) and t.dtype == np.int32
    assert (t[:, 0] == 50256).all() and (t[:, 1:6] == t[:, 6:]).all()
    assert t[:, 1:].min() >= 100 and t[:, 1:].max() < 110
    np.testing.assert_array_equal(t, repeated_random_tokens(4, 5, 10, seed=3, bos=50256, low=100))
    assert not np.array_equal(t, repeated_random_tokens(4, 5, 10, seed=4, bos=50256, low=100))
    path = tmp_path / "r.bin"
    assert write_token_file(str(path), t) == t.size
    np.testing.assert_array_equal(np.fromfile(path, dtype="<u2"), t.reshape(-1))
    with pytest.raises(ValueError):
        repeated_random_tokens(1, 4, 10, low=50250)


def test_head_scores_through_a_model(make_model_dir):
    """Through run_with_cache on both backends: the scores are those of the cached patterns, the
    same (to float rounding) on TF and torch, and the losses split as the logits say."""
    from conftest import need

    need("torch")
    need("tensorflow")
    from gpt2_common import load_model
    from gpt2_common.interp import interventions as iv

    d = make_model_dir("tiny")
    got = {}
    for backend in ("tf", "torch"):
        model = load_model(backend, d, device="cpu")
        s = heads.head_scores(model, length=8, vocab=100, count=4, seed=1, bos=50256, low=500)
        assert s.induction.shape == s.previous.shape == s.duplicate.shape == (2, 2)
        assert s.tokens.shape == (4, 17) and s.offset == 1
        _, cache = model.run_with_cache(s.tokens, names=heads.pattern_name(1))
        np.testing.assert_allclose(s.induction[1], heads.scores_from_patterns(
            cache["blocks.1.attn.hook_pattern"], 8, 1)["induction"], rtol=1e-6)  # TF: two eager runs
        first, second = heads.repeated_losses(model, s.tokens, 8, 1)
        expect = heads.split_losses(heads.token_losses(model.logits(s.tokens), s.tokens), 8, 1)
        assert (first, second) == pytest.approx(expect)
        ablated = heads.repeated_losses(model, s.tokens, 8, 1, hooks=iv.ablate_heads(model, [(0, 0), (1, 1)]))
        assert ablated != pytest.approx((first, second))  # the heads matter to a random model too
        got[backend] = (s, first, second, ablated)
    for k in heads.SCORES:
        diff = np.abs(getattr(got["tf"][0], k) - getattr(got["torch"][0], k)).max()
        print(f"{k}: max |tf - torch| {diff:.2e}")
        assert diff < 1e-5
    assert got["tf"][1:3] == pytest.approx(got["torch"][1:3], rel=1e-5)
    assert got["tf"][3] == pytest.approx(got["torch"][3], rel=1e-5)
    print(got["torch"][0].table())
    with pytest.raises(ValueError, match="n_ctx"):
        heads.head_scores(model, length=40)
