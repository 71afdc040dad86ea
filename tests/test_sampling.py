"""The shared sampling rules (gpt2_common.sampling) against hand-worked cases and the original rules."""
from __future__ import annotations

import numpy as np
import pytest

from gpt2_common.sampling import Sampler, SamplingError, filter_logits, probabilities, validate_args
from conftest import need


def kept(logits, **kw):
    return np.isfinite(filter_logits(np.array([logits], dtype=np.float32), **kw))[0]


def test_top_k_keeps_ties():
    logits = [1.0, 3.0, 2.0, 2.0, 0.5]
    assert kept(logits, top_k=2).tolist() == [False, True, True, True, False]
    assert kept(logits, top_k=1).tolist() == [False, True, False, False, False]
    assert kept(logits, top_k=0).all() and kept(logits, top_k=5).all() and kept(logits, top_k=99).all()


def test_top_p_original_rule_is_inclusive_cumulative_at_most_p():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    assert kept(logits, top_p=0.85).tolist() == [True, True, False, False]  # cum 0.5, 0.8, 0.95
    assert kept(logits, top_p=0.8001).tolist() == [True, True, False, False]
    assert kept(logits, top_p=0.3).tolist() == [True, False, False, False]  # always at least one
    assert kept(logits, top_p=1.0).all()


def test_top_p_holtzman_rule_is_smallest_set_reaching_p():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    assert kept(logits, top_p=0.85, top_p_mode="holtzman").tolist() == [True, True, True, False]
    assert kept(logits, top_p=0.8, top_p_mode="holtzman").tolist() == [True, True, False, False]
    assert kept(logits, top_p=0.3, top_p_mode="holtzman").tolist() == [True, False, False, False]


def test_temperature_applies_before_truncation():
    logits = np.log([0.4, 0.35, 0.25])
    # at T=1 cum = 0.4, 0.75 -> top_p 0.5 keeps 1; at T=0.25 token 0 has ~0.62 -> still 1;
    # at T=10 the distribution flattens (cum ~0.34, 0.67) so top_p 0.7 keeps 2 instead of 1
    assert kept(logits, top_p=0.7).tolist() == [True, False, False]
    assert kept(logits, top_p=0.7, temperature=10.0).tolist() == [True, True, False]


def test_filter_matches_the_original_tensorflow_rules():
    """The original sample.py's top_k_logits/top_p_logits, written in TF2 ops, keep the same tokens."""
    tf = need("tensorflow")
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((6, 500)) * 3).astype(np.float32)
    logits[0, :10] = logits[0, 10]  # ties

    def original(x, k, p):
        x = tf.constant(x)
        if k:
            min_values = tf.math.top_k(x, k=k).values[:, -1, tf.newaxis]
            x = tf.where(x < min_values, tf.ones_like(x) * -1e10, x)
        if p >= 1.0:  # the original's float32 cumsum can pass 1.0 and drop tail tokens; p=1 is "off" here
            return (x > -1e9).numpy()
        sorted_x = tf.sort(x, direction="DESCENDING", axis=-1)
        cum = tf.cumsum(tf.nn.softmax(sorted_x, axis=-1), axis=-1)
        n = tf.maximum(tf.reduce_sum(tf.cast(cum <= p, tf.int32), axis=-1) - 1, 0)
        min_values = tf.gather(sorted_x, n, batch_dims=1)[:, tf.newaxis]
        return (x >= min_values).numpy() & (x > -1e9).numpy()

    for k, p in [(0, 0.9), (40, 1.0), (40, 0.9), (5, 0.5), (0, 0.3), (1, 1.0)]:
        ours = np.isfinite(filter_logits(logits, top_k=k, top_p=p))
        np.testing.assert_array_equal(ours, original(logits, k, p), err_msg=f"top_k={k} top_p={p}")


def test_greedy_and_determinism():
    logits = np.random.default_rng(1).standard_normal((3, 100)).astype(np.float32)
    assert Sampler(3, seed=0, temperature=0)(logits).tolist() == logits.argmax(-1).tolist()
    a = [Sampler(3, seed=7, top_k=10)(logits).tolist() for _ in range(2)]
    assert a[0] == a[1]
    draws = {tuple(Sampler(3, seed=s)(logits).tolist()) for s in range(20)}
    assert len(draws) > 1


def test_per_row_seeds_match_rows_sampled_alone():
    logits = np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32)
    batch = np.stack([Sampler(4, seed=[5, 6, 7, 8])(logits) for _ in range(1)])[0]
    alone = [Sampler(1, seed=s)(logits[i:i + 1])[0] for i, s in enumerate([5, 6, 7, 8])]
    assert batch.tolist() == alone


def test_draws_follow_the_filtered_distribution():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))
    s = Sampler(1, seed=3, top_p=0.85)
    counts = np.bincount([s(logits)[0] for _ in range(4000)], minlength=4)
    p = probabilities(logits, top_p=0.85)[0]
    assert counts[2] == counts[3] == 0
    np.testing.assert_allclose(counts / 4000, p, atol=0.03)


@pytest.mark.parametrize("kw, msg", [
    (dict(length=-1), "length"), (dict(temperature=-0.5), "temperature"), (dict(top_k=-3), "top_k"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(batch_size=0), "batch_size"),
    (dict(top_p_mode="nucleus"), "top_p_mode"),
])
def test_bad_arguments_are_rejected(kw, msg):
    args = dict(length=10, temperature=1.0, top_k=0, top_p=1.0, batch_size=1, top_p_mode="original")
    args.update(kw)
    with pytest.raises(SamplingError, match=msg):
        validate_args(**args)
