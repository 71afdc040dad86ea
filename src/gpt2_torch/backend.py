"""The PyTorch backend behind ``gpt2_common.load_model("torch", ...)``.

Supplies the two steps that ``gpt2_common.interface.decode_loop`` drives (the same loop and the
same token sampler as the TensorFlow backend): ``prefill`` encodes a (left-padded) prompt and returns
the last logits and the KV cache; ``decode`` feeds one token per row and grows the cache.
Mirrors ``gpt2_tf/backend.py``.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from gpt2_common.hparams import load_hparams
from gpt2_common.interface import DECODE_ROWS, MIN_DECODE_ROWS, GPT2Model, ModelError
from gpt2_common.weights import load_weights

from .model import GPT2, LayerCache, decode_head, from_weights, matmul, new_cache

# The decoding cache (see model.py): per layer (keys, values) [B, H, C, D] with their first P
# positions filled, and P; grown CACHE_STEP positions at a time, written in place by each step.
Cache = Tuple[List[LayerCache], int]
CACHE_STEP = 256

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# TensorFlow's default TF32 matmuls on Ampere+ GPUs would break parity; keep full fp32 here too.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def resolve_device(device: Optional[str]) -> torch.device:
    """``None`` -> the GPU if there is one, else the CPU; ``"gpu"`` means ``"cuda"``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "cuda" + str(device)[3:] if str(device).startswith("gpu") else str(device)
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ModelError(f"device {device!r} requested but no such CUDA GPU is available")
    return dev


