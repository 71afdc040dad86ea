"""Training on PyTorch: the loss, its gradients and one optimizer step (the rule of
``gpt2_common.train.optim``, written out here in torch ops). Mirrors ``gpt2_tf/train.py``.

The loop, data, schedule, run folder and CLI are shared (``gpt2_common.train``); this file only
turns numpy batches into gradients and updates. :class:`Trainer` splits a step into
:meth:`Trainer.forward_backward` (one micro-batch, gradients summed into buffers) and
:meth:`Trainer.apply` (average, clip, update), so a data-parallel wrapper can all-reduce the
buffers between the two.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from gpt2_common.train.loop import TrainerState
from gpt2_common.train.optim import OptimConfig, adam_scalars, check_dropout, check_training_dtype, decays
from gpt2_common.weights import expected_shapes

from .model import GPT2, checkpoint_name


PIECE = 1 << 22  # elements of a parameter the update handles at once (16 MB in fp32; see Trainer.apply)


def local(t: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP ``DTensor``) tensor's local shard, sharing its memory; else ``t``."""
    return t.to_local() if hasattr(t, "to_local") else t


def lm_loss(model: GPT2, X: torch.Tensor, compute_dtype: Optional[torch.dtype] = None, drop=None) -> torch.Tensor:
    """Mean next-token cross-entropy (natural log) of ``X [B, T]`` over positions 1..T-1, fp32
    (``compute_dtype``: mixed precision, ``drop``: dropout; see ``GPT2.forward``)."""
    return model(X[:, :-1], compute_dtype=compute_dtype, drop=drop, targets=X[:, 1:])["loss"]


def named_parameters(model: GPT2) -> Dict[str, torch.nn.Parameter]:
    """The parameters by checkpoint name, in checkpoint (sorted) order."""
    params = {checkpoint_name(n): p for n, p in model.named_parameters()}
    return {n: params[n] for n in sorted(params)}


def to_checkpoint_shape(name: str, a: torch.Tensor, shapes: Mapping[str, tuple]) -> np.ndarray:
    return a.detach().float().cpu().numpy().reshape(shapes[name]).copy()  # never a view of the live tensor


def gradients(model: GPT2, tokens: np.ndarray) -> Tuple[float, Dict[str, np.ndarray]]:
    """``(loss, {checkpoint name: gradient shaped as in the checkpoint})`` for int ``tokens [B, T]``."""
    params = named_parameters(model)
    X = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(model.wte.device)
    with torch.enable_grad():
        leaves = list(params.values())
        flags = [p.requires_grad for p in leaves]
        for p in leaves:
            p.requires_grad_(True)
        try:
            loss = lm_loss(model, X)
            grads = torch.autograd.grad(loss, leaves)
        finally:
            for p, f in zip(leaves, flags):
                p.requires_grad_(f)
    shapes = expected_shapes(model.hparams)
    return float(loss.detach()), {n: to_checkpoint_shape(n, g, shapes) for n, g in zip(params, grads)}


def use_gradient_checkpointing(model: GPT2) -> None:
    """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``)
    instead of keeping them: less memory, ~1/3 more compute. Decoding (with a cache) is unchanged."""
    for block in model.h:
        plain = type(block).forward.__get__(block)

        def forward(x, past, bias, past_length=None, hooks=None, drop=None, _plain=plain):
            if past is None and hooks is None and torch.is_grad_enabled():  # (the recomputation
                y = checkpoint(lambda x: _plain(x, None, bias, None, None, drop)[0], x,  # restores the
                               use_reentrant=False)  # RNG: the same dropout masks)
                return y, x.new_zeros(0)  # the (unused) keys/values are not kept
            return _plain(x, past, bias, past_length, hooks, drop)

        block.forward = forward


