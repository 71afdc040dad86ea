"""GPT-2 in PyTorch, parameter for parameter the original TensorFlow release.

Mirrors ``gpt2_tf/model.py`` line for line; the math is the original ``model.py``'s:
LayerNorm with eps 1e-5 and biased variance, GELU (tanh approximation), attention scaled by
1/sqrt(head_dim) with masked scores set to -1e10, LM head tied to ``wte``.

Shapes: B batch, T new tokens, P past tokens, S = P + T, E n_embd, H n_head, D head_dim, V n_vocab,
L n_layer. ``past``/``present`` are ``[B, L, 2, H, P, D]`` as in the original (while decoding,
a preallocated buffer written in place may stand in: see ``past_length``).
Parameters keep the checkpoint's names: ``h.0.attn.c_attn.w`` is ``model/h0/attn/c_attn/w``
(1x1-conv weights are stored as ``[in, out]``, the checkpoint's ``[1, in, out]`` squeezed).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gpt2_common.hparams import HParams

MASK_VALUE = -1e10  # the original's value for masked attention scores (not -inf)
LN_EPS = 1e-5


class LayerNorm(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n))
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # statistics and affine in fp32, then x's dtype
        y = F.layer_norm(x.float(), x.shape[-1:], self.g.float(), self.b.float(), LN_EPS)  # biased variance
        return y.to(x.dtype)


def matmul(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x [N, K] @ w [K, M] (+ b)``. For a few rows on the CPU (decoding) one ``mm`` reads the
    weights at ~16 GB/s on 2 cores; split into one block per thread and multiplied as a batch, the
    same product reads them at ~20 GB/s (see ``scripts/benchmark.py``). A contiguous ``w`` is split
    along K, each thread streaming one contiguous slab and the partial sums added; a strided view
    (the LM head's ``wte.t()``) is split along M, each thread streaming a block of ``wte``'s rows."""
    n = torch.get_num_threads()
    K, M = w.shape
    if x.device.type != "cpu" or x.shape[0] > 16 or n < 2:
        return x @ w if b is None else torch.addmm(b, x, w)
    if w.is_contiguous() and K % n == 0:
        y = torch.bmm(x.view(x.shape[0], n, K // n).transpose(0, 1), w.view(n, K // n, M))  # [n, N, M]
        y = y.sum(0) if n > 2 else y[0].add_(y[1])
        return y if b is None else y.add_(b)
    m = M // n
    parts = w[:, :n * m].view(K, n, m).transpose(0, 1)  # [n, K, m] view, no copy
    y = torch.bmm(x.expand(n, *x.shape), parts).transpose(0, 1).reshape(x.shape[0], n * m)  # [N, n*m]
    y = y if n * m == M else torch.cat([y, x @ w[:, n * m:]], dim=1)
    return y if b is None else y + b


class Conv1D(nn.Module):
    """The original's 1x1 convolution: ``x @ w + b`` with ``w`` stored ``[nx, nf]``."""

    def __init__(self, nx: int, nf: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(nx, nf))
        self.b = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., nx] -> [..., nf]
        y = matmul(x.reshape(-1, x.shape[-1]), self.w, self.b)
        return y.view(*x.shape[:-1], y.shape[-1])


class Attention(nn.Module):
    def __init__(self, hp: HParams):
        super().__init__()
        self.n_head = hp.n_head
        self.c_attn = Conv1D(hp.n_embd, 3 * hp.n_embd)
        self.c_proj = Conv1D(hp.n_embd, hp.n_embd)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, E] -> [B, H, T, D]
        B, T, E = x.shape
        return x.view(B, T, self.n_head, E // self.n_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                past_length: Optional[int] = None):
        qkv = self.c_attn(x)  # [B, T, 3E]
        q = self.split_heads(qkv[..., :x.shape[-1]])  # [B, H, T, D]
        kv = qkv[..., x.shape[-1]:].unflatten(-1, (2, self.n_head, -1)).permute(0, 2, 3, 1, 4)  # [B, 2, H, T, D]
        if past_length is None:  # the original: present = this step's keys/values
            present = kv
            k, v = kv.unbind(dim=1)  # [B, H, T, D]
            if past is not None:
                pk, pv = past.unbind(dim=1)  # [B, H, P, D]
                k, v = torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)  # [B, H, S, D]
        else:  # a cache buffer [B, 2, H, C, D] holding P = past_length positions: write in place
            S = past_length + x.shape[1]
            past[..., past_length:S, :] = kv
            k, v = past[..., :S, :].unbind(dim=1)  # [B, H, S, D] views
            present = past
        # softmax(q k^T / sqrt(D) + bias) v, fused (PyTorch's SDPA: no [T, S] score matrices in
        # memory, ~4x faster for long prompts); bias is 0 or -1e10, or None for plain causal
        # attention (see GPT2.forward)
        # scores, mask and softmax in fp32 whatever the model dtype (-1e10 does not fit fp16)
        a = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias,
                                           is_causal=bias is None and q.shape[-2] > 1).to(v.dtype)  # [B, H, T, D]
        a = a.transpose(1, 2).reshape(x.shape)  # merge heads -> [B, T, E]
        return self.c_proj(a), present


