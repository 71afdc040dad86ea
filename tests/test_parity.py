"""The parity suite: TensorFlow and PyTorch load the same original-format checkpoint and compute the
same thing. Each comparison prints its max difference (llm.c style) and, on failure, the first
mismatching position (Hugging Face equivalence-test style)."""
from __future__ import annotations

import numpy as np
import pytest

from gpt2_common import load_model
from conftest import need, unavailable

need("torch")
need("tensorflow")

LOGIT_TOL = 1e-4  # across backends, fp32, CPU
CACHE_TOL = 1e-5  # within a backend: cache vs no cache, batch vs single, padded vs unpadded
CONFIG_PARAMS = ["tiny", "mid", pytest.param("124M", marks=pytest.mark.slow)]
_models = {}


@pytest.fixture
def models(make_model_dir):
    def get(config: str):
        if config not in _models:
            d = make_model_dir(config)
            _models.clear()  # keep at most one config's models alive (124M is ~1 GB for both)
            _models[config] = {b: load_model(b, d, device="cpu") for b in ("tf", "torch")}
        return _models[config]

    return get


def tokens_for(hp, B: int, T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hp.n_vocab, size=(B, T)).astype(np.int32)


def report(name: str, a: np.ndarray, b: np.ndarray, tol: float) -> float:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    print(f"{name}: max|diff| = {diff.max():.3e} (tolerance {tol:.0e})")
    if diff.max() > tol:
        first = np.argwhere(diff > tol)[0]
        pytest.fail(f"{name}: first mismatch at index {tuple(first)}: {a[tuple(first)]} vs "
                    f"{b[tuple(first)]} (max|diff| {diff.max():.3e} > {tol:.0e})")
    return float(diff.max())


