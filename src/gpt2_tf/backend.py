"""The TensorFlow backend behind ``gpt2_common.load_model("tf", ...)``.

Supplies the two steps that ``gpt2_common.interface.decode_loop`` drives (the same loop and the
same token sampler as the PyTorch backend): ``prefill`` encodes a (left-padded) prompt and returns
the last logits and the KV cache; ``decode`` feeds one token per row and grows the cache.
Both are ``tf.function``s with shape-polymorphic signatures, so they are traced once.
Mirrors ``gpt2_torch/backend.py``.

XLA (CPU, fp32, on by default; ``TFGPT2(..., xla=False)`` or ``GPT2_TF_XLA=0`` turns it off): in a
decode step (one token per row) the dense work of each layer (QKV projection, output projection,
MLP) and the LM head run as XLA-compiled functions, while the step itself stays a dynamic-shape
graph whose attention covers exactly the cached positions. The functions take the weights as
arguments, so all layers share one compilation per batch size. Prompts keep TensorFlow's own
kernels: XLA measured no faster there (dense work 0.97x, attention 0.94x at 1024 tokens) and
would compile once per prompt length. LayerNorms in XLA too measured no different, so they stay.
The batch-invariant step (``decode_rows``: the server's, and ``generate(batch_invariant=True)``'s)
uses TensorFlow's own kernels: XLA's compilations for different row counts sum a row differently.
"""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from gpt2_common.hparams import load_hparams
from gpt2_common.interface import DECODE_ROWS, GPT2Model, ModelError
from gpt2_common.weights import load_weights

from .model import GPT2, MLP, Conv1D, LayerCache, from_weights, new_cache

# The decoding cache (see model.py): per layer (keys, values) [B, H, P, D], all P positions
# filled; each decode step returns it one position longer (TensorFlow cannot write a tensor in
# place, so the step copies it once).
Cache = List[LayerCache]

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}

# TF enables TF32 matmuls on Ampere+ GPUs by default; PyTorch does not. Off, for parity.
tf.config.experimental.enable_tensor_float_32_execution(False)

# On a CPU, one inter-op thread: a decode or prefill step is a chain of dependent ops, and TF's
# default inter-op pool (one thread per core) only competes with the intra-op threads that run
# the matrix products (2 cores, 124M: decode step ~52 -> ~44 ms, prefill of 1024 tokens 10-20%
# faster). Left alone if set before this import (or by TF_NUM_INTEROP_THREADS), or if the
# runtime has already started.
if (not tf.config.list_physical_devices("GPU") and "TF_NUM_INTEROP_THREADS" not in os.environ
        and tf.config.threading.get_inter_op_parallelism_threads() == 0):
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran something; its settings are fixed now
        pass

XLA_ENV = "GPT2_TF_XLA"  # "0" (or false/no/off) turns the XLA decode path off


def xla_enabled(xla: Optional[bool], device: str, dtype: str) -> bool:
    """Whether a model uses the XLA decode path: ``xla`` if given, else on for fp32 on the CPU
    (the only configuration measured) unless ``$GPT2_TF_XLA`` turns it off."""
    if xla is not None:
        return bool(xla)
    off = os.environ.get(XLA_ENV, "1").strip().lower() in ("0", "false", "no", "off")
    return not off and device.startswith("/CPU") and dtype == "float32"


# The model's own modules' math on explicit weights, so one compilation serves every layer.
def _conv(x, w, b):
    return Conv1D.__call__(SimpleNamespace(w=w, b=b), x)


_xla_conv = tf.function(_conv, jit_compile=True)
_xla_mlp = tf.function(lambda x, w1, b1, w2, b2: MLP.__call__(
    SimpleNamespace(scope="", c_fc=lambda y: _conv(y, w1, b1), c_proj=lambda y: _conv(y, w2, b2)), x), jit_compile=True)
_xla_head = tf.function(lambda h, wte: GPT2.lm_head(SimpleNamespace(hparams=SimpleNamespace(n_embd=h.shape[-1])), h, wte),
                        jit_compile=True)


class Switch:
    """A trace-time switch: ``with switch:`` turns it on while a step's graph is traced."""

    def __init__(self) -> None:
        self.on = False

    def __enter__(self) -> "Switch":
        self.on = True
        return self

    def __exit__(self, *exc) -> None:
        self.on = False


class XLADense(tf.Module):
    """Stands in for a dense module: ``fn(x, *weights())`` (an XLA function) while ``switch`` is
    on (a decode step being traced: one token per row, so a fixed shape), the module itself otherwise."""

    def __init__(self, inner: tf.Module, fn: Callable, weights: Callable[[], tuple], switch: Switch):
        super().__init__(name=None)
        self.inner, self._fn, self._weights, self._switch = inner, fn, weights, switch

    def __call__(self, x: tf.Tensor, *args) -> tf.Tensor:  # args: the module's own (hooks)
        return self._fn(x, *self._weights()) if self._switch.on else self.inner(x, *args)


