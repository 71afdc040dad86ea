"""Training on TensorFlow: the loss, its gradients and one optimizer step (the rule of
``gpt2_common.train.optim``, written out here in TF ops). Mirrors ``gpt2_torch/train.py``.

The loop, data, schedule, run folder and CLI are shared (``gpt2_common.train``); this file only
turns numpy batches into gradients and updates. :class:`Trainer` splits a step into
:meth:`Trainer.forward_backward` (one micro-batch, gradients summed into buffers) and
:meth:`Trainer.apply` (average, clip, update), so a ``tf.distribute`` strategy can all-reduce
the buffers between the two.

A model to train is loaded with trainable variables (``load_model(..., trainable=True)``, the
model's own ``trainable`` option): ``tf.recompute_grad`` only differentiates trainable ones.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from gpt2_common.train.loop import TrainerState
from gpt2_common.train.optim import OptimConfig, adam_scalars, check_dropout, check_training_dtype, decays
from gpt2_common.weights import expected_shapes

from .model import GPT2, checkpoint_name

TOKENS = tf.TensorSpec([None, None], tf.int32)


def lm_loss(model: GPT2, X: tf.Tensor, compute_dtype: Optional[tf.DType] = None, drop=None) -> tf.Tensor:
    """Mean next-token cross-entropy (natural log) of ``X [B, T]`` over positions 1..T-1, fp32
    (``compute_dtype``: mixed precision, ``drop``: dropout; see ``GPT2.__call__``)."""
    return model(X[:, :-1], compute_dtype=compute_dtype, drop=drop, targets=X[:, 1:])["loss"]


def named_variables(model: GPT2) -> Dict[str, tf.Variable]:
    """The variables by checkpoint name, in checkpoint (sorted) order."""
    variables = {checkpoint_name(v): v for v in model.variables}
    return {n: variables[n] for n in sorted(variables)}


def to_checkpoint_shape(name: str, a, shapes: Mapping[str, tuple]) -> np.ndarray:
    return np.asarray(tf.cast(tf.convert_to_tensor(a), tf.float32)).reshape(shapes[name])


def gradients(model: GPT2, tokens: np.ndarray) -> Tuple[float, Dict[str, np.ndarray]]:
    """``(loss, {checkpoint name: gradient shaped as in the checkpoint})`` for int ``tokens [B, T]``."""
    variables = named_variables(model)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(list(variables.values()))
        loss = lm_loss(model, tf.constant(np.asarray(tokens, dtype=np.int32)))
    grads = tape.gradient(loss, list(variables.values()))
    shapes = expected_shapes(model.hparams)
    return float(loss), {n: to_checkpoint_shape(n, g, shapes) for n, g in zip(variables, grads)}


class _Recompute(tf.Module):
    """A block whose activations are recomputed in the backward pass (``tf.recompute_grad``)
    when run without a cache; decoding (with a cache) runs the block as it is."""

    def __init__(self, block) -> None:
        super().__init__(name=None)
        self.block = block

    def __call__(self, x, past, bias, past_length=None, hooks=None, drop=None):
        if past is not None or hooks is not None:
            return self.block(x, past, bias, past_length, hooks, drop)
        y = tf.recompute_grad(lambda x: self.block(x, None, bias, None, None, drop)[0])(x)  # stateless masks: the same
        return y, tf.zeros([0], x.dtype)  # the (unused) keys/values are not kept


def use_gradient_checkpointing(model: GPT2) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them."""
    model.h = [b if isinstance(b, _Recompute) else _Recompute(b) for b in model.h]


