"""GPT-2 in TensorFlow 2, parameter for parameter the original TensorFlow 1 release.

Mirrors ``gpt2_torch/model.py`` line for line; the math is the original ``model.py``'s:
LayerNorm with eps 1e-5 and biased variance, GELU (tanh approximation), attention scaled by
1/sqrt(head_dim) with masked scores set to -1e10, LM head tied to ``wte``.

Shapes: B batch, T new tokens, P past tokens, S = P + T, E n_embd, H n_head, D head_dim, V n_vocab,
L n_layer. ``past``/``present`` are ``[B, L, 2, H, P, D]`` as in the original (while decoding,
a list of per-layer ``(keys, values)`` may stand in: TensorFlow cannot update a tensor in place).
Variables keep the checkpoint's names: ``model/h0/attn/c_attn/w``
(1x1-conv weights are stored as ``[in, out]``, the checkpoint's ``[1, in, out]`` squeezed).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from gpt2_common.hparams import HParams

Past = Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]  # one layer's: [B, 2, H, P, D], or (keys, values)
MASK_VALUE = -1e10  # the original's value for masked attention scores (not -inf)
LN_EPS = 1e-5


NewVariable = Callable[[str, List[int]], tf.Variable]


def shareable(arr: np.ndarray) -> bool:
    """Whether TensorFlow can use ``arr``'s memory as it is (see ``gpt2_common.checkpoint.aligned_empty``)."""
    return (isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.flags.c_contiguous
            and arr.flags.writeable and arr.ctypes.data % 64 == 0)


def variables(dtype: tf.DType = tf.float32, weights: Optional[MutableMapping[str, np.ndarray]] = None,
              trainable: bool = False, consume: bool = False) -> NewVariable:
    """The modules' variable factory ``new(name, shape)``: a ``tf.Variable`` of ``dtype`` created
    from ``weights[name]`` (zeros without ``weights``), so loading holds no zeroed copy.
    ``consume`` removes each array from ``weights`` once used, so it can be freed at once."""
    def new(name: str, shape: List[int]) -> tf.Variable:
        if weights is None:
            init = tf.zeros(shape, dtype=dtype)
        elif consume and shareable(weights[name]):  # the variable takes the array's memory
            init = tf.cast(tf.experimental.dlpack.from_dlpack(weights.pop(name).reshape(shape).__dlpack__()), dtype)
        else:
            arr = weights.pop(name) if consume else weights[name]
            init = tf.cast(np.reshape(arr, shape), dtype)
            del arr
        return tf.Variable(init, name=name, trainable=trainable)

    return new


class LayerNorm(tf.Module):
    def __init__(self, n: int, name: str, new: NewVariable):
        super().__init__(name=None)
        self.g = new(f"{name}/g", [n])
        self.b = new(f"{name}/b", [n])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:  # statistics and affine in fp32, then x's dtype
        x32 = tf.cast(x, tf.float32)
        u = tf.reduce_mean(x32, axis=-1, keepdims=True)
        s = tf.reduce_mean(tf.square(x32 - u), axis=-1, keepdims=True)  # biased variance
        y = (x32 - u) * tf.math.rsqrt(s + LN_EPS) * tf.cast(self.g, tf.float32) + tf.cast(self.b, tf.float32)
        return tf.cast(y, x.dtype)


class Conv1D(tf.Module):
    """The original's 1x1 convolution: ``x @ w + b`` with ``w`` stored ``[nx, nf]``."""

    def __init__(self, nx: int, nf: int, name: str, new: NewVariable):
        super().__init__(name=None)
        self.w = new(f"{name}/w", [nx, nf])
        self.b = new(f"{name}/b", [nf])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:  # [..., nx] -> [..., nf]
        y = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), self.w) + self.b
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(self.w)[-1:]], axis=0))


