"""GPT-2 in TensorFlow 2, parameter for parameter the original TensorFlow 1 release.

Mirrors ``gpt2_torch/model.py`` line for line (``diff`` shows only framework calls); the math is
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
  ``present`` is the cache with S positions filled (TensorFlow cannot write a tensor in place:
  here the new cache is the old one's first P positions with this step's appended, C = S).
Named activations (``hook_embed``, ``blocks.{l}.attn.hook_pattern``, ...; see ``gpt2_common.hooks``)
pass through ``hook(hooks, scope, name, x)``: with ``hooks=None`` nothing is computed beyond the
plain forward; a hooked LayerNorm scale is computed explicitly (its divide, not the rsqrt).
Variables keep the checkpoint's names: ``model/h0/attn/c_attn/w``
(1x1-conv weights are stored as ``[in, out]``, the checkpoint's ``[1, in, out]`` squeezed).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from gpt2_common.hooks import ModelHooks, hook, wants
from gpt2_common.hparams import HParams

LayerCache = Tuple[tf.Tensor, tf.Tensor]  # one layer's decoding cache: (keys, values) [B, H, C, D]
Drop = Optional[Tuple[float, Any]]  # training dropout: (rate, seed [2] int); masks from (seed, site), stateless
Past = Union[tf.Tensor, List[LayerCache]]
MASK_VALUE = -1e10  # the original's value for masked attention scores (not -inf), in fp32
LN_EPS = 1e-5
_NewVariable = Callable[[str, List[int]], tf.Variable]


def _shareable(arr: np.ndarray) -> bool:
    """Whether TensorFlow can use ``arr``'s memory as it is (see ``gpt2_common.checkpoint.aligned_empty``)."""
    return (isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.flags.c_contiguous
            and arr.flags.writeable and arr.ctypes.data % 64 == 0)


def _variables(dtype: tf.DType = tf.float32, weights: Optional[MutableMapping[str, np.ndarray]] = None,
              trainable: bool = False, consume: bool = False) -> _NewVariable:
    """The modules' variable factory ``new(name, shape)``: a ``tf.Variable`` of ``dtype`` created
    from ``weights[name]`` (zeros without ``weights``), so loading holds no zeroed copy.
    ``consume`` removes each array from ``weights`` once used, so it can be freed at once."""
    def new(name: str, shape: List[int]) -> tf.Variable:
        if weights is None:
            init = tf.zeros(shape, dtype=dtype)
        elif consume and _shareable(weights[name]):  # the variable takes the array's memory
            init = tf.cast(tf.experimental.dlpack.from_dlpack(weights.pop(name).reshape(shape).__dlpack__()), dtype)
        else:
            arr = weights.pop(name) if consume else weights[name]
            init = tf.cast(np.reshape(arr, shape), dtype)
            del arr
        return tf.Variable(init, name=name, trainable=trainable)

    return new


class LayerNorm(tf.Module):
    def __init__(self, n: int, scope: str, name: str, new: _NewVariable):
        super().__init__(name=None)
        self.scope = scope  # hook names: f"{scope}.hook_scale", f"{scope}.hook_normalized"
        self.g = new(f"{name}/g", [n])
        self.b = new(f"{name}/b", [n])

    def __call__(self, x: tf.Tensor, hooks: Optional[ModelHooks] = None) -> tf.Tensor:
        x32 = tf.cast(x, tf.float32)  # statistics and affine in fp32, then x's dtype
        if wants(hooks, self.scope, "hook_scale"):  # spelled out, with the scale [B, T, 1] named
            u = tf.reduce_mean(x32, axis=-1, keepdims=True)
            s = tf.reduce_mean(tf.square(x32 - u), axis=-1, keepdims=True)  # biased variance
            scale = hook(hooks, self.scope, "hook_scale", tf.sqrt(s + LN_EPS))
            y = (x32 - u) / scale * tf.cast(self.g, tf.float32) + tf.cast(self.b, tf.float32)
        else:
            y = _layer_norm(x32, tf.cast(self.g, tf.float32), tf.cast(self.b, tf.float32))
        return hook(hooks, self.scope, "hook_normalized", tf.cast(y, x.dtype))


