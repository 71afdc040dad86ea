"""Data-parallel training on PyTorch: ``torch.distributed`` (gloo on CPUs, NCCL on GPUs) and
``DistributedDataParallel``, started by ``torchrun`` (see ``gpt2_common.train.distributed`` for
the sharding rule).

:class:`DistributedTrainer` is the single-process :class:`~gpt2_torch.train.Trainer` with its
model wrapped in DDP: each micro-batch runs forward and ``backward()`` through the DDP module,
under ``no_sync()`` for all but the rank's last micro-batch, so DDP's reducer all-reduces (and
averages over the ranks) the locally summed gradients once per step, overlapped with the last
backward pass. :meth:`apply` then moves ``param.grad`` into the trainer's buffers and runs the
same hand-written update on every rank, so every rank keeps identical weights and optimizer state.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gpt2_common.train.distributed import PeerLost, World, lost_message, timeout_seconds
from gpt2_common.train.optim import OptimConfig

from .train import Trainer, lm_loss, named_parameters


def init(world: World, device: Optional[str]) -> str:
    """Join the process group of ``torchrun`` (env:// rendezvous) and return this rank's device:
    ``cuda:LOCAL_RANK`` with NCCL when GPUs are used, else ``cpu`` with gloo."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = (device is None and torch.cuda.is_available()) or (device or "").startswith(("cuda", "gpu"))
    if gpu:
        device = device if device and ":" in device else f"cuda:{local}"
        torch.cuda.set_device(torch.device(device.replace("gpu", "cuda")))
    dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(seconds=timeout_seconds()))
    return device if gpu else "cpu"


def shutdown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose gradients DDP all-reduces across the ranks (``world.size`` > 1)."""

    def __init__(self, gpt2, cfg: OptimConfig, trainable: Callable[[str], bool] = lambda n: True,
                 memory_saving: bool = False, world: World = World(), accumulate: int = 1,
                 dtype: str = "float32", dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__(gpt2, cfg, trainable, memory_saving, dtype, dropout, seed)
        self.world, self.accumulate, self._micro = world, accumulate, 0
        gpu = self.device.type == "cuda"
        with self._collective():  # DDP broadcasts rank 0's weights: every rank starts equal
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if gpu else None,
                                               forward_sync_buffers=False)  # the only buffer is the constant mask

    @contextlib.contextmanager
    def _collective(self) -> Iterator[None]:
        try:
            yield
        except (dist.DistError, RuntimeError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                raise
            raise PeerLost(lost_message(self.world, e)) from e

    def forward_backward(self, tokens: np.ndarray) -> float:
        """Loss of one of this rank's micro-batches; its gradients are summed into ``param.grad``
        (on the rank's last micro-batch of the step DDP all-reduces them)."""
        self._micro += 1
        sync = self._micro >= self.accumulate
        X = self._tokens(tokens)
        with self._collective(), torch.enable_grad(), (contextlib.nullcontext() if sync else self.ddp.no_sync()):
            loss = lm_loss(self.ddp, X, self.compute_dtype, self.drop)
            loss.backward()
        return float(loss.detach())

    @torch.no_grad()
    def apply(self, micro_batches: int, lr: float, t: int) -> float:
        """The update of :meth:`Trainer.apply` from DDP's gradients: their mean over the ranks of
        each rank's sum of ``micro_batches``, divided here by ``micro_batches``."""
        self._micro = 0
        for n, p in self.params.items():
            self.add_gradient(n, p.grad)
            p.grad = None
        return super().apply(micro_batches, lr, t)

    def all_mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (the step's loss for the metrics)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        with self._collective():
            dist.all_reduce(t)
        return float(t.item()) / self.world.size

    def barrier(self) -> None:
        """Wait for every rank."""
        with self._collective():
            dist.barrier()


class FSDPTrainer(DistributedTrainer):
    """``--fsdp``: the parameters, gradients and optimizer state sharded across the ranks with
    FSDP2 (``fully_shard`` on each block, then on the whole model), for models whose states do not
    fit one device. The same hand-written update runs on each rank's shards (``DTensor``s);
    saving gathers the full tensors (``full_tensor()``, on every rank together)."""

    sharded = True

    def __init__(self, gpt2, cfg: OptimConfig, trainable: Callable[[str], bool] = lambda n: True,
                 memory_saving: bool = False, world: World = World(), accumulate: int = 1,
                 dtype: str = "float32", dropout: float = 0.0, seed: int = 0) -> None:
        from torch.distributed.fsdp import fully_shard

        Trainer.__init__(self, gpt2, cfg, trainable, memory_saving, dtype, dropout, seed)
        self.world, self.accumulate, self._micro = world, accumulate, 0
        with self._collective():
            for block in self.model.h:
                fully_shard(block)
            fully_shard(self.model)
        self.ddp = self.model  # forward_backward runs the sharded model itself
        self.params = {n: p for n, p in named_parameters(self.model).items() if n in self.params}
        for buffers in (self.m, self.v):
            buffers.update({n: torch.zeros_like(p) for n, p in self.params.items()})

    def forward_backward(self, tokens: np.ndarray) -> float:
        """As :meth:`DistributedTrainer.forward_backward`; the gradients are reduce-scattered (and
        averaged) on the rank's last micro-batch of the step."""
        self.model.set_requires_gradient_sync(self._micro + 1 >= self.accumulate)
        self._micro += 1
        X = self._tokens(tokens)
        with self._collective(), torch.enable_grad():
            loss = lm_loss(self.model, X, self.compute_dtype, self.drop)
            loss.backward()
        return float(loss.detach())

    def global_norm(self) -> torch.Tensor:
        """The norm over every rank's shards (``DTensor`` sums reduce across the ranks)."""
        with self._collective():
            return torch.sqrt(sum(torch.sum(g * g) for g in self.acc.values()))

    def eval_loss(self, tokens: np.ndarray) -> float:
        """Loss without gradients (every rank must call it: the blocks are gathered)."""
        with self._collective():
            return super().eval_loss(tokens)

    def _numpy(self, name: str, tensor) -> np.ndarray:
        from torch.distributed.tensor import DTensor

        if isinstance(tensor, DTensor):
            with self._collective():
                tensor = tensor.full_tensor()
        return super()._numpy(name, tensor)

    @torch.no_grad()
    def load_optimizer_state(self, state) -> None:
        from torch.distributed.tensor import distribute_tensor

        for n in self.names:
            for what, buffers in (("m/", self.m), ("v/", self.v)):
                d = buffers[n]
                full = torch.from_numpy(np.asarray(state[what + n])).reshape(d.shape)
                d.copy_(distribute_tensor(full, d.device_mesh, d.placements))