class Attention(tf.Module):
    def __init__(self, hp: HParams, name: str, new: NewVariable):
        super().__init__(name=None)
        self.n_head = hp.n_head
        self.c_attn = Conv1D(hp.n_embd, 3 * hp.n_embd, f"{name}/c_attn", new)
        self.c_proj = Conv1D(hp.n_embd, hp.n_embd, f"{name}/c_proj", new)

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:  # [B, T, E] -> [B, H, T, D]
        B, T, E = tf.unstack(tf.shape(x))
        return tf.transpose(tf.reshape(x, [B, T, self.n_head, E // self.n_head]), [0, 2, 1, 3])

    def __call__(self, x: tf.Tensor, past: Optional[Past], mask: tf.Tensor):
        q, k, v = tf.split(self.c_attn(x), 3, axis=2)  # 3 x [B, T, E]
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # [B, H, T, D]
        if isinstance(past, tuple):  # a decoding cache (keys, values) [B, H, P, D]: one copy per step
            k, v = tf.concat([past[0], k], axis=-2), tf.concat([past[1], v], axis=-2)  # [B, H, S, D]
            present = (k, v)
        else:  # the original: present = this step's keys/values
            present = tf.stack([k, v], axis=1)  # [B, 2, H, T, D]
            if past is not None:
                pk, pv = tf.unstack(past, axis=1)  # [B, H, P, D]
                k, v = tf.concat([pk, k], axis=-2), tf.concat([pv, v], axis=-2)  # [B, H, S, D]
        # scores, mask and softmax in fp32 whatever the model dtype (-1e10 does not fit fp16)
        q, k, v32 = tf.cast(q, tf.float32), tf.cast(k, tf.float32), tf.cast(v, tf.float32)
        w = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(v.shape[-1]))  # [B, H, T, S]
        w = tf.where(mask, w, tf.constant(MASK_VALUE, dtype=w.dtype))  # mask: [B or 1, 1, T, S]
        a = tf.cast(tf.matmul(tf.nn.softmax(w, axis=-1), v32), v.dtype)  # [B, H, T, D]
        a = tf.reshape(tf.transpose(a, [0, 2, 1, 3]), tf.shape(x))  # merge heads -> [B, T, E]
        return self.c_proj(a), present


class MLP(tf.Module):
    def __init__(self, hp: HParams, name: str, new: NewVariable):
        super().__init__(name=None)
        self.c_fc = Conv1D(hp.n_embd, 4 * hp.n_embd, f"{name}/c_fc", new)
        self.c_proj = Conv1D(4 * hp.n_embd, hp.n_embd, f"{name}/c_proj", new)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.c_proj(tf.nn.gelu(self.c_fc(x), approximate=True))


class Block(tf.Module):
    def __init__(self, hp: HParams, name: str, new: NewVariable):
        super().__init__(name=None)
        self.ln_1, self.attn = LayerNorm(hp.n_embd, f"{name}/ln_1", new), Attention(hp, f"{name}/attn", new)
        self.ln_2, self.mlp = LayerNorm(hp.n_embd, f"{name}/ln_2", new), MLP(hp, f"{name}/mlp", new)

    def __call__(self, x: tf.Tensor, past: Optional[Past], mask: tf.Tensor):
        a, present = self.attn(self.ln_1(x), past, mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


def build_mask(T, P, key_mask: Optional[tf.Tensor]) -> tf.Tensor:
    """Boolean ``[B or 1, 1, T, S]``: query ``i`` (at position P+i) sees key ``j`` iff ``j <= P+i``
    and key ``j`` is not padding (``key_mask`` ``[B, S]``, 1 for real tokens)."""
    i = tf.range(T)[:, None]
    j = tf.range(P + T)[None, :]
    mask = (i + P >= j)[None, None]  # [1, 1, T, S]
    if key_mask is not None:
        mask = mask & tf.cast(key_mask, tf.bool)[:, None, None, :]
    return mask


def position_ids(T, P, key_mask: Optional[tf.Tensor]) -> tf.Tensor:
    """``[B or 1, T]``: positions count real tokens only, so left padding does not shift them."""
    if key_mask is None:
        return tf.range(P, P + T)[None]
    pos = tf.cumsum(tf.cast(key_mask, tf.int32), axis=-1) - 1  # [B, S]
    return tf.maximum(pos[:, P:], 0)


class GPT2(tf.Module):
    """``model(X, past=None, attention_mask=None) -> {'logits': [B,T,V], 'present': [B,L,2,H,T,D]}``."""

    def __init__(self, hp: HParams, new: Optional[NewVariable] = None):
        super().__init__(name="model")
        new = new or variables()
        self.hparams = hp
        self.wte = new("model/wte", [hp.n_vocab, hp.n_embd])
        self.wpe = new("model/wpe", [hp.n_ctx, hp.n_embd])
        self.h = [Block(hp, f"model/h{i}", new) for i in range(hp.n_layer)]
        self.ln_f = LayerNorm(hp.n_embd, "model/ln_f", new)

    def __call__(self, X: tf.Tensor, past: Union[None, tf.Tensor, List[Tuple[tf.Tensor, tf.Tensor]]] = None,
                 attention_mask: Optional[tf.Tensor] = None, last_only: bool = False
                 ) -> Dict[str, Any]:
        """``X`` int ``[B, T]``; ``attention_mask`` ``[B, P+T]`` (1 = real token, 0 = left padding);
        ``last_only`` computes logits for the last position only (``[B, 1, V]``).

        ``past`` may also be a decoding cache: a list of per-layer ``(keys, values)`` ``[B, H, P, D]``
        (empty ones start a prompt); ``present`` is then the same structure with S = P+T positions.
        Same math; TensorFlow cannot write a tensor in place, and this way each step copies the
        cache once instead of slicing, stacking and concatenating ``[B, L, 2, H, P, D]``."""
        B, T = tf.unstack(tf.shape(X))
        P = 0 if past is None else tf.shape(past[0][0] if isinstance(past, list) else past)[-2]
        mask = build_mask(T, P, attention_mask)
        # Gather from dense reads: a gather on the variable itself (ResourceGather) switches it to
        # copy-on-read, after which every read of wte (the LM head) copies all of it (~100 ms at 124M).
        wte, wpe = self.wte.value(), self.wpe.value()
        h = tf.gather(wte, X) + tf.gather(wpe, position_ids(T, P, attention_mask))  # [B, T, E]
        presents = []
        for i, block in enumerate(self.h):
            h, present = block(h, None if past is None else past[i] if isinstance(past, list) else past[:, i], mask)
            presents.append(present)
        h = self.ln_f(h)  # [B, T, E]
        if last_only:
            h = h[:, -1:]
        # tied LM head, as a 2-D matmul: a 3-D one against wte^T copies the [V, E] matrix every call
        logits = tf.matmul(tf.reshape(h, [-1, self.hparams.n_embd]), wte, transpose_b=True)
        logits = tf.reshape(logits, [B, -1, self.hparams.n_vocab])  # [B, T, V]
        return {"logits": logits, "present": presents if isinstance(past, list) else tf.stack(presents, axis=1)}


def checkpoint_name(var: tf.Variable) -> str:
    """The variable's checkpoint name, e.g. ``model/h0/attn/c_attn/w``."""
    return var.name.split(":")[0]


def from_weights(hp: HParams, weights: Mapping[str, np.ndarray], device: str = "/CPU:0",
                 dtype: tf.DType = tf.float32, consume: bool = False, trainable: bool = False) -> GPT2:
    """Build a :class:`GPT2` from checkpoint arrays (see ``gpt2_common.weights``), each variable
    created from its array (see :func:`variables`; ``consume`` frees each array once used)."""
    with tf.device(device):
        return GPT2(hp, variables(dtype, weights, trainable, consume))