def _normalized(x: tf.Tensor) -> tf.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last axis (biased variance), as a rsqrt product."""
    u = tf.reduce_mean(x, axis=-1, keepdims=True)
    s = tf.reduce_mean(tf.square(x - u), axis=-1, keepdims=True)
    return (x - u) * tf.math.rsqrt(s + LN_EPS)


def _layer_norm_ops(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return _normalized(x) * g + b


def _gelu_ops(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.gelu(x, approximate=True)


# LayerNorm (fp32) and GELU (tanh approximation, in x's dtype) whose gradients keep their inputs
# alone and recompute the rest in the backward pass (as PyTorch's fused F.layer_norm and F.gelu
# keep theirs): TensorFlow's gradients of these ops, the same operations (and bits), without the
# three or four [B, T, E]-sized intermediates each would keep (~0.4 GB at 124M, B=4, T=256).
_layer_norm = tf.recompute_grad(_layer_norm_ops)
_gelu = tf.recompute_grad(_gelu_ops)


def matmul(x: tf.Tensor, w: tf.Tensor, b: Optional[tf.Tensor] = None) -> tf.Tensor:
    """``x [N, K] @ w [K, M] (+ b)``: one matrix product (TensorFlow's own threading)."""
    y = tf.matmul(x, w)
    return y if b is None else y + b


class Conv1D(tf.Module):
    """The original's 1x1 convolution: ``x @ w + b`` with ``w`` stored ``[nx, nf]``."""

    def __init__(self, nx: int, nf: int, name: str, new: _NewVariable):
        super().__init__(name=None)
        self.w = new(f"{name}/w", [nx, nf])
        self.b = new(f"{name}/b", [nf])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:  # [..., nx] -> [..., nf], in x's dtype
        y = matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), tf.cast(self.w, x.dtype), tf.cast(self.b, x.dtype))
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(y)[-1:]], axis=0))


def write_cache(past: LayerCache, k: tf.Tensor, v: tf.Tensor, P) -> Tuple[tf.Tensor, tf.Tensor, LayerCache]:
    """This step's keys/values ``[B, H, T, D]`` into a layer's cache at positions P..S-1:
    ``(keys, values)`` ``[B, H, S, D]`` to attend over, and the layer's new cache (here: a copy)."""
    k = tf.concat([past[0][:, :, :P], k], axis=-2)  # [B, H, S, D]
    v = tf.concat([past[1][:, :, :P], v], axis=-2)
    return k, v, (k, v)


class Attention(tf.Module):
    def __init__(self, hp: HParams, scope: str, name: str, new: _NewVariable):
        super().__init__(name=None)
        self.scope, self.n_head = scope, hp.n_head
        self.c_attn = Conv1D(hp.n_embd, 3 * hp.n_embd, f"{name}/c_attn", new)
        self.c_proj = Conv1D(hp.n_embd, hp.n_embd, f"{name}/c_proj", new)

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:  # [B, T, E] -> [B, T, H, D]
        B, T, E = tf.unstack(tf.shape(x))
        return tf.reshape(x, [B, T, self.n_head, E // self.n_head])

    def __call__(self, x: tf.Tensor, past, bias: Optional[tf.Tensor], past_length=None,
                 hooks: Optional[ModelHooks] = None, drop: Drop = None, site: int = 0):
        q, k, v = tf.split(self.c_attn(x), 3, axis=2)  # 3 x [B, T, E]
        q, k, v = (tf.transpose(hook(hooks, self.scope, f"hook_{n}", self.split_heads(t)), [0, 2, 1, 3])
                   for n, t in zip("qkv", (q, k, v)))  # [B, T, H, D] named, [B, H, T, D] used
        if isinstance(past_length, list):  # rows with their own caches: GPT2.decode_rows
            a, present = rows_attention(q, k, v, past, past_length)
        else:
            if past_length is None:  # the original: present = this step's keys/values
                present = tf.stack([k, v], axis=1)  # [B, 2, H, T, D]
                if past is not None:
                    pk, pv = tf.unstack(past, axis=1)  # [B, H, P, D]
                    k, v = tf.concat([pk, k], axis=-2), tf.concat([pv, v], axis=-2)  # [B, H, S, D]
            else:  # a decoding cache holding P = past_length positions
                k, v, present = write_cache(past, k, v, past_length)  # [B, H, S, D]
            # softmax(q k^T / sqrt(D) + bias) v in fp32 whatever the model dtype; bias is 0 or -1e10
            q, k, v = tf.cast(q, tf.float32), tf.cast(k, tf.float32), tf.cast(v, tf.float32)
            if hooks is None and past is None:  # a prompt or training
                a = _attention_recomputed(q, k, v, bias, drop, site)
            else:
                a = attention(q, k, v, bias, hooks, self.scope, drop, site)
        a = hook(hooks, self.scope, "hook_z", tf.transpose(tf.cast(a, x.dtype), [0, 2, 1, 3]))  # [B, T, H, D]
        return self.c_proj(tf.reshape(a, tf.shape(x))), present  # merge heads -> [B, T, E]


def attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: Optional[tf.Tensor],
              hooks: Optional[ModelHooks] = None, scope: str = "", drop: Drop = None, site: int = 0) -> tf.Tensor:
    """``softmax(q k^T / sqrt(D) + bias) v`` ``[B, H, T, D]``, spelled out. ``drop``: dropout on
    the probabilities."""
    w = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, T, S]
    w = hook(hooks, scope, "hook_attn_scores", w + bias)
    return tf.matmul(dropout(hook(hooks, scope, "hook_pattern", tf.nn.softmax(w, axis=-1)), drop, site), v)