def use_xla(model: GPT2) -> Switch:
    """Route ``model``'s dense work through the shared XLA functions (see the module docstring)
    in graphs traced inside ``with switch:`` (the returned switch); variables, their names and
    every other call are unchanged."""
    switch = Switch()

    def conv(c):
        return XLADense(c, _xla_conv, lambda: (c.w, c.b), switch)

    for block in model.h:
        attn, mlp = block.attn, block.mlp
        attn.c_attn, attn.c_proj = conv(attn.c_attn), conv(attn.c_proj)
        block.mlp = XLADense(mlp, _xla_mlp, lambda m=mlp: (m.c_fc.w, m.c_fc.b, m.c_proj.w, m.c_proj.b), switch)
    plain_head = model.lm_head
    model.lm_head = lambda h, wte: _xla_head(h, wte) if switch.on else plain_head(h, wte)
    return switch


def resolve_device(device: Optional[str]) -> str:
    """``None`` -> the GPU if there is one, else the CPU; ``"cuda:N"``/``"gpu:N"`` -> ``/GPU:N``."""
    gpus = tf.config.list_logical_devices("GPU")
    if device is None:
        return "/GPU:0" if gpus else "/CPU:0"
    name = str(device).lower()
    if name == "cpu":
        return "/CPU:0"
    kind, _, index = name.partition(":")
    if kind not in ("cuda", "gpu") or (index and not index.isdigit()):
        raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    if int(index or 0) >= len(gpus):
        raise ModelError(f"device {device!r} requested but no such GPU is visible to TensorFlow")
    return f"/GPU:{int(index or 0)}"