class MLP(nn.Module):
    def __init__(self, hp: HParams):
        super().__init__()
        self.c_fc = Conv1D(hp.n_embd, 4 * hp.n_embd)
        self.c_proj = Conv1D(4 * hp.n_embd, hp.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, hp: HParams):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(hp.n_embd), Attention(hp)
        self.ln_2, self.mlp = LayerNorm(hp.n_embd), MLP(hp)

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                past_length: Optional[int] = None):
        a, present = self.attn(self.ln_1(x), past, bias, past_length)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


def build_mask(T: int, P: int, key_mask: Optional[torch.Tensor], device) -> torch.Tensor:
    """Boolean ``[B or 1, 1, T, S]``: query ``i`` (at position P+i) sees key ``j`` iff ``j <= P+i``
    and key ``j`` is not padding (``key_mask`` ``[B, S]``, 1 for real tokens)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(P + T, device=device)[None, :]
    mask = (i + P >= j)[None, None]  # [1, 1, T, S]
    if key_mask is not None:
        mask = mask & key_mask.bool()[:, None, None, :]
    return mask


def position_ids(T: int, P: int, key_mask: Optional[torch.Tensor], device) -> torch.Tensor:
    """``[B or 1, T]``: positions count real tokens only, so left padding does not shift them."""
    if key_mask is None:
        return torch.arange(P, P + T, device=device)[None]
    pos = torch.cumsum(key_mask.long(), dim=-1) - 1  # [B, S]
    return pos[:, P:].clamp(min=0)


class GPT2(nn.Module):
    """``model(X, past=None, attention_mask=None) -> {'logits': [B,T,V], 'present': [B,L,2,H,T,D]}``."""

    def __init__(self, hp: HParams):
        super().__init__()
        self.hparams = hp
        self.wte = nn.Parameter(torch.zeros(hp.n_vocab, hp.n_embd))
        self.wpe = nn.Parameter(torch.zeros(hp.n_ctx, hp.n_embd))
        self.h = nn.ModuleList(Block(hp) for _ in range(hp.n_layer))
        self.ln_f = LayerNorm(hp.n_embd)

    def forward(self, X: torch.Tensor, past: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, last_only: bool = False,
                past_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """``X`` int ``[B, T]``; ``attention_mask`` ``[B, P+T]`` (1 = real token, 0 = left padding);
        ``last_only`` computes logits for the last position only (``[B, 1, V]``).

        With ``past_length`` P, ``past`` is a cache buffer ``[B, L, 2, H, C, D]`` (C >= P+T) whose
        first P positions are filled: this step's keys/values are written into it in place and
        ``present`` is the buffer itself (see :func:`new_cache`). Same math, no copying per step."""
        B, T = X.shape
        P = past_length if past_length is not None else 0 if past is None else past.shape[-2]
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding
        if attention_mask is None and (P == 0 or T == 1):
            bias = None  # plain causal attention (with T == 1, every key is visible)
        else:  # masked scores: the original replaces them by -1e10; adding -1e10 is the same in fp32
            # (a score is far below 1e10's ulp, 1024), and a row with every key masked (left
            # padding) is uniform either way
            mask = build_mask(T, P, attention_mask, X.device)  # [B|1, 1, T, S]
            bias = torch.zeros((), dtype=torch.float32, device=X.device).masked_fill(~mask, MASK_VALUE)
        h = self.wte[X] + self.wpe[position_ids(T, P, attention_mask, X.device)]  # [B, T, E]
        presents = []
        for i, block in enumerate(self.h):
            h, present = block(h, None if past is None else past[:, i], bias, past_length)
            presents.append(present)
        h = self.ln_f(h)  # [B, T, E]
        if last_only:
            h = h[:, -1:]
        # tied LM head, as a 2-D matmul
        logits = matmul(h.reshape(-1, self.hparams.n_embd), self.wte.t())
        logits = logits.view(B, -1, self.hparams.n_vocab)  # [B, T, V]
        present = past if past_length is not None else torch.stack(presents, dim=1)
        return {"logits": logits, "present": present}


def new_cache(hp: HParams, B: int, capacity: int, like: torch.Tensor,
              present: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An (uninitialised) cache buffer ``[B, L, 2, H, capacity, D]`` with the dtype and device of
    ``like``, starting with ``present`` ``[B, L, 2, H, P, D]`` if given."""
    cache = like.new_empty((B, hp.n_layer, 2, hp.n_head, capacity, hp.head_dim))
    if present is not None:
        cache[..., :present.shape[-2], :] = present
    return cache


def checkpoint_name(param: str) -> str:
    """``h.0.attn.c_attn.w`` -> ``model/h0/attn/c_attn/w``."""
    parts = param.split(".")
    if parts[0] == "h":
        parts = [f"h{parts[1]}"] + parts[2:]
    return "model/" + "/".join(parts)


def from_weights(hp: HParams, weights: Mapping[str, np.ndarray], device="cpu",
                 dtype: torch.dtype = torch.float32, consume: bool = False) -> GPT2:
    """Build a :class:`GPT2` from checkpoint arrays (see ``gpt2_common.weights``) without a second
    copy of the weights: the modules are built on the meta device and the parameters take the
    arrays' memory (``from_numpy``; a copy only to change dtype or device). ``consume`` removes
    each array from ``weights`` once it is used, so a converted array is freed at once."""
    with torch.device("meta"):
        model = GPT2(hp)
    state = {}
    for name, p in model.named_parameters():
        key = checkpoint_name(name)
        arr = weights.pop(key) if consume else weights[key]
        state[name] = torch.from_numpy(np.asarray(arr)).reshape(p.shape).to(device=device, dtype=dtype)
        del arr
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)
