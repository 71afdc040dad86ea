"""Training on TensorFlow: the loss, its gradients and one optimizer step (the rule of
``gpt2_common.train.optim``, written out here in TF ops). Mirrors ``gpt2_torch/train.py``.

The loop, data, schedule, run folder and CLI are shared (``gpt2_common.train``); this file only
turns numpy batches into gradients and updates. :class:`Trainer` splits a step into
:meth:`Trainer.forward_backward` (one micro-batch, gradients summed) and
:meth:`Trainer.apply` (average, clip, update), so a ``tf.distribute`` strategy can all-reduce
the sums between the two.

Memory (the process's peak, at 124M B=4 T=256: 5.2 GB before these measures, 3.7 GB after;
Hugging Face's 3.9-4.0 GB): the gradients are the forward+backward function's outputs, the first
micro-batch's becoming the step's sums (no accumulation variables, as on PyTorch); LayerNorm,
GELU and attention recompute their intermediates in the backward pass (``model.py``); the update
runs variable by variable, smallest first, each gradient dropped once its variable is updated, one
chain of operations at a time; glibc keeps one arena and hands its free pages back after each
phase (``gpt2_common.train.allocator``, which ``load_model(..., trainable=True)`` sets up).

A model to train is loaded with trainable variables (``load_model(..., trainable=True)``, the
model's own ``trainable`` option): ``tf.recompute_grad`` only differentiates trainable ones.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from gpt2_common.train.allocator import release_free_memory
from gpt2_common.train.loop import TrainerState
from gpt2_common.train.optim import OptimConfig, adam_scalars, check_dropout, check_training_dtype, decays
from gpt2_common.weights import expected_shapes

from .model import GPT2, checkpoint_name

TOKENS = tf.TensorSpec([None, None], tf.int32)
RELEASE_EVERY = 1 << 24  # elements updated between returns of free memory (malloc_trim) in an update


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


def global_norm(grads: List[tf.Tensor]) -> tf.Tensor:
    """``sqrt(sum of all g * g)``, in fp32."""
    return tf.sqrt(tf.reduce_sum(tf.stack([tf.reduce_sum(g * g) for g in grads])))


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
        self.acc: Dict[str, tf.Tensor] = {}  # the step's gradient sums so far (none yet: zero)
        with tf.device(self.device):
            zeros = lambda v, what: tf.Variable(tf.zeros_like(v), trainable=False, name=what)  # noqa: E731
            self.m = {n: zeros(v, "m") for n, v in self.params.items()}
            self.v = {n: zeros(v, "v") for n, v in self.params.items()}
            self.draws = tf.Variable(0, dtype=tf.int64, trainable=False, name="draws")  # micro-batches so far
        if memory_saving:
            use_gradient_checkpointing(self.model)
        self._fb = tf.function(self._forward_backward, input_signature=[TOKENS])
        self._eval = tf.function(lambda X: lm_loss(self.model, X, self.compute_dtype), input_signature=[TOKENS])
        scalar = tf.TensorSpec([], tf.float32)
        grads = [tf.TensorSpec(v.shape, tf.float32) for v in self.params.values()]
        self._norm = tf.function(global_norm, input_signature=[grads])
        self._update = tf.function(self._update_fn)  # one trace per variable shape (and decay or not)
        # smallest first: each gradient is dropped once its variable is updated, so the largest
        # update's temporaries (wte's) meet the fewest gradients still held
        self._update_order = sorted(self.names, key=lambda n: self.params[n].shape.num_elements())

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
        return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, params)]  # wpe's: IndexedSlices

    def forward_backward(self, tokens: np.ndarray) -> float:
        """Loss of one micro-batch; its gradients are added to the step's sums (:meth:`add_gradient`)."""
        with tf.device(self.device):
            loss, grads = self._fb(np.asarray(tokens, dtype=np.int32))
            for n, g in zip(self.names, grads):
                self.add_gradient(n, g)
        release_free_memory()
        return float(loss)

    def add_gradient(self, name: str, g: tf.Tensor) -> None:
        """Add ``g`` to ``name``'s gradient sum of the step; the step's first gradient is the sum
        itself (no zeroed buffer to add it to, as on PyTorch)."""
        self.acc[name] = self.acc[name] + g if name in self.acc else g

    def eval_loss(self, tokens: np.ndarray) -> float:
        """Loss of ``tokens`` without gradients."""
        with tf.device(self.device):
            return float(self._eval(np.asarray(tokens, dtype=np.int32)))

    def apply(self, micro_batches: int, lr: float, t: int) -> float:
        """Average the accumulated gradients, clip, update (the rule of ``optim``, operation for
        operation as PyTorch's; ``t`` is the update's number, from 1); returns the global norm
        before clipping. The gradient sums are then dropped (the next step starts from none).

        Dividing by ``micro_batches`` and clipping replace each sum in turn (dividing by 1 and
        scaling by 1 change nothing: skipped), so no second set of full-size gradients exists at
        once; the update is one graph function call per variable, smallest first, each gradient
        dropped after its variable's update (:meth:`_update_fn`). Not XLA-compiled: XLA fuses
        multiply-adds (1 ulp off in 11% of ``m``)."""
        cfg = self.cfg
        s, r = adam_scalars(cfg, lr, t)
        with tf.device(self.device):
            if micro_batches != 1:
                for n in self.names:
                    self.acc[n] = self.acc[n] / np.float32(micro_batches)
            norm = self._norm([self.acc[n] for n in self.names])
            if cfg.grad_clip > 0:
                scale = tf.minimum(np.float32(cfg.grad_clip) / (norm + np.float32(1e-6)), np.float32(1.0))
                if float(scale) < 1.0:
                    for n in self.names:
                        self.acc[n] = self.acc[n] * scale
            scalars, since_release = [np.float32(x) for x in (lr, s, r, 1.0 - lr * cfg.wd)], 0
            for n in self._update_order:
                p = self.params[n]
                self._update(p, self.m[n], self.v[n], self.acc.pop(n), decays(n), *scalars)
                since_release += p.shape.num_elements()
                if since_release >= RELEASE_EVERY:
                    release_free_memory()  # the freed gradients and temporaries
                    since_release = 0
        release_free_memory()
        return float(norm)

    def _update_fn(self, p, m, v, g, decay: bool, lr, s, r, keep):
        """The rule's update of variable ``p`` (moments ``m``, ``v``) from its averaged, clipped
        gradient ``g``, in float32. The operations run one chain at a time (``m``, then ``v``,
        then the variable): the graph would otherwise run the independent ones at once, each
        holding a temporary of the variable's size."""
        cfg, done = self.cfg, []
        wd = cfg.wd if decay else 0.0

        def then(write):  # what comes next waits for this write
            done[:] = [write]

        if cfg.optimizer in ("sgd", "adam") and wd:
            g = g + p * wd
        if cfg.optimizer == "sgd":
            p.assign_sub(g * lr)
            return
        if cfg.optimizer == "adamw" and wd:
            then(p.assign(p * keep))
        with tf.control_dependencies(done):
            then(m.assign(m + (1 - cfg.beta1) * (g - m)))
        with tf.control_dependencies(done):
            then(v.assign(v * cfg.beta2 + (1 - cfg.beta2) * g * g))
        with tf.control_dependencies(done):
            p.assign_sub(s * m / (tf.sqrt(v) * r + cfg.eps))

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