class TorchGPT2(GPT2Model):
    """GPT-2 on PyTorch (``cpu`` or ``cuda``; fp32 by default)."""

    backend = "torch"

    def __init__(self, model_dir: str, device: Optional[str] = None, dtype: str = "float32",
                 trainable: bool = False) -> None:
        dev = resolve_device(device)
        hp = load_hparams(model_dir)
        super().__init__(model_dir, hp, str(dev), dtype)
        self.model: GPT2 = from_weights(hp, load_weights(model_dir, hp), dev, DTYPES[dtype], consume=True,
                                       trainable=trainable)
        self._dev = dev
        self._free_rows: Optional[bool] = None  # see _step_rows

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self._dev)

    def _mask(self, mask: Optional[np.ndarray]) -> Optional[torch.Tensor]:
        """None when there is no padding (checked here, on the host: no device sync)."""
        return None if mask is None or mask.all() else self._tensor(mask)

    @torch.inference_mode()
    def _logits(self, tokens: np.ndarray, mask: Optional[np.ndarray], hooks=None) -> np.ndarray:
        m = self._mask(mask)
        return self.model(self._tensor(tokens), attention_mask=m, hooks=hooks)["logits"].float().cpu().numpy()

    @torch.inference_mode()
    def _prefill(self, tokens: np.ndarray, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Cache]:
        B, P = tokens.shape  # the prompt's keys/values go straight into a new cache buffer
        cache = new_cache(self.hparams, B, min(self.hparams.n_ctx, P + CACHE_STEP), self.model.wte)
        out = self.model(self._tensor(tokens), past=cache, attention_mask=self._mask(mask),
                         last_only=True, past_length=0, hooks=hooks)
        return out["logits"][:, -1].float().cpu().numpy(), (cache, P)

    def _with_room(self, cache: List[LayerCache], P: int, T: int) -> List[LayerCache]:
        """``cache`` (P positions filled) if it has room for ``T`` more, else a copy of its filled
        positions in buffers ``CACHE_STEP`` positions larger (rarely: once every CACHE_STEP steps)."""
        C = cache[0][0].shape[-2]
        if P + T <= C:
            return cache
        grown = new_cache(self.hparams, cache[0][0].shape[0], min(self.hparams.n_ctx, C + CACHE_STEP), cache[0][0])
        for (k, v), (gk, gv) in zip(cache, grown):
            gk[:, :, :P], gv[:, :, :P] = k[:, :, :P], v[:, :, :P]
        return grown

    @torch.inference_mode()
    def _decode(self, tokens: np.ndarray, past: Cache, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Cache]:
        cache, P = past
        cache = self._with_room(cache, P, tokens.shape[1])
        out = self.model(self._tensor(tokens), past=cache, attention_mask=self._mask(mask),
                         last_only=True, past_length=P, hooks=hooks)
        return out["logits"][:, -1].float().cpu().numpy(), (cache, P + tokens.shape[1])

    def _step_rows(self, B: int) -> int:
        """Rows of a batch-invariant step with ``B`` real rows: ``DECODE_ROWS`` always, unless this
        machine's GEMMs were checked to give every row the same bits for any row count from
        ``MIN_DECODE_ROWS`` to ``DECODE_ROWS`` (then ``max(B, MIN_DECODE_ROWS)``: one prompt costs a
        ``MIN_DECODE_ROWS``-row step, not a ``DECODE_ROWS``-row one)."""
        if self._free_rows is None:
            self._free_rows = self._rows_do_not_change_sums()
        return max(B, MIN_DECODE_ROWS) if self._free_rows else DECODE_ROWS

    @torch.inference_mode()
    def _rows_do_not_change_sums(self) -> bool:
        """Whether every decode product (each distinct weight shape, and the LM head) gives each row
        the same bits with ``MIN_DECODE_ROWS`` .. ``DECODE_ROWS`` rows and at any row position."""
        if self._dev.type != "cpu" or self.model.wte.dtype != torch.float32:
            return False
        block = self.model.h[0]
        products = [functools.partial(matmul, w=c.w) for c in (block.attn.c_attn, block.attn.c_proj,
                                                                  block.mlp.c_fc, block.mlp.c_proj)]
        products.append(functools.partial(decode_head, wte=self.model.wte))
        gen = torch.Generator().manual_seed(0)
        for f in products:
            K = f.keywords["w"].shape[0] if "w" in f.keywords else self.hparams.n_embd
            X = torch.randn(DECODE_ROWS, K, generator=gen).to(self.model.wte.dtype)
            full = f(X)
            for n in range(MIN_DECODE_ROWS, DECODE_ROWS):
                if not torch.equal(f(X[:n]), full[:n]):
                    return False
            if not torch.equal(f(X.roll(3, 0)), full.roll(3, 0)):
                return False
        return True

    @torch.inference_mode()
    def _decode_rows(self, tokens: np.ndarray, pasts: List[Cache]) -> Tuple[np.ndarray, List[Cache]]:
        B = len(pasts)
        grown = [(self._with_room(cache, P, 1), P) for cache, P in pasts]  # each row's own cache
        X = np.zeros((self._step_rows(B), 1), np.int64)
        X[:B, 0] = tokens
        logits = self.model.decode_rows(self._tensor(X), [c for c, _ in grown], [P for _, P in grown])
        return logits[:B].float().cpu().numpy(), [(c, P + 1) for c, P in grown]

    # ---- named activations (gpt2_common.hooks) ----
    def _to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().float().cpu().numpy()

    def _from_numpy(self, a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)

    def _weight_tensors(self) -> Dict[str, torch.Tensor]:
        from .train import named_parameters

        return named_parameters(self.model)

    def _activation_gradients(self, tokens: np.ndarray, mask: Optional[np.ndarray], names: List[str],
                              metric) -> Tuple[float, Dict[str, np.ndarray]]:
        marked: Dict[str, torch.Tensor] = {}

        def mark(name: str):
            def fn(x: torch.Tensor) -> torch.Tensor:  # a leaf unless x already depends on one
                marked[name] = x if x.requires_grad else x.detach().requires_grad_(True)
                return marked[name]
            return fn

        with torch.enable_grad():
            logits = self.model(self._tensor(tokens), attention_mask=self._mask(mask),
                                hooks={n: mark(n) for n in names})["logits"].float()  # [B, T, V]
            t = {k: torch.from_numpy(getattr(metric, k)).to(self._dev) for k in ("rows", "positions", "tokens", "coef")}
            value = (logits[t["rows"], t["positions"], t["tokens"]] * t["coef"]).sum()
            if metric.lse is not None:
                value = value + (torch.from_numpy(metric.lse).to(self._dev) * torch.logsumexp(logits, -1)).sum()
            grads = torch.autograd.grad(value, [marked[n] for n in names], allow_unused=True)
        return float(value.detach()), {n: (torch.zeros_like(marked[n]) if g is None else g).float().cpu().numpy()
                              for n, g in zip(names, grads)}

    # ---- training contract (gpt2_torch/train.py) ----
    def _loss(self, tokens: np.ndarray) -> float:
        from .train import lm_loss

        with torch.no_grad():
            return float(lm_loss(self.model, self._tensor(tokens)))

    def _gradients(self, tokens: np.ndarray):
        from .train import gradients

        return gradients(self.model, tokens)