def _attention_recomputed(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: Optional[tf.Tensor],
                          drop: Drop = None, site: int = 0) -> tf.Tensor:
    """:func:`attention` whose backward pass keeps ``q, k, v`` and recomputes the scores and the
    ``[B, H, T, S]`` probabilities (as PyTorch's fused attention keeps none): at 124M, T=1024, the
    twelve layers' probabilities are 600 MB a sequence, their recomputation ~3% of a step."""
    return tf.recompute_grad(lambda q, k, v: attention(q, k, v, bias, None, "", drop, site))(q, k, v)


def rows_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, caches: List[LayerCache],
                   lengths: List[int]) -> Tuple[tf.Tensor, List[LayerCache]]:
    """Attention of one new position per row (``q, k, v`` ``[R, H, 1, D]``) where the first
    ``len(caches)`` rows each have their own decoding cache (``lengths[r]`` positions; this step's
    keys/values are appended) and attend over it alone; the other rows are padding (zeros out).
    ``[R, H, 1, D]`` fp32, and the caches."""
    rows, present = [], []
    for r, (past, P) in enumerate(zip(caches, lengths)):
        kr, vr, cache = write_cache(past, k[r:r + 1], v[r:r + 1], P)  # [1, H, P+1, D]
        rows.append(attention(tf.cast(q[r:r + 1], tf.float32), tf.cast(kr, tf.float32), tf.cast(vr, tf.float32),
                              tf.zeros([], tf.float32)))
        present.append(cache)
    if len(caches) < q.shape[0]:
        rows.append(tf.zeros([q.shape[0] - len(caches)] + q.shape[1:], tf.float32))
    return tf.concat(rows, 0), present


def dropout(x: tf.Tensor, drop: Drop, site: int) -> tf.Tensor:
    """Training dropout at ``site`` (a number per place in the model): each element zeroed with
    probability ``drop[0]``, the rest scaled by 1/(1 - rate); the mask is a function of the seed
    ``drop[1]`` and the site (stateless), so a recomputed block draws it again the same."""
    if drop is None:
        return x
    seed = tf.random.experimental.stateless_fold_in(drop[1], site)
    return tf.nn.experimental.stateless_dropout(x, drop[0], seed=seed)


class MLP(tf.Module):
    def __init__(self, hp: HParams, scope: str, name: str, new: _NewVariable):
        super().__init__(name=None)
        self.scope = scope
        self.c_fc = Conv1D(hp.n_embd, 4 * hp.n_embd, f"{name}/c_fc", new)
        self.c_proj = Conv1D(4 * hp.n_embd, hp.n_embd, f"{name}/c_proj", new)

    def __call__(self, x: tf.Tensor, hooks: Optional[ModelHooks] = None) -> tf.Tensor:
        h = hook(hooks, self.scope, "hook_pre", self.c_fc(x))  # [B, T, 4E]
        return self.c_proj(hook(hooks, self.scope, "hook_post", _gelu(h)))


class Block(tf.Module):
    def __init__(self, hp: HParams, layer: int, new: _NewVariable):
        super().__init__(name=None)
        s, name = f"blocks.{layer}", f"model/h{layer}"  # hook scope, checkpoint scope
        self.scope, self.layer = s, layer
        self.ln_1, self.attn = LayerNorm(hp.n_embd, f"{s}.ln1", f"{name}/ln_1", new), Attention(hp, f"{s}.attn", f"{name}/attn", new)
        self.ln_2, self.mlp = LayerNorm(hp.n_embd, f"{s}.ln2", f"{name}/ln_2", new), MLP(hp, f"{s}.mlp", f"{name}/mlp", new)

    def __call__(self, x: tf.Tensor, past, bias: Optional[tf.Tensor], past_length=None,
                 hooks: Optional[ModelHooks] = None, drop: Drop = None):
        s, site = self.scope, 1 + 3 * self.layer  # dropout sites: probabilities, attention out, MLP out
        x = hook(hooks, s, "hook_resid_pre", x)
        a, present = self.attn(self.ln_1(x, hooks), past, bias, past_length, hooks, drop, site)
        x = hook(hooks, s, "hook_resid_mid", x + hook(hooks, s, "hook_attn_out", dropout(a, drop, site + 1)))
        m = dropout(self.mlp(self.ln_2(x, hooks), hooks), drop, site + 2)
        x = hook(hooks, s, "hook_resid_post", x + hook(hooks, s, "hook_mlp_out", m))
        return x, present