def exact_sqrt(v: torch.Tensor, out: torch.Tensor, scratch64: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` correctly rounded, into ``out``: torch's fp32 sqrt on the CPU is not (0.7% of
    values 1 ulp off). On the CPU numpy's (the processor's sqrt instruction), in place; elsewhere
    via float64 (``scratch64``, ``v``'s size), whose rounding to fp32 is the correctly rounded one."""
    if v.device.type == "cpu":
        np.sqrt(v.numpy(), out=out.numpy())
        return out
    return out.copy_(scratch64.copy_(v).sqrt_())


class Trainer(TrainerState):
    """Trains the parameters of a loaded ``TorchGPT2`` in place (so sampling sees them)."""

    def __init__(self, gpt2, cfg: OptimConfig, trainable: Callable[[str], bool] = lambda n: True,
                 memory_saving: bool = False, dtype: str = "float32", dropout: float = 0.0, seed: int = 0) -> None:
        self.model: GPT2 = gpt2.model
        self.cfg = cfg
        check_training_dtype(dtype, gpt2)
        self.compute_dtype = None if dtype == "float32" else getattr(torch, dtype)  # weights and moments stay fp32
        self.drop = (check_dropout(dropout), None) if dropout else None  # masks from torch's RNG, seeded here
        if self.drop:
            torch.manual_seed(seed)
        self.shapes = expected_shapes(self.model.hparams)
        self.params = {n: p for n, p in named_parameters(self.model).items() if trainable(n)}
        self.names: List[str] = list(self.params)
        for n, p in named_parameters(self.model).items():
            p.requires_grad_(n in self.params)
        self.acc: Dict[str, torch.Tensor] = {}  # the step's gradient sums so far (none yet: zero)
        self.m = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.device = self.model.wte.device
        self._scratch: Tuple[torch.Tensor, ...] = ()  # the update's temporaries (see apply)
        if memory_saving:
            use_gradient_checkpointing(self.model)

    def _tokens(self, tokens: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(self.device)

    def forward_backward(self, tokens: np.ndarray) -> float:
        """Loss of one micro-batch; its gradients are added to the step's sums (:meth:`add_gradient`)."""
        with torch.enable_grad():
            loss = lm_loss(self.model, self._tokens(tokens), self.compute_dtype, self.drop)
            grads = torch.autograd.grad(loss, list(self.params.values()))
        for n, g in zip(self.names, grads):
            self.add_gradient(n, g)
        return float(loss.detach())

    def add_gradient(self, name: str, g: torch.Tensor) -> None:
        """Add ``g`` to ``name``'s gradient sum of the step. The step's first gradient becomes
        the sum itself, not a copy (no zeroed buffer to add it to: two passes over 500 MB fewer a
        step at 124M), unless it is not a plain fp32 tensor of its own."""
        if name in self.acc:
            self.acc[name].add_(g)
            return
        p = self.params[name]
        if g.is_sparse or g.dtype != p.dtype or not g.is_contiguous() or any(
                local(g).untyped_storage().data_ptr() == local(a).untyped_storage().data_ptr() for a in self.acc.values()):
            g = g.to_dense().to(p.dtype).contiguous().clone()
        self.acc[name] = g

    @torch.no_grad()
    def eval_loss(self, tokens: np.ndarray) -> float:
        """Loss of ``tokens`` without gradients."""
        return float(lm_loss(self.model, self._tokens(tokens), self.compute_dtype))

    @torch.no_grad()
    def apply(self, micro_batches: int, lr: float, t: int) -> float:
        """Average the accumulated gradients, clip, update (the rule of ``optim``, operation for
        operation as TensorFlow's; ``t`` is the update's number, from 1); returns the global norm
        before clipping. The gradient sums are then dropped (the next step starts from none).

        The rule runs in place over pieces of at most :data:`PIECE` elements of each parameter,
        its temporaries in scratch buffers of that size: no full-size temporary is allocated, and
        few enough operations run that a loaded machine's thread scheduling does not dominate
        (1 MB pieces kept the temporaries in cache, no faster, but 4x as many parallel regions
        took 10-60 s an update while other processes held the cores).
        (PyTorch's fused Adam kernel is faster still, but it computes ``m`` with a fused
        multiply-add, and 20 steps then drift past the cross-framework parity bound.)"""
        cfg, grads = self.cfg, [self.acc[n] for n in self.names]
        if micro_batches != 1:  # (dividing by 1, and scaling by 1 below, change nothing: skipped)
            for g in grads:
                g.div_(micro_batches)
        norm = self.global_norm()
        if cfg.grad_clip > 0:
            scale = torch.clamp(cfg.grad_clip / (norm + 1e-6), max=1.0)
            if scale < 1.0:
                for g in grads:
                    g.mul_(scale)
        s, r = adam_scalars(cfg, lr, t)
        keep, wd = 1.0 - lr * cfg.wd, cfg.wd
        for n in self.names:
            decay = bool(wd) and decays(n)
            for p, g, m, v, x, z in self._pieces(n):  # x, z: scratch of p's size
                if decay and cfg.optimizer in ("sgd", "adam"):
                    g.add_(torch.mul(p, wd, out=x))  # L2: g = g + p * wd
                if cfg.optimizer == "sgd":
                    p.sub_(torch.mul(g, lr, out=x))
                    continue
                if decay and cfg.optimizer == "adamw":
                    p.mul_(keep)  # decoupled: p = p * (1 - lr * wd)
                m.add_(torch.sub(g, m, out=x).mul_(1 - cfg.beta1))  # m = m + (1 - beta1) * (g - m)
                v.mul_(cfg.beta2).add_(torch.mul(g, 1 - cfg.beta2, out=x).mul_(g))  # v = beta2 v + (1 - beta2) g g
                denominator = exact_sqrt(v, x, z).mul_(r).add_(cfg.eps)  # sqrt(v) * r + eps
                p.addcdiv_(m, denominator, value=-s)  # p + (-s * m) / (...): the bits of p - s * m / (...)
        self.acc = {}
        return float(norm)

    def global_norm(self) -> torch.Tensor:
        """``sqrt(sum of all g * g)`` over the accumulated gradients, in fp32, by pieces, each
        piece's sum a pairwise one (``torch.linalg.vector_norm`` sums sequentially on the CPU:
        2e-5 off at 1.6M elements)."""
        sums = [torch.sum(torch.mul(g, g, out=x)) for n in self.names for _, g, _, _, x, _ in self._pieces(n)]
        return torch.sqrt(torch.stack(sums).sum())

    def _pieces(self, name: str):
        """``(p, g, m, v, x, z)``: flat views of ``name``'s parameter, gradient and moments, at
        most :data:`PIECE` elements each, and scratch buffers of the same size (``z`` float64, for
        :func:`exact_sqrt` off the CPU; empty on it)."""
        P, G, M, V = (local(a[name]).view(-1) for a in (self.params, self.acc, self.m, self.v))
        if not self._scratch or self._scratch[0].device != P.device:
            size = min(PIECE, max(local(p).numel() for p in self.params.values()))
            size64 = 0 if P.device.type == "cpu" else size
            self._scratch = (P.new_empty(size), P.new_empty(size64, dtype=torch.float64))
        for i in range(0, P.numel(), PIECE):
            k = min(PIECE, P.numel() - i)
            yield (P[i:i + k], G[i:i + k], M[i:i + k], V[i:i + k]) + tuple(a[:k] for a in self._scratch)

    # ---- state as numpy (TrainerState), keyed by checkpoint names, shaped as in the checkpoint ----
    def _numpy(self, name: str, tensor) -> np.ndarray:
        return to_checkpoint_shape(name, tensor, self.shapes)

    def _all_variables(self):
        return named_parameters(self.model)

    @torch.no_grad()
    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        for n in self.names:
            self.m[n].copy_(torch.from_numpy(np.asarray(state["m/" + n])).reshape(self.m[n].shape))
            self.v[n].copy_(torch.from_numpy(np.asarray(state["v/" + n])).reshape(self.v[n].shape))

    def rng_state(self) -> Dict[str, np.ndarray]:
        """The framework's random state (dropout), to resume exactly."""
        return {"torch_rng": torch.get_rng_state().numpy()}

    def load_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        if "torch_rng" in state:
            torch.set_rng_state(torch.from_numpy(np.asarray(state["torch_rng"], dtype=np.uint8)))