def assert_same_tokens(name: str, a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape, f"{name}: shapes {a.shape} vs {b.shape}"
    if not np.array_equal(a, b):
        r, c = np.argwhere(a != b)[0]
        pytest.fail(f"{name}: first mismatch at row {r}, step {c}: {a[r, c]} vs {b[r, c]}")


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_logits_agree_across_backends(models, config):
    m = models(config)
    hp = m["tf"].hparams
    tokens = tokens_for(hp, 2, min(hp.n_ctx, 128))
    lt, lp = m["tf"].logits(tokens), m["torch"].logits(tokens)
    assert lt.dtype == lp.dtype == np.float32 and lt.shape == lp.shape == (2, tokens.shape[1], hp.n_vocab)
    report(f"[{config}] tf vs torch logits", lt, lp, LOGIT_TOL)
    np.testing.assert_array_equal(lt.argmax(-1), lp.argmax(-1))
    top2 = np.sort(lp, axis=-1)[..., -2:]
    print(f"[{config}] smallest top-1/top-2 logit gap: {np.min(top2[..., 1] - top2[..., 0]):.3e}")


@pytest.mark.parametrize("backend", ["tf", "torch"])
@pytest.mark.parametrize("config", ["tiny", "mid"])
def test_cache_matches_no_cache(models, config, backend, monkeypatch):
    m = models(config)[backend]
    if backend == "torch":  # a small buffer step, so the in-place cache grows (and is copied) thrice
        monkeypatch.setattr("gpt2_torch.backend.CACHE_STEP", 5)
    tokens = tokens_for(m.hparams, 2, 24, seed=1)
    full = m.logits(tokens)
    mask = np.ones_like(tokens)
    logits, past = m._prefill(tokens[:, :8], mask[:, :8])
    steps = [logits]
    for t in range(8, 24):
        logits, past = m._decode(tokens[:, t:t + 1], past, mask[:, :t + 1])
        steps.append(logits)
    cached = np.stack(steps[:-1], axis=1)  # logits predicting tokens 8..23 from positions 7..22
    report(f"[{config}/{backend}] cache vs no cache", cached, full[:, 7:23], CACHE_TOL)


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_batch_of_4_equals_4_runs_of_1(models, backend):
    m = models("mid")[backend]
    tokens = tokens_for(m.hparams, 4, 40, seed=2)
    batch = m.logits(tokens)
    single = np.concatenate([m.logits(tokens[i:i + 1]) for i in range(4)])
    report(f"[mid/{backend}] batch of 4 vs 4 runs of 1", batch, single, CACHE_TOL)


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_left_padded_batch_equals_unpadded_runs(models, backend):
    m = models("mid")[backend]
    rng = np.random.default_rng(3)
    prompts = [list(rng.integers(0, m.hparams.n_vocab, n)) for n in (5, 17, 1, 30)]
    from gpt2_common.interface import pad_left

    tokens, mask = pad_left(prompts)
    padded = m.logits(tokens, attention_mask=mask)
    worst = 0.0
    for r, p in enumerate(prompts):
        alone = m.logits(np.array([p]))[0]
        worst = max(worst, report(f"[mid/{backend}] padded row {r}", padded[r, -len(p):], alone, CACHE_TOL))
    # generation: greedy rows of a padded batch equal each prompt alone
    batch = m.generate(prompts, 12, temperature=0)
    for r, p in enumerate(prompts):
        assert_same_tokens(f"greedy row {r}", batch[r:r + 1], m.generate(p, 12, temperature=0))
    # sampling: row i with seed[i] equals the prompt alone with that seed
    seeds = [11, 12, 13, 14]
    batch = m.generate(prompts, 12, top_k=40, seed=seeds)
    for r, p in enumerate(prompts):
        assert_same_tokens(f"sampled row {r}", batch[r:r + 1], m.generate(p, 12, top_k=40, seed=seeds[r]))


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_greedy_64_tokens_identical_across_backends(models, config):
    m = models(config)
    n_prompt = 1 if config == "tiny" else 8  # tiny's n_ctx is 64: 1 + 64 - 1 positions
    context = list(tokens_for(m["tf"].hparams, 1, n_prompt, seed=4)[0])
    a = m["tf"].generate(context, 64, temperature=0)
    b = m["torch"].generate(context, 64, temperature=0)
    assert a.shape == (1, 64)
    assert_same_tokens(f"[{config}] greedy tf vs torch", a, b)
    assert len(set(a[0].tolist())) > 1 or config == "tiny", "degenerate continuation"


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_sampled_identical_across_backends_with_same_seed(models, config):
    m = models(config)
    context = list(tokens_for(m["tf"].hparams, 1, 8, seed=5)[0])
    kw = dict(temperature=1.0, top_k=40, top_p=0.9, seed=1234, batch_size=3)
    a, b = m["tf"].generate(context, 48, **kw), m["torch"].generate(context, 48, **kw)
    assert_same_tokens(f"[{config}] sampled tf vs torch", a, b)
    assert not np.array_equal(a[0], a[1]), "rows of a batch should differ"
    c = m["torch"].generate(context, 48, **{**kw, "seed": 4321})
    assert not np.array_equal(a, c), "another seed should give other samples"


@pytest.mark.parametrize("config", ["tiny", "mid"])
def test_huggingface_transformers_agrees(models, make_model_dir, config):
    """A third, independent implementation given the same weights."""
    torch = need("torch")
    transformers = need("transformers")
    from gpt2_common.weights import huggingface_state, load_weights

    m = models(config)
    hp = m["torch"].hparams
    config_kwargs, state = huggingface_state(load_weights(str(make_model_dir(config)), hp), hp)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config_kwargs)).eval()
    result = hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                                strict=False)
    assert not result.missing_keys, f"HF parameters not loaded: {result.missing_keys}"
    assert not result.unexpected_keys, f"unknown to HF: {result.unexpected_keys}"
    tokens = tokens_for(hp, 2, 48, seed=6)
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    for backend in ("tf", "torch"):
        report(f"[{config}] HF transformers vs {backend}", ref, m[backend].logits(tokens), LOGIT_TOL)


def test_gpu_logits_match_cpu(make_model_dir):
    torch = need("torch")
    if not torch.cuda.is_available():
        unavailable("no CUDA GPU on this machine", ci_may_skip=True)
    d = make_model_dir("mid")
    cpu, gpu = load_model("torch", d, device="cpu"), load_model("torch", d, device="cuda")
    tokens = tokens_for(cpu.hparams, 2, 64, seed=7)
    report("torch cuda vs cpu logits (TF32 off)", gpu.logits(tokens), cpu.logits(tokens), 1e-3)
