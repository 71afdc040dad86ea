"""A known answer, offline (issue #21): a 2-layer GPT-2 trained from scratch on repeated random
tokens learns to copy the repeat; the induction score finds the heads that do it, and zero-ablating
them brings the repeated half's loss back up, the same heads and numbers on both backends.

The short version (well under a minute): 300 torch steps on rows ``r + r`` (``r``: 16 random ids of
64), every row starting at position 0. With the repeat length and its place fixed, the model copies
by position: layer-0 heads attend ``n - 1`` tokens back. The induction score (which measures where
a head attends, not how it finds the place) flags exactly those heads. The README's recipe
("Inside the model: induction heads, a known answer") is the long version through ``gpt2_train``.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import need
from gpt2_common.hparams import HParams
from gpt2_common.interp import heads
from gpt2_common.interp.data import repeated_random_tokens

N, VOCAB, STEPS = 16, 64, 300


def train_toy(folder, steps: int = STEPS, seed: int = 0) -> str:
    """Train the toy model (torch, python API) and save it in ``folder``; returns the folder."""
    need("torch")
    from gpt2_common import load_model
    from gpt2_common.train.optim import OptimConfig, step_scalars
    from gpt2_common.train.run import initial_weights
    from gpt2_common.train.session import make_trainer
    from gpt2_common.weights import save_model

    hp = HParams(n_vocab=VOCAB, n_ctx=2 * N, n_embd=64, n_head=4, n_layer=2)
    save_model(str(folder), hp, initial_weights(hp, seed=seed))
    trainer = make_trainer(load_model("torch", folder, device="cpu", trainable=True), OptimConfig(
        optimizer="adamw", learning_rate=3e-3, warmup_steps=30, lr_schedule="constant", steps=steps), False, False)
    t0 = time.perf_counter()
    for step in range(steps):
        trainer.forward_backward(repeated_random_tokens(32, N, VOCAB, seed=1000 + step))
        trainer.apply(1, **step_scalars(trainer.cfg, step))
    print(f"{steps} steps in {time.perf_counter() - t0:.1f} s")
    save_model(str(folder), hp, trainer.weights())
    return str(folder)


def measure(model, tokens):
    """Losses, scores, the induction heads and the losses with them zero-ablated."""
    from gpt2_common.interp import interventions as iv

    first, second = heads.repeated_losses(model, tokens, N)
    _, cache = model.run_with_cache(tokens, names=[heads.pattern_name(l) for l in range(model.hparams.n_layer)])
    scores = heads.scores_from_patterns(np.stack([cache[heads.pattern_name(l)] for l in range(2)]), N)
    ind = scores["induction"]
    top = heads.induction_heads(ind)  # those with at least half the best score
    ablated = heads.repeated_losses(model, tokens, N, hooks=iv.ablate_heads(model, top))
    return dict(first=first, second=second, scores=scores, top=top, ablated=ablated)


def test_induction_known_answer(tmp_path):
    need("tensorflow")
    from gpt2_common import load_model

    folder = train_toy(tmp_path / "toy")
    tokens = repeated_random_tokens(64, N, VOCAB, seed=99)  # never a training row (seeds 1000..)
    got = {b: measure(load_model(b, folder, device="cpu"), tokens) for b in ("tf", "torch")}
    for b, m in got.items():
        print(f"{b}: first copy {m['first']:.3f} (ln {VOCAB} = {np.log(VOCAB):.3f}), repeated {m['second']:.3f}, "
              f"induction heads {m['top']}, ablated: repeated {m['ablated'][1]:.3f}")
        print(np.round(m["scores"]["induction"], 3))
    m = got["torch"]
    # 1. the repeated half is learnt, the first copy (unpredictable) stays near ln(VOCAB)
    assert m["second"] < 0.3 and abs(m["first"] - np.log(VOCAB)) < 0.2
    # 2. the induction score singles out some heads, far above every other head
    ind = m["scores"]["induction"]
    rest = [ind[h] for h in np.ndindex(ind.shape) if h not in m["top"]]
    assert min(ind[h] for h in m["top"]) > 0.5 and max(rest) < 0.2
    # 3. zero-ablating them undoes the copying
    assert m["ablated"][1] > 2.0 and m["ablated"][1] > 10 * m["second"]
    # 4. the same heads and numbers on TF
    t = got["tf"]
    assert t["top"] == m["top"]
    for k in heads.SCORES:
        diff = np.abs(t["scores"][k] - m["scores"][k]).max()
        print(f"{k} score: max |tf - torch| {diff:.2e}")
        assert diff < 1e-4
    for k in ("first", "second"):
        assert t[k] == pytest.approx(m[k], rel=1e-4, abs=1e-5)
    assert t["ablated"] == pytest.approx(m["ablated"], rel=1e-4, abs=1e-5)


def test_untrained_model_has_no_induction_heads(tmp_path):
    """The same measurement before training: nothing is copied and no head stands out, so the
    assertions above are about what training made."""
    folder = train_toy(tmp_path / "untrained", steps=0)
    from gpt2_common import load_model

    m = measure(load_model("torch", folder, device="cpu"), repeated_random_tokens(64, N, VOCAB, seed=99))
    print(m["first"], m["second"], np.round(m["scores"]["induction"], 3))
    assert m["second"] > np.log(VOCAB) - 0.2
    assert m["scores"]["induction"].max() < 0.2


def test_train_n_vocab(tmp_path, vocab_dir):
    """gpt2_train --n_vocab: a toy vocabulary from scratch; ids outside it, a vocabulary larger than
    GPT-2's, or samples without <|endoftext|> are one-line errors that leave no run folder."""
    need("torch")
    from gpt2_common import cli
    from gpt2_common.hparams import load_hparams
    from gpt2_common.interp.data import write_token_file
    from scripts.train import train

    data = tmp_path / "repeat.bin"
    write_token_file(str(data), repeated_random_tokens(50, 8, 64, seed=1, copies=4))
    ckpt = tmp_path / "checkpoint"
    base = dict(dataset=str(data), vocab_dir=str(vocab_dir), checkpoint_dir=str(ckpt), n_layer=1, n_embd=16,
                n_head=2, n_ctx=16, n_vocab=64, steps=2, batch_size=2, sample_every=0, val_every=0, progress=False)
    cases = {
        "ids outside the vocabulary": (dict(n_vocab=32), "token id 63 is outside the model's vocabulary of 32"),
        "larger than GPT-2's": (dict(n_vocab=60000), "--n_vocab 60000 is larger"),
        "samples": (dict(sample_every=1), "--sample_every 0"),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(cli.user_errors()) as info:
            train(**{**base, **change, "run_name": "bad"})
        print(f"{name}: error: {info.value}")
        assert message in str(info.value) and len(str(info.value).splitlines()) == 1, name
        assert not (ckpt / "bad").exists()
    train(**{**base, "run_name": "ok"})
    assert load_hparams(str(ckpt / "ok")).n_vocab == 64