class TFGPT2(GPT2Model):
    """GPT-2 on TensorFlow 2 (CPU or GPU; fp32 by default)."""

    backend = "tf"

    def __init__(self, model_dir: str, device: Optional[str] = None, dtype: str = "float32",
                 trainable: bool = False, xla: Optional[bool] = None) -> None:
        """``xla``: the XLA decode path (see the module docstring); default: on for fp32 on the
        CPU unless ``$GPT2_TF_XLA`` is 0. ``trainable``: variables a training step may update."""
        dev = resolve_device(device)
        hp = load_hparams(model_dir)
        super().__init__(model_dir, hp, dev, dtype)
        self.model: GPT2 = from_weights(hp, load_weights(model_dir, hp), dev, DTYPES[dtype], consume=True,
                                       trainable=trainable)
        self.xla = xla_enabled(xla, dev, dtype)
        self._xla_switch = use_xla(self.model) if self.xla else Switch()  # on while a decode step is traced
        tokens = tf.TensorSpec([None, None], tf.int32)
        kv = tf.TensorSpec([None, hp.n_head, None, hp.head_dim], DTYPES[dtype])
        past = [(kv, kv)] * hp.n_layer  # the decoding cache: per layer (keys, values)
        # traced steps for plain forwards; a hooked forward runs the same step functions eagerly
        # (hooks are Python functions of numpy arrays: no graph to trace them into)
        self._full = tf.function(self._full_fn, input_signature=[tokens, tokens])
        self._prefill_fn = tf.function(self._prefill_step, input_signature=[tokens, tokens])
        self._decode_fn = tf.function(self._decode_step, input_signature=[tokens, past, tokens])
        self._rows_fns: Dict[int, Callable] = {}  # batch-invariant steps, one trace per number of real rows

    def _full_fn(self, X, mask, hooks=None):
        return self.model(X, attention_mask=mask, hooks=hooks)["logits"]

    def _prefill_step(self, X, mask, hooks=None):
        cache = new_cache(self.hparams, tf.shape(X)[0], 0, self.model.wte)  # the prompt's keys/values come back per layer
        out = self.model(X, past=cache, attention_mask=mask, last_only=True, past_length=0, hooks=hooks)
        return tf.cast(out["logits"][:, -1], tf.float32), out["present"]

    def _decode_step(self, X, past, mask, hooks=None):
        # (traced once: the XLA functions compile once per batch size; hooked steps use the modules)
        with self._xla_switch if hooks is None else Switch():
            out = self.model(X, past=past, attention_mask=mask, last_only=True, past_length=tf.shape(past[0][0])[-2],
                             hooks=hooks)
        return tf.cast(out["logits"][:, -1], tf.float32), out["present"]

    def _logits(self, tokens: np.ndarray, mask: Optional[np.ndarray], hooks=None) -> np.ndarray:
        mask = np.ones_like(tokens) if mask is None else mask
        with tf.device(self.device):
            logits = self._full(tokens, mask) if hooks is None else self._full_fn(tf.constant(tokens), tf.constant(mask), hooks)
            return tf.cast(logits, tf.float32).numpy()

    def _prefill(self, tokens: np.ndarray, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Cache]:
        with tf.device(self.device):
            if hooks is None:
                logits, past = self._prefill_fn(tokens, mask)
            else:
                logits, past = self._prefill_step(tf.constant(tokens), tf.constant(mask), hooks)
        return logits.numpy(), past

    def _decode(self, tokens: np.ndarray, past: Cache, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Cache]:
        with tf.device(self.device):
            if hooks is None:
                logits, past = self._decode_fn(tokens, past, mask)
            else:
                logits, past = self._decode_step(tf.constant(tokens), past, tf.constant(mask), hooks)
        return logits.numpy(), past

    def _rows_fn(self, B: int) -> Callable:
        """The traced batch-invariant step for ``B`` real rows (each row's cache length is free)."""
        if B not in self._rows_fns:
            hp = self.hparams
            kv = tf.TensorSpec([1, hp.n_head, None, hp.head_dim], DTYPES[self.dtype])
            caches = [[(kv, kv)] * hp.n_layer] * B

            def step(X, lengths, caches):
                # TensorFlow's own kernels, not the XLA dense functions: XLA's compilation for 4
                # rows sums a row otherwise than its compilation for 16 (measured), TF's does not
                logits, new = self.model.decode_rows(X, caches, lengths)
                return tf.cast(logits, tf.float32), new

            self._rows_fns[B] = tf.function(step, input_signature=[
                tf.TensorSpec([DECODE_ROWS, 1], tf.int32), tf.TensorSpec([DECODE_ROWS], tf.int32), caches])
        return self._rows_fns[B]

    def _decode_rows(self, tokens: np.ndarray, pasts: List[Cache]) -> Tuple[np.ndarray, List[Cache]]:
        B = len(pasts)  # always DECODE_ROWS rows: TensorFlow's products and LayerNorms depend on the count
        X = np.zeros((DECODE_ROWS, 1), np.int32)
        X[:B, 0] = tokens
        lengths = np.zeros(DECODE_ROWS, np.int32)
        lengths[:B] = [int(p[0][0].shape[-2]) for p in pasts]
        with tf.device(self.device):
            logits, new = self._rows_fn(B)(X, lengths, [list(p) for p in pasts])
        return logits.numpy()[:B], [list(c) for c in new]

    # ---- named activations (gpt2_common.hooks) ----
    def _to_numpy(self, x: tf.Tensor) -> np.ndarray:
        return tf.cast(x, tf.float32).numpy()

    def _from_numpy(self, a: np.ndarray, like: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.constant(a), like.dtype)

    def _weight_tensors(self) -> Dict[str, tf.Variable]:
        from .train import named_variables

        return named_variables(self.model)

    def _activation_gradients(self, tokens: np.ndarray, mask: Optional[np.ndarray], names: List[str],
                              metric) -> Tuple[float, Dict[str, np.ndarray]]:
        marked: Dict[str, tf.Tensor] = {}
        mask = np.ones_like(tokens) if mask is None else mask

        def mark(name: str):
            def fn(x: tf.Tensor) -> tf.Tensor:
                tape.watch(x)
                marked[name] = x
                return x
            return fn

        with tf.device(self.device), tf.GradientTape(watch_accessed_variables=False) as tape:
            logits = tf.cast(self._full_fn(tf.constant(tokens), tf.constant(mask), {n: mark(n) for n in names}),
                             tf.float32)  # [B, T, V]
            index = np.stack([metric.rows, metric.positions, metric.tokens], axis=1)
            value = tf.reduce_sum(tf.gather_nd(logits, index) * metric.coef)
            if metric.lse is not None:
                value = value + tf.reduce_sum(metric.lse * tf.reduce_logsumexp(logits, axis=-1))
        grads = tape.gradient(value, [marked[n] for n in names])
        return float(value), {n: (tf.zeros_like(marked[n]) if g is None else tf.cast(g, tf.float32)).numpy()
                              for n, g in zip(names, grads)}

    # ---- training contract (gpt2_tf/train.py) ----
    def _loss(self, tokens: np.ndarray) -> float:
        from .train import lm_loss

        with tf.device(self.device):
            return float(lm_loss(self.model, tf.constant(tokens)))

    def _gradients(self, tokens: np.ndarray):
        from .train import gradients

        with tf.device(self.device):
            return gradients(self.model, tokens)
