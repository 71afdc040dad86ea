"""GPT-2 in PyTorch, parameter for parameter the original TensorFlow release.

Mirrors ``gpt2_tf/model.py`` line for line (``diff`` shows only framework calls); the math is
the original ``model.py``'s: LayerNorm with eps 1e-5 and biased variance, GELU (tanh
approximation), attention scaled by 1/sqrt(head_dim) with masked scores at -1e10, LM head tied
to ``wte``. Whatever the model dtype, LayerNorm statistics and attention scores, mask and softmax
are computed in fp32 (-1e10 does not fit fp16; GPT-2's activations squared overflow it).

Shapes: B batch, T new tokens, P past tokens, S = P + T, C cache capacity (>= S), E n_embd,
H n_head, D head_dim, V n_vocab, L n_layer.

Two ways to pass the past (one forward signature):
- the original's: ``past``/``present`` ``[B, L, 2, H, P, D]`` / ``[B, L, 2, H, T, D]``;
- a decoding cache (with ``past_length`` P): per layer ``(keys, values)`` ``[B, H, C, D]`` whose
  first P positions are filled; the step writes its keys/values at positions P..S-1 and
  ``present`` is the cache with S positions filled (here: the same buffers, written in place).
Named activations (``hook_embed``, ``blocks.{l}.attn.hook_pattern``, ...; see ``gpt2_common.hooks``)
pass through ``hook(hooks, scope, name, x)``: with ``hooks=None`` nothing is computed beyond the
plain forward; a hooked attention pattern or LayerNorm scale is computed explicitly instead of by a
fused kernel.
Parameters keep the checkpoint's names: ``h.0.attn.c_attn.w`` is ``model/h0/attn/c_attn/w``
(1x1-conv weights are stored as ``[in, out]``, the checkpoint's ``[1, in, out]`` squeezed).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gpt2_common.hooks import ModelHooks, hook, wants
from gpt2_common.hparams import HParams

LayerCache = Tuple[torch.Tensor, torch.Tensor]  # one layer's decoding cache: (keys, values) [B, H, C, D]
Drop = Optional[Tuple[float, Any]]  # training dropout: (rate, seed); masks from torch's RNG (the seed is TF's)
Past = Union[torch.Tensor, List[LayerCache]]
MASK_VALUE = -1e10  # the original's value for masked attention scores (not -inf), in fp32
LN_EPS = 1e-5
_MATMUL_BLOCKS = 8  # decode matmuls: K split into this many blocks, whatever the thread count


class LayerNorm(nn.Module):
    def __init__(self, n: int, scope: str):
        super().__init__()
        self.scope = scope  # hook names: f"{scope}.hook_scale", f"{scope}.hook_normalized"
        self.g = nn.Parameter(torch.ones(n))
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor, hooks: Optional[ModelHooks] = None) -> torch.Tensor:
        x32 = x.float()  # statistics and affine in fp32, then x's dtype
        if wants(hooks, self.scope, "hook_scale"):  # spelled out, with the scale [B, T, 1] named
            u = x32.mean(-1, keepdim=True)
            s = (x32 - u).square().mean(-1, keepdim=True)  # biased variance
            scale = hook(hooks, self.scope, "hook_scale", (s + LN_EPS).sqrt())
            y = (x32 - u) / scale * self.g.float() + self.b.float()
        else:
            y = F.layer_norm(x32, x.shape[-1:], self.g.float(), self.b.float(), LN_EPS)  # biased variance
        return hook(hooks, self.scope, "hook_normalized", y.to(x.dtype))


def matmul(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x [N, K] @ w [K, M] (+ b)``. For a few rows on the CPU (decoding) one ``mm`` reads the
    weights at ~16 GB/s on 2 cores; split into blocks multiplied as a batch (threads take whole
    blocks), ~20 GB/s (see ``scripts/benchmark.py``). A contiguous ``w`` is split along K into
    _MATMUL_BLOCKS contiguous slabs whose partial sums are added in a fixed order, so the result
    does not depend on the thread count; a strided view (the LM head's ``wte.t()``) is split
    along M (each output a whole dot product)."""
    n = _MATMUL_BLOCKS
    K, M = w.shape
    if x.device.type != "cpu" or x.shape[0] > 16:
        return x @ w if b is None else torch.addmm(b, x, w)
    if w.is_contiguous() and K % n == 0:
        y = torch.bmm(x.view(x.shape[0], n, K // n).transpose(0, 1), w.view(n, K // n, M))  # [n, N, M]
        y = y.sum(0)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., nx] -> [..., nf], in x's dtype
        y = matmul(x.reshape(-1, x.shape[-1]), self.w.to(x.dtype), self.b.to(x.dtype))
        return y.view(*x.shape[:-1], y.shape[-1])


def write_cache(past: LayerCache, k: torch.Tensor, v: torch.Tensor, P: int) -> Tuple[torch.Tensor, torch.Tensor, LayerCache]:
    """This step's keys/values ``[B, H, T, D]`` into a layer's cache at positions P..S-1:
    ``(keys, values)`` ``[B, H, S, D]`` to attend over, and the layer's new cache (here: the same)."""
    S = P + k.shape[-2]
    past[0][:, :, P:S] = k
    past[1][:, :, P:S] = v
    return past[0][:, :, :S], past[1][:, :, :S], past  # [B, H, S, D] views


class Attention(nn.Module):
    def __init__(self, hp: HParams, scope: str):
        super().__init__()
        self.scope, self.n_head = scope, hp.n_head
        self.c_attn = Conv1D(hp.n_embd, 3 * hp.n_embd)
        self.c_proj = Conv1D(hp.n_embd, hp.n_embd)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, E] -> [B, T, H, D]
        B, T, E = x.shape
        return x.view(B, T, self.n_head, E // self.n_head)

    def forward(self, x: torch.Tensor, past, bias: Optional[torch.Tensor], past_length=None,
                hooks: Optional[ModelHooks] = None, drop: Drop = None, site: int = 0):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=2)  # 3 x [B, T, E]
        q, k, v = (hook(hooks, self.scope, f"hook_{n}", self.split_heads(t)).transpose(1, 2)
                   for n, t in zip("qkv", (q, k, v)))  # [B, T, H, D] named, [B, H, T, D] used
        if isinstance(past_length, list):  # rows with their own caches: GPT2.decode_rows
            a, present = rows_attention(q, k, v, past, past_length)
        else:
            if past_length is None:  # the original: present = this step's keys/values
                present = torch.stack([k, v], dim=1)  # [B, 2, H, T, D]
                if past is not None:
                    pk, pv = past.unbind(dim=1)  # [B, H, P, D]
                    k, v = torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)  # [B, H, S, D]
            else:  # a decoding cache holding P = past_length positions
                k, v, present = write_cache(past, k, v, past_length)  # [B, H, S, D]
            # softmax(q k^T / sqrt(D) + bias) v in fp32 whatever the model dtype; bias is 0 or -1e10
            a = attention(q.float(), k.float(), v.float(), bias, hooks, self.scope, drop, site)
        a = hook(hooks, self.scope, "hook_z", a.to(x.dtype).transpose(1, 2))  # [B, T, H, D]
        return self.c_proj(a.reshape(x.shape)), present  # merge heads -> [B, T, E]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
              hooks: Optional[ModelHooks] = None, scope: str = "", drop: Drop = None, site: int = 0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D) + bias) v`` ``[B, H, T, D]``; ``bias`` None: plain causal. Prompts:
    fused (PyTorch's SDPA: no [T, S] score matrices in memory, ~4x faster for long prompts); one
    query (decoding), or hooked scores or pattern: spelled out, as SDPA's CPU kernel splits the
    keys by thread count (and keeps no pattern). ``drop``: dropout on the probabilities."""
    T, S = q.shape[-2], k.shape[-2]
    if T > 1 and not wants(hooks, scope, "hook_attn_scores", "hook_pattern"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None,
                                              dropout_p=0.0 if drop is None else drop[0],
                                              scale=1.0 / math.sqrt(q.shape[-1]))
    if bias is None and T > 1:
        bias = attention_bias(T, S - T, None, q.device)
    w = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, T, S]
    w = hook(hooks, scope, "hook_attn_scores", w if bias is None else w + bias)
    return torch.matmul(dropout(hook(hooks, scope, "hook_pattern", torch.softmax(w, dim=-1)), drop, site), v)


def rows_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, caches: List[LayerCache],
                   lengths: List[int]) -> Tuple[torch.Tensor, List[LayerCache]]:
    """Attention of one new position per row (``q, k, v`` ``[R, H, 1, D]``) where the first
    ``len(caches)`` rows each have their own decoding cache (``lengths[r]`` positions filled, room
    for one more; this step's keys/values are written into it) and attend over it alone; the
    other rows are padding (zeros out). ``[R, H, 1, D]`` fp32, and the caches."""
    rows, present = [], []
    for r, (past, P) in enumerate(zip(caches, lengths)):
        kr, vr, cache = write_cache(past, k[r:r + 1], v[r:r + 1], P)  # [1, H, P+1, D]
        rows.append(attention(q[r:r + 1].float(), kr.float(), vr.float(), None))
        present.append(cache)
    if len(caches) < q.shape[0]:
        rows.append(q.new_zeros((q.shape[0] - len(caches),) + q.shape[1:], dtype=torch.float32))
    return torch.cat(rows), present


def dropout(x: torch.Tensor, drop: Drop, site: int) -> torch.Tensor:
    """Training dropout at ``site`` (a number per place in the model; TF's masks derive from it):
    each element zeroed with probability ``drop[0]``, the rest scaled by 1/(1 - rate)."""
    return x if drop is None else F.dropout(x, drop[0], training=True)


class MLP(nn.Module):
    def __init__(self, hp: HParams, scope: str):
        super().__init__()
        self.scope = scope
        self.c_fc = Conv1D(hp.n_embd, 4 * hp.n_embd)
        self.c_proj = Conv1D(4 * hp.n_embd, hp.n_embd)

    def forward(self, x: torch.Tensor, hooks: Optional[ModelHooks] = None) -> torch.Tensor:
        h = hook(hooks, self.scope, "hook_pre", self.c_fc(x))  # [B, T, 4E]
        return self.c_proj(hook(hooks, self.scope, "hook_post", F.gelu(h, approximate="tanh")))


class Block(nn.Module):
    def __init__(self, hp: HParams, layer: int):
        super().__init__()
        s = self.scope = f"blocks.{layer}"
        self.layer = layer
        self.ln_1, self.attn = LayerNorm(hp.n_embd, f"{s}.ln1"), Attention(hp, f"{s}.attn")
        self.ln_2, self.mlp = LayerNorm(hp.n_embd, f"{s}.ln2"), MLP(hp, f"{s}.mlp")

    def forward(self, x: torch.Tensor, past, bias: Optional[torch.Tensor], past_length=None,
                hooks: Optional[ModelHooks] = None, drop: Drop = None):
        s, site = self.scope, 1 + 3 * self.layer  # dropout sites: probabilities, attention out, MLP out
        x = hook(hooks, s, "hook_resid_pre", x)
        a, present = self.attn(self.ln_1(x, hooks), past, bias, past_length, hooks, drop, site)
        x = hook(hooks, s, "hook_resid_mid", x + hook(hooks, s, "hook_attn_out", dropout(a, drop, site + 1)))
        m = dropout(self.mlp(self.ln_2(x, hooks), hooks), drop, site + 2)
        x = hook(hooks, s, "hook_resid_post", x + hook(hooks, s, "hook_mlp_out", m))
        return x, present


def attention_bias(T, P, key_mask: Optional[torch.Tensor], device=None) -> torch.Tensor:
    """fp32 ``[B, 1, T, S]`` (``[T, S]`` without ``key_mask``): 0 where query ``i`` (at position
    P+i) sees key ``j`` (``j <= P+i`` and key ``j`` not padding: ``key_mask`` ``[B, S]``, 1 for
    real tokens), else -1e10. Added to the scores: the same as the original's replacing them in
    fp32 (a score is far below 1e10's ulp, 1024), and a row with every key masked (left padding)
    is uniform either way."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(P + T, device=device)[None, :]
    mask = i + P >= j  # [T, S]
    if key_mask is not None:
        mask = mask[None, None] & key_mask.bool()[:, None, None, :]
    return torch.zeros((), device=device).masked_fill(~mask, MASK_VALUE)


def position_ids(T, P, key_mask: Optional[torch.Tensor], device=None) -> torch.Tensor:
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
        self.h = nn.ModuleList(Block(hp, i) for i in range(hp.n_layer))
        self.ln_f = LayerNorm(hp.n_embd, "ln_final")

    def forward(self, X: torch.Tensor, past: Optional[Past] = None, attention_mask: Optional[torch.Tensor] = None,
                last_only: bool = False, past_length=None, hooks: Optional[ModelHooks] = None,
                compute_dtype: Optional[torch.dtype] = None, drop: Drop = None,
                targets: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """``X`` int ``[B, T]``; ``attention_mask`` ``[B, P+T]`` (1 = real token, 0 = left padding;
        None: no padding); ``last_only`` computes logits for the last position only (``[B, 1, V]``).
        ``targets`` int ``[B, T]`` (training): ``{'loss': mean cross-entropy of the logits against
        them}`` (fp32, natural log) instead of logits and present (:func:`lm_head_loss`).
        ``compute_dtype`` (mixed precision): the activations and matrix products in this dtype,
        the weights cast to it where they are used (LayerNorm and attention stay in fp32).
        ``drop`` (training): dropout ``(rate, seed)`` on the embeddings, the attention
        probabilities and the blocks' two outputs (Hugging Face's embd/attn/resid_pdrop).

        With ``past_length`` P, ``past`` is a decoding cache (per layer ``(keys, values)``
        ``[B, H, C, D]``, first P positions filled; see the module docstring) and ``present``
        the cache with P+T positions filled. ``hooks`` (name -> function of the activation; see
        ``gpt2_common.hooks``) read or replace named activations as the model runs."""
        B, T = X.shape
        P = past_length if past_length is not None else 0 if past is None else past.shape[-2]
        if attention_mask is None and (P == 0 or T == 1):
            bias = None  # plain causal attention (with T == 1, every key is visible)
        else:
            bias = attention_bias(T, P, attention_mask, X.device)  # [B, 1, T, S] or [T, S]
        wte, wpe = self.wte, self.wpe
        pos = wpe[position_ids(T, P, attention_mask, X.device)]  # [B|1, T, E]
        if hooks is not None:
            pos = hook(hooks, "", "hook_pos_embed", pos.expand(B, T, -1))
        tied = None if targets is None else {}  # training: the lookup adds its gradient rows into the head's
        embed = wte[X] if tied is None else _TiedEmbedding.apply(X, wte, tied)  # [B, T, E]
        h = dropout(hook(hooks, "", "hook_embed", embed) + pos, drop, 0)  # [B, T, E]
        if compute_dtype is not None:
            h = h.to(compute_dtype)
        presents = []
        for i, block in enumerate(self.h):
            h, present = block(h, None if past is None else past[i] if past_length is not None else past[:, i],
                               bias, past_length, hooks, drop)
            presents.append(present)
        h = self.ln_f(h, hooks)  # [B, T, E]
        if targets is not None:
            return {"loss": lm_head_loss(h.reshape(-1, self.hparams.n_embd), wte, targets.reshape(-1), tied)}
        if last_only:
            h = h[:, -1:]
        logits = self.lm_head(h, wte).view(B, -1, self.hparams.n_vocab)  # [B, T, V]
        present = presents if past_length is not None else torch.stack(presents, dim=1)
        return {"logits": logits, "present": present}

    def decode_rows(self, X: torch.Tensor, caches: List[List[LayerCache]], lengths: List[int]) -> torch.Tensor:
        """One batch-invariant decoding step (see ``gpt2_common.interface.DECODE_ROWS``): ``X`` int
        ``[R, 1]``, one new token per row; the first ``len(caches)`` rows are real, each with its own
        decoding cache (per layer ``(keys, values)`` ``[1, H, C, D]``, ``lengths[r]`` positions
        filled, room for one more), the rest padding. Returns the logits ``[R, V]`` and writes each
        real row's keys/values into its cache at ``lengths[r]``.

        The blocks are the forward's; only attention differs (:func:`rows_attention`: each real
        row attends over its own cached positions alone). A GEMM's kernel, hence a row's summation
        order, can depend on the row count: the backend picks ``R`` (a fixed count, or one its
        products were checked not to depend on), so a row's logits do not depend on the others."""
        R, B = X.shape[0], len(caches)
        pos = torch.tensor(list(lengths) + [0] * (R - B), device=X.device)
        h = (self.wte[X[:, 0]] + self.wpe[pos])[:, None]  # [R, 1, E]
        for i, block in enumerate(self.h):
            h, _ = block(h, [c[i] for c in caches], None, list(lengths))
        return decode_head(self.ln_f(h).reshape(R, self.hparams.n_embd), self.wte)  # [R, V]

    def lm_head(self, h: torch.Tensor, wte: torch.Tensor) -> torch.Tensor:
        """The tied LM head: ``h [B, T, E] -> [B*T, V]``, as a 2-D matmul."""
        return matmul(h.reshape(-1, self.hparams.n_embd), wte.to(h.dtype).t())


class _LMHeadLoss(torch.autograd.Function):
    """:func:`lm_head_loss` with its own backward: the logits ``[N, V]`` are the only ``[N, V]``
    tensor kept, and the backward turns them, in place, into the loss's gradient with respect to
    them, ``(softmax - onehot) / N``. (``cross_entropy`` over the logits keeps the
    log-probabilities too, and its backward fills a zero ``[N, V]`` gradient before a second pass:
    three more passes over 200 MB a step at 124M, B=4, T=256.)"""

    @staticmethod
    def forward(ctx, h: torch.Tensor, wte: torch.Tensor, targets: torch.Tensor, tied: Optional[dict]) -> torch.Tensor:
        w = wte.to(h.dtype)  # [V, E]
        logits = matmul(h, w.t()).float()  # [N, V], fp32 (as GPT2.lm_head's)
        lse = torch.cat([torch.logsumexp(c, dim=1) for c in logits.split(_LOSS_ROWS)])  # [N], by row blocks:
        loss = (lse - logits.gather(1, targets[:, None])[:, 0]).mean()  # no [N, V] temporary
        ctx.save_for_backward(h, w, targets, lse)
        ctx.logits, ctx.tied, ctx.wte_dtype = logits, tied, wte.dtype  # (the logits: overwritten by the backward)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w, targets, lse = ctx.saved_tensors
        g, ctx.logits = ctx.logits, None
        for c, l in zip(g.split(_LOSS_ROWS), lse.split(_LOSS_ROWS)):
            c.sub_(l[:, None]).exp_()  # softmax, in place
        g[torch.arange(g.shape[0], device=g.device), targets] -= 1.0  # - onehot
        g = g.mul_(grad / g.shape[0]).to(h.dtype)  # d loss / d logits [N, V]
        gw = (g.t() @ h).to(ctx.wte_dtype) if ctx.needs_input_grad[1] else None  # [V, E], contiguous
        if ctx.tied is not None:  # _TiedEmbedding's backward (which runs after this one) adds
            ctx.tied["grad"], gw = gw, None  # its rows and returns the sum as wte's gradient
        return g @ w, gw, None, None  # [N, E], [V, E]


class _TiedEmbedding(torch.autograd.Function):
    """``wte[X]`` whose gradient for ``wte`` is the tied LM head's (left in ``tied['grad']`` by
    ``_LMHeadLoss``) with the lookup's rows added in place: one ``[V, E]`` gradient, where
    autograd would sum two (the lookup's zero-filled or sparse one into a copy of the head's)."""

    @staticmethod
    def forward(ctx, X: torch.Tensor, wte: torch.Tensor, tied: dict) -> torch.Tensor:
        ctx.save_for_backward(X)
        ctx.tied, ctx.shape = tied, wte.shape
        return wte[X]  # [B, T, E]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        X, = ctx.saved_tensors
        gw = ctx.tied.pop("grad", None)
        if gw is None:  # (the head did not run its backward)
            gw = grad.new_zeros(ctx.shape)
        return None, gw.index_add_(0, X.reshape(-1), grad.reshape(-1, ctx.shape[1]).to(gw.dtype)), None


_LOSS_ROWS = 64  # rows of the [N, V] logits a loss pass handles at once (its temporaries: ~13 MB)


def lm_head_loss(h: torch.Tensor, wte: torch.Tensor, targets: torch.Tensor, tied: Optional[dict] = None) -> torch.Tensor:
    """Mean cross-entropy (natural log, fp32) of the tied LM head's logits ``h @ wte^T`` against
    ``targets``: ``h [N, E]`` (after ``ln_f``), ``wte [V, E]`` (cast to ``h``'s dtype), int
    ``targets [N]``. Equal to ``cross_entropy(lm_head(h).float(), targets)``, with less memory and
    time (see ``_LMHeadLoss``). ``tied``: the dict given to the ``_TiedEmbedding`` that looked up
    the model's input (``GPT2.forward``), which then returns wte's whole gradient."""
    return _LMHeadLoss.apply(h, wte, targets, tied)


def decode_head(h: torch.Tensor, wte: torch.Tensor) -> torch.Tensor:
    """The LM head of a batch-invariant step, ``h [R, E] -> [R, V]``, as ``wte @ h^T``: with the
    rows as the product's columns MKL gives each row the same bits for any R from 4 (and it is as
    fast as :func:`matmul` at 1 row, twice as fast at 16), where ``h @ wte^T`` does not."""
    return (wte @ h.t()).t()


def new_cache(hp: HParams, B: int, capacity: int, like: torch.Tensor) -> List[LayerCache]:
    """An (uninitialised) decoding cache: per layer ``(keys, values)`` ``[B, H, capacity, D]`` with
    the dtype and device of ``like``."""
    shape = (B, hp.n_head, capacity, hp.head_dim)
    return [(like.new_empty(shape), like.new_empty(shape)) for _ in range(hp.n_layer)]


def checkpoint_name(param: str) -> str:
    """``h.0.attn.c_attn.w`` -> ``model/h0/attn/c_attn/w``."""
    parts = param.split(".")
    if parts[0] == "h":
        parts = [f"h{parts[1]}"] + parts[2:]
    return "model/" + "/".join(parts)


def from_weights(hp: HParams, weights: Mapping[str, np.ndarray], device="cpu",
                 dtype: torch.dtype = torch.float32, consume: bool = False, trainable: bool = False) -> GPT2:
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
    return model.eval().requires_grad_(trainable)