class Trainer(TrainerState):
    """Trains the variables of a ``TFGPT2`` loaded with ``trainable=True``, in place (so sampling sees them)."""

    def __init__(self, gpt2, cfg: OptimConfig, trainable: Callable[[str], bool] = lambda n: True,
                 memory_saving: bool = False, dtype: str = "float32", dropout: float = 0.0, seed: int = 0) -> None:
        self.model: GPT2 = gpt2.model
        self.cfg = cfg
        check_training_dtype(dtype, gpt2)
        self.compute_dtype = None if dtype == "float32" else tf.as_dtype(dtype)  # weights and moments stay fp32
        self.dropout, self.seed = check_dropout(dropout), seed  # masks from (seed, micro-batch number, site)
        self.shapes = expected_shapes(self.model.hparams)
        self.params = {n: v for n, v in named_variables(self.model).items() if trainable(n)}
        self.names: List[str] = list(self.params)
        self.device = gpt2.device
        frozen = [n for n, v in self.params.items() if not v.trainable]
        if frozen:  # see the module docstring
            raise ValueError(f"{frozen[0]} is not trainable: load the model with load_model(..., trainable=True)")
        with tf.device(self.device):
            zeros = lambda v, what: tf.Variable(tf.zeros_like(v), trainable=False, name=what)  # noqa: E731
            self.acc = {n: zeros(v, "acc") for n, v in self.params.items()}
            self.m = {n: zeros(v, "m") for n, v in self.params.items()}
            self.v = {n: zeros(v, "v") for n, v in self.params.items()}
            self.draws = tf.Variable(0, dtype=tf.int64, trainable=False, name="draws")  # micro-batches so far
        if memory_saving:
            use_gradient_checkpointing(self.model)
        self._fb = tf.function(self._forward_backward, input_signature=[TOKENS])
        self._eval = tf.function(lambda X: lm_loss(self.model, X, self.compute_dtype), input_signature=[TOKENS])
        scalar = tf.TensorSpec([], tf.float32)
        self._apply = tf.function(self._apply_fn, input_signature=[scalar] * 5)

    def _forward_backward(self, X):
        params = list(self.params.values())
        drop = None
        if self.dropout:
            drop = (self.dropout, tf.stack([tf.constant(self.seed, tf.int64), self.draws.read_value()]))
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss = lm_loss(self.model, X, self.compute_dtype, drop)
        if self.dropout:
            self.draws.assign_add(1)
        for n, g in zip(self.names, tape.gradient(loss, params)):
            self.acc[n].assign_add(tf.convert_to_tensor(g))  # wpe's arrives as IndexedSlices
        return loss

    def forward_backward(self, tokens: np.ndarray) -> float:
        """Loss of one micro-batch; its gradients are added to the accumulation buffers."""
        with tf.device(self.device):
            return float(self._fb(np.asarray(tokens, dtype=np.int32)))

    def eval_loss(self, tokens: np.ndarray) -> float:
        """Loss of ``tokens`` without gradients."""
        with tf.device(self.device):
            return float(self._eval(np.asarray(tokens, dtype=np.int32)))

    def _apply_fn(self, micro_batches, lr, s, r, keep):
        cfg = self.cfg
        grads = [self.acc[n] / micro_batches for n in self.names]
        norm = tf.sqrt(tf.reduce_sum(tf.stack([tf.reduce_sum(g * g) for g in grads])))
        if cfg.grad_clip > 0:
            scale = tf.minimum(cfg.grad_clip / (norm + 1e-6), 1.0)
            grads = [g * scale for g in grads]
        for n, g in zip(self.names, grads):
            p, wd = self.params[n], cfg.wd if decays(n) else 0.0
            if cfg.optimizer in ("sgd", "adam") and wd:
                g = g + p * wd
            if cfg.optimizer == "sgd":
                p.assign_sub(g * lr)
            else:
                m, v = self.m[n], self.v[n]
                if cfg.optimizer == "adamw" and wd:
                    p.assign(p * keep)
                m.assign(m + (1 - cfg.beta1) * (g - m))
                v.assign(v * cfg.beta2 + (1 - cfg.beta2) * g * g)
                p.assign_sub(s * m / (tf.sqrt(v) * r + cfg.eps))
            self.acc[n].assign(tf.zeros_like(g))
        return norm

    def apply(self, micro_batches: int, lr: float, t: int) -> float:
        """Average the accumulated gradients, clip, update (the rule of ``optim``; ``t`` is the
        update's number, from 1); returns the global norm before clipping. The accumulation
        buffers are zeroed. One graph function over all variables, the rule's float32 operations
        and no others: not XLA-compiled, as XLA fuses multiply-adds (1 ulp off in 11% of ``m``)."""
        s, r = adam_scalars(self.cfg, lr, t)
        with tf.device(self.device):
            return float(self._apply(*(np.float32(x) for x in (micro_batches, lr, s, r, 1.0 - lr * self.cfg.wd))))

    # ---- state as numpy (TrainerState), keyed by checkpoint names, shaped as in the checkpoint ----
    def _numpy(self, name: str, tensor) -> np.ndarray:
        return to_checkpoint_shape(name, tensor, self.shapes)

    def _all_variables(self):
        return named_variables(self.model)

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        for n in self.names:
            self.m[n].assign(np.asarray(state["m/" + n]).reshape(self.m[n].shape))
            self.v[n].assign(np.asarray(state["v/" + n]).reshape(self.v[n].shape))

    def rng_state(self) -> Dict[str, np.ndarray]:
        """The dropout masks' state (micro-batches drawn so far), to resume exactly."""
        return {"tf_dropout_draws": np.array([int(self.draws.numpy())], dtype=np.int64)}

    def load_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        if "tf_dropout_draws" in state:
            self.draws.assign(int(np.asarray(state["tf_dropout_draws"])[0]))