def attention_bias(T, P, key_mask: Optional[tf.Tensor]) -> tf.Tensor:
    """fp32 ``[B, 1, T, S]`` (``[T, S]`` without ``key_mask``): 0 where query ``i`` (at position
    P+i) sees key ``j`` (``j <= P+i`` and key ``j`` not padding: ``key_mask`` ``[B, S]``, 1 for
    real tokens), else -1e10. Added to the scores: the same as the original's replacing them in
    fp32 (a score is far below 1e10's ulp, 1024), and a row with every key masked (left padding)
    is uniform either way."""
    i = tf.range(T)[:, None]
    j = tf.range(P + T)[None, :]
    mask = i + P >= j  # [T, S]: oneDNN's fused (q k^T) * scale + bias is ~500x slower with [1, 1, T, S]
    if key_mask is not None:
        mask = mask[None, None] & tf.cast(key_mask, tf.bool)[:, None, None, :]
    return tf.where(mask, 0.0, MASK_VALUE)


def position_ids(T, P, key_mask: Optional[tf.Tensor]) -> tf.Tensor:
    """``[B or 1, T]``: positions count real tokens only, so left padding does not shift them."""
    if key_mask is None:
        return tf.range(P, P + T)[None]
    pos = tf.cumsum(tf.cast(key_mask, tf.int32), axis=-1) - 1  # [B, S]
    return tf.maximum(pos[:, P:], 0)


class GPT2(tf.Module):
    """``model(X, past=None, attention_mask=None) -> {'logits': [B,T,V], 'present': [B,L,2,H,T,D]}``."""

    def __init__(self, hp: HParams, new: Optional[_NewVariable] = None):
        super().__init__(name="model")
        new = new or _variables()
        self.hparams = hp
        self.wte = new("model/wte", [hp.n_vocab, hp.n_embd])
        self.wpe = new("model/wpe", [hp.n_ctx, hp.n_embd])
        self.h = [Block(hp, i, new) for i in range(hp.n_layer)]
        self.ln_f = LayerNorm(hp.n_embd, "ln_final", "model/ln_f", new)

    def __call__(self, X: tf.Tensor, past: Optional[Past] = None, attention_mask: Optional[tf.Tensor] = None,
                 last_only: bool = False, past_length=None, hooks: Optional[ModelHooks] = None,
                 compute_dtype: Optional[tf.DType] = None, drop: Drop = None,
                 targets: Optional[tf.Tensor] = None) -> Dict[str, Any]:
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
        B, T = tf.unstack(tf.shape(X))
        P = past_length if past_length is not None else 0 if past is None else tf.shape(past)[-2]
        bias = attention_bias(T, P, attention_mask)  # [B, 1, T, S] or [T, S] (no fused causal attention in TF)
        # Gather from dense reads: a gather on the variable itself (ResourceGather) switches it to
        # copy-on-read, after which every read of wte (the LM head) copies all of it (~100 ms at 124M).
        wte, wpe = self.wte.value(), self.wpe.value()
        pos = tf.gather(wpe, position_ids(T, P, attention_mask))  # [B|1, T, E]
        if hooks is not None:
            pos = hook(hooks, "", "hook_pos_embed", tf.broadcast_to(pos, [B, T, self.hparams.n_embd]))
        h = dropout(hook(hooks, "", "hook_embed", tf.gather(wte, X)) + pos, drop, 0)  # [B, T, E]
        if compute_dtype is not None:
            h = tf.cast(h, compute_dtype)
        presents = []
        for i, block in enumerate(self.h):
            h, present = block(h, None if past is None else past[i] if past_length is not None else past[:, i],
                               bias, past_length, hooks, drop)
            presents.append(present)
        h = self.ln_f(h, hooks)  # [B, T, E]
        if targets is not None:
            return {"loss": lm_head_loss(tf.reshape(h, [-1, self.hparams.n_embd]), wte, tf.reshape(targets, [-1]))}
        if last_only:
            h = h[:, -1:]
        logits = tf.reshape(self.lm_head(h, wte), [B, -1, self.hparams.n_vocab])  # [B, T, V]
        present = presents if past_length is not None else tf.stack(presents, axis=1)
        return {"logits": logits, "present": present}

    def decode_rows(self, X: tf.Tensor, caches: List[List[LayerCache]], lengths: tf.Tensor) -> Tuple[tf.Tensor, List[List[LayerCache]]]:
        """One batch-invariant decoding step (see ``gpt2_common.interface.DECODE_ROWS``): ``X`` int
        ``[R, 1]``, one new token per row; the first ``len(caches)`` rows are real, each with its own
        decoding cache (per layer ``(keys, values)`` ``[1, H, P_r, D]``), the rest padding; ``lengths``
        int ``[R]``: P_r, 0 for padding. Returns the logits ``[R, V]`` and the real rows' caches one position longer.

        The blocks are the forward's; only attention differs (:func:`rows_attention`: each real
        row attends over its own cached positions alone). Every product has the same ``R`` rows
        whatever the number of real rows (TensorFlow's kernels, and its LayerNorm reductions, sum a
        row in another order for another row count), so a row's logits do not depend on the others."""
        R, B = X.shape[0], len(caches)
        wte, wpe = self.wte.value(), self.wpe.value()
        h = (tf.gather(wte, X[:, 0]) + tf.gather(wpe, lengths))[:, None]  # [R, 1, E]
        new_caches: List[List[LayerCache]] = [[] for _ in range(B)]
        for i, block in enumerate(self.h):
            h, present = block(h, [c[i] for c in caches], None, [lengths[r] for r in range(B)])
            for r, cache in enumerate(present):
                new_caches[r].append(cache)
        return decode_head(tf.reshape(self.ln_f(h), [R, self.hparams.n_embd]), wte), new_caches  # [R, V]

    def lm_head(self, h: tf.Tensor, wte: tf.Tensor) -> tf.Tensor:
        """The tied LM head: ``h [B, T, E] -> [B*T, V]``, as a 2-D matmul (a 3-D one against
        wte^T copies the [V, E] matrix every call)."""
        return tf.matmul(tf.reshape(h, [-1, self.hparams.n_embd]), tf.cast(wte, h.dtype), transpose_b=True)


