"""The PyTorch backend behind ``gpt2_common.load_model("torch", ...)``.

Supplies the two steps that ``gpt2_common.interface.decode_loop`` drives (the same loop and the
same token sampler as the TensorFlow backend): ``prefill`` encodes a (left-padded) prompt and returns
the last logits and the KV cache; ``decode`` feeds one token per row and grows the cache.
Mirrors ``gpt2_tf/sample.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from gpt2_common.hparams import load_hparams
from gpt2_common.interface import GPT2Model, ModelError, sample_sequence  # noqa: F401 (re-export)
from gpt2_common.weights import load_weights

from .model import GPT2, from_weights, new_cache

# The KV cache: a buffer [B, L, 2, H, C, D] with its first P positions filled, grown CACHE_STEP
# positions at a time, written in place by each decode step.
Cache = Tuple[torch.Tensor, int]
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

    def __init__(self, model_dir: str, device: Optional[str] = None, dtype: str = "float32") -> None:
        dev = resolve_device(device)
        hp = load_hparams(model_dir)
        super().__init__(model_dir, hp, str(dev), dtype)
        self.model: GPT2 = from_weights(hp, load_weights(model_dir, hp), dev, DTYPES[dtype], consume=True)
        self._dev = dev

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self._dev)

    @torch.inference_mode()
    def _logits(self, tokens: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
        m = None if mask is None else self._tensor(mask)
        return self.model(self._tensor(tokens), attention_mask=m)["logits"].float().cpu().numpy()

    @torch.inference_mode()
    def _prefill(self, tokens: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, Cache]:
        B, P = tokens.shape  # the prompt's keys/values go straight into a new cache buffer
        cache = new_cache(self.hparams, B, min(self.hparams.n_ctx, P + CACHE_STEP), self.model.wte)
        out = self.model(self._tensor(tokens), past=cache, attention_mask=self._tensor(mask),
                         last_only=True, past_length=0)
        return out["logits"][:, -1].float().cpu().numpy(), (cache, P)

    @torch.inference_mode()
    def _decode(self, tokens: np.ndarray, past: Cache, mask: np.ndarray) -> Tuple[np.ndarray, Cache]:
        cache, P = past
        if P + tokens.shape[1] > cache.shape[-2]:  # full: grow the buffer (rarely)
            cache = new_cache(self.hparams, cache.shape[0], min(self.hparams.n_ctx, cache.shape[-2] + CACHE_STEP),
                              cache, cache[..., :P, :])
        out = self.model(self._tensor(tokens), past=cache, attention_mask=self._tensor(mask),
                         last_only=True, past_length=P)
        return out["logits"][:, -1].float().cpu().numpy(), (cache, P + tokens.shape[1])
