"""The one update rule both backends write out, the learning-rate schedule and what decays.

Every step, with ``k`` accumulated micro-batches, for the trainable parameters ``p``:

    g  = (sum of the k micro-batch gradients) / k
    n  = sqrt(sum over all trainable p of sum(g * g))          # global norm, before clipping
    g  = g * min(1, grad_clip / (n + 1e-6))                     # only if grad_clip > 0
    sgd:    g = g + p * wd  (decayed p only);  p = p - g * lr
    adam:   g = g + p * wd  (decayed p only; L2, as torch.optim.Adam)
    adamw:  p = p * (1 - lr * wd)  (decayed p only: decoupled, as torch.optim.AdamW)
    adam, adamw:
            m = m + (g - m) * (1 - beta1)                       # = beta1 m + (1 - beta1) g
            v = v * beta2 + g * (1 - beta2) * g
            p = p - m * s / (sqrt(v) * r + eps)     s = lr / (1 - beta1^t), r = 1 / sqrt(1 - beta2^t)

for the update number ``t`` (1, 2, ...). Epsilon is added *after* the bias correction of ``v``
(the Adam paper's and PyTorch's placement; Keras adds it before, and defaults to 1e-7). Both
backends do exactly these float32 operations, each correctly rounded (no fused multiply-adds,
square roots correctly rounded), so one update from the same gradients gives the same bits in
both (``tests/test_train.py`` checks it against numpy): the PyTorch backend in place over
pieces of the parameters (no full-size temporaries), the TensorFlow backend in one graph function over all
variables. (PyTorch's fused Adam kernel has the same rule but a fused multiply-add in ``m``;
XLA fuses multiply-adds too: 20 steps then drift past the parity bound.) ``lr``, ``s``, ``r``
and ``1 - lr * wd`` are computed in float64 (:func:`step_scalars`, :func:`adam_scalars`) and used
as float32 scalars. Weight decay skips biases, LayerNorm gains and the embeddings (as nanoGPT:
only the block matrices ``[1, in, out]`` decay).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

OPTIMIZERS = ("adam", "adamw", "sgd")
TRAINING_DTYPES = ("float32", "bfloat16")  # bfloat16: mixed precision, fp32 weights and moments
LR_SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer's settings; ``weight_decay`` None means 0.1 for adamw, 0 otherwise."""

    optimizer: str = "adam"
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: Optional[float] = None
    grad_clip: float = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    steps: int = 1
    min_lr_ratio: float = 0.1

    @property
    def wd(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.1 if self.optimizer == "adamw" else 0.0


def decays(name: str) -> bool:
    """Whether weight decay applies to the checkpoint variable ``name``: the block matrices only
    (``.../w``), never biases, gains or the embeddings ``wte``/``wpe``."""
    return name.endswith("/w")


def transformer_layer(name: str) -> bool:
    """``--only_train_transformer_layers``: the variables of the blocks ``model/h<i>/...``."""
    return name.startswith("model/h")


def learning_rate(cfg: OptimConfig, step: int) -> float:
    """The learning rate of 0-based ``step``: linear warm-up over ``warmup_steps`` (from
    lr/warmup_steps), then constant or cosine down to ``min_lr_ratio * lr`` at the last step."""
    lr = cfg.learning_rate
    if step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return lr
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    low = lr * cfg.min_lr_ratio
    return low + 0.5 * (lr - low) * (1.0 + math.cos(math.pi * progress))


def step_scalars(cfg: OptimConfig, step: int) -> Dict[str, float]:
    """What the backend's update needs at 0-based ``step``: the learning rate ``lr`` and the
    update's number ``t = step + 1`` (the trainers' ``apply(micro_batches, lr, t)``)."""
    return {"lr": learning_rate(cfg, step), "t": step + 1}


def adam_scalars(cfg: OptimConfig, lr: float, t: int) -> Tuple[float, float]:
    """``(s, r)`` of the update rule, in float64: the step size ``lr / (1 - beta1^t)`` and
    ``1 / sqrt(1 - beta2^t)`` (a product, not a quotient: PyTorch divides a tensor by a number as
    a product with its reciprocal, so a written-out quotient would round differently)."""
    return lr / (1.0 - cfg.beta1 ** t), 1.0 / math.sqrt(1.0 - cfg.beta2 ** t)


def check_training_dtype(dtype: str, model) -> None:
    """ValueError (one line) unless ``dtype`` is a training dtype and ``model``'s weights are fp32
    (mixed precision keeps fp32 master weights; float16 would need loss scaling, not built)."""
    if dtype not in TRAINING_DTYPES:
        raise ValueError(f"training dtype {dtype!r}: choose one of {', '.join(TRAINING_DTYPES)} "
                         "(float16 needs loss scaling, which the trainer does not do)")
    if getattr(model, "dtype", "float32") != "float32":
        raise ValueError(f"a model loaded in {model.dtype} cannot be trained: load it in float32 "
                         "(--dtype bfloat16 trains with fp32 weights and bfloat16 arithmetic)")


def check_dropout(rate: float) -> float:
    """``rate`` if it is a dropout probability in [0, 1); ValueError (one line) otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {rate!r}")
    return float(rate)
