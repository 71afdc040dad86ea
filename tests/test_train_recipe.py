"""The offline recipe, short: a small GPT-2 trained from scratch on the standard library's pydoc
topics learns more than token frequencies (validation loss clearly below the corpus's unigram
cross-entropy)."""
from __future__ import annotations

import json
import time

import numpy as np

from conftest import need
from gpt2_common.constants import EOT_TOKEN
from gpt2_common.encoder import load_encoder
from gpt2_common.hparams import HParams
from gpt2_common.train.data import BatchSampler, encode_corpus, load_tokens, validation_path
from gpt2_common.train.optim import OptimConfig, step_scalars
from gpt2_common.train.run import initial_weights
from gpt2_common.train.session import make_trainer
from gpt2_common.weights import save_model

torch = need("torch")


def unigram_cross_entropy(train: np.ndarray, val: np.ndarray) -> float:
    """Nats per token of the validation tokens under the training tokens' unigram frequencies
    (add-one smoothed): the best a model that ignores context can do."""
    counts = np.bincount(train, minlength=EOT_TOKEN + 1).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val[1:]].mean())


def test_pydoc_topics_from_scratch(tmp_path, vocab_dir):
    topics = need("pydoc_data.topics").topics
    with open(tmp_path / "topics.jsonl", "w", encoding="utf-8") as f:
        for key in sorted(topics):
            f.write(json.dumps({"text": topics[key]}) + "\n")
    enc = load_encoder(vocab_dir)
    out = str(tmp_path / "topics.bin")
    encode_corpus([str(tmp_path / "topics.jsonl")], out, enc, val_fraction=0.1, progress=False)
    train, val = np.asarray(load_tokens(out)), np.asarray(load_tokens(validation_path(out)))
    baseline = unigram_cross_entropy(train, val)

    hp = HParams(n_vocab=50257, n_ctx=32, n_embd=64, n_head=4, n_layer=2)
    save_model(str(tmp_path / "init"), hp, initial_weights(hp, seed=0))
    from gpt2_common import load_model

    trainer = make_trainer(load_model("torch", tmp_path / "init", device="cpu", trainable=True), OptimConfig(
        optimizer="adamw", learning_rate=5e-3, warmup_steps=5, lr_schedule="cosine", steps=STEPS), False, False)
    sampler, val_sampler = BatchSampler(train, 33, 8, seed=0), BatchSampler(val, 33, 8, seed=0)
    t0 = time.perf_counter()
    for step in range(STEPS):
        trainer.forward_backward(sampler.batch(step))
        trainer.apply(1, **step_scalars(trainer.cfg, step))
    val_loss = float(np.mean([trainer.eval_loss(b) for b in val_sampler.eval_batches(8)]))
    print(f"pydoc topics, {STEPS} steps in {time.perf_counter() - t0:.1f} s: validation loss {val_loss:.3f} "
          f"nats/token vs unigram cross-entropy {baseline:.3f}")
    # measured: 5.459 vs 5.697 (MKL strict) and 5.457 (default); at 1e-2 the rounding mode alone moved
    # it from 5.534 to 5.597, too close to the bound
    assert val_loss < baseline - 0.1


STEPS = 60  # 60 x 8 x 32 tokens: ~30 s of CPU time (the README recipe is the long version)