def lm_head_loss(h: tf.Tensor, wte: tf.Tensor, targets: tf.Tensor, tied: Optional[dict] = None) -> tf.Tensor:
    """Mean cross-entropy (natural log, fp32) of the tied LM head's logits ``h @ wte^T`` against
    ``targets``: ``h [N, E]`` (after ``ln_f``), ``wte [V, E]`` (cast to ``h``'s dtype), int
    ``targets [N]``. (TensorFlow's sparse cross-entropy op keeps only its gradient
    ``softmax - onehot``, and the lookup's gradient is rows already: what ``gpt2_torch``'s
    version spells out; ``tied`` is unused here.)"""
    logits = tf.cast(tf.matmul(h, tf.cast(wte, h.dtype), transpose_b=True), tf.float32)  # [N, V], as GPT2.lm_head's
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def decode_head(h: tf.Tensor, wte: tf.Tensor) -> tf.Tensor:
    """The LM head of a batch-invariant step, ``h [R, E] -> [R, V]``, as ``(wte @ h^T)^T``: the rows
    are the product's columns (as in the PyTorch backend, where that keeps a row's sums the same
    for any R)."""
    return tf.transpose(tf.matmul(wte, h, transpose_b=True))


def new_cache(hp: HParams, B: int, capacity: int, like: tf.Tensor) -> List[LayerCache]:
    """An empty decoding cache: per layer (keys, values) ``[B, H, 0, D]`` with the dtype of ``like``
    (TensorFlow's cache holds exactly its filled positions and grows by concatenation, so
    ``capacity`` reserves nothing here)."""
    empty = tf.zeros([B, hp.n_head, 0, hp.head_dim], like.dtype)
    return [(empty, empty)] * hp.n_layer


def checkpoint_name(var: tf.Variable) -> str:
    """The variable's checkpoint name, e.g. ``model/h0/attn/c_attn/w``."""
    return var.name.split(":")[0]


def from_weights(hp: HParams, weights: Mapping[str, np.ndarray], device: str = "/CPU:0",
                 dtype: tf.DType = tf.float32, consume: bool = False, trainable: bool = False) -> GPT2:
    """Build a :class:`GPT2` from checkpoint arrays (see ``gpt2_common.weights``), each variable
    created from its array (see :func:`_variables`; ``consume`` frees each array once used)."""
    with tf.device(device):
        return GPT2(hp, _variables(dtype, weights, trainable, consume))
