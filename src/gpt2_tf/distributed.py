"""Data-parallel training on TensorFlow: ``tf.distribute.MultiWorkerMirroredStrategy`` across
processes or hosts, configured by ``TF_CONFIG`` (see ``gpt2_common.train.distributed`` for the
sharding rule).

The model and the trainer's variables stay as the single-process run creates them (outside any
strategy scope), one copy per worker. What the strategy does is the communication: once per
step :class:`DistributedTrainer` runs ``strategy.run`` of a replica function that all-reduces
(sums) the workers' accumulated gradients with the replica context's ``all_reduce`` (TF's
collective ops: ring on CPUs, NCCL on GPUs), with the strategy's timeout; then every worker runs
the same hand-written update on the sum, divided by ``N * k``, so all keep identical weights.
One replica per worker: a worker with several GPUs must be given one
(``CUDA_VISIBLE_DEVICES``), i.e. several GPUs of one host are used as several local workers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from gpt2_common.cli import UsageError
from gpt2_common.train.distributed import PeerLost, World, lost_message, timeout_seconds
from gpt2_common.train.optim import OptimConfig

from .train import Trainer

SUM = tf.distribute.ReduceOp.SUM


def init(world: World) -> tf.distribute.Strategy:
    """Start this worker's collective runtime from ``TF_CONFIG`` (before any other TF op runs)."""
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds())
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if strategy.num_replicas_in_sync != world.size:
        raise UsageError(f"TF_CONFIG names {world.size} workers but the strategy has "
                         f"{strategy.num_replicas_in_sync} replicas: give each worker one device "
                         "(CUDA_VISIBLE_DEVICES)")
    return strategy


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose accumulated gradients the strategy sums across the workers."""

    def __init__(self, gpt2, cfg: OptimConfig, trainable: Callable[[str], bool] = lambda n: True,
                 memory_saving: bool = False, world: World = World(), accumulate: int = 1,
                 strategy: tf.distribute.Strategy = None, dtype: str = "float32", dropout: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(gpt2, cfg, trainable, memory_saving, dtype, dropout, seed)
        self.world, self.strategy = world, strategy

        def all_reduce(values):  # runs on the replica's device, as the strategy's reduction needs
            return tf.distribute.get_replica_context().all_reduce(SUM, [tf.identity(v) for v in values])

        def local(out):
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], out)

        grads = [tf.TensorSpec(v.shape, tf.float32) for v in self.params.values()]

        @tf.function(input_signature=[grads])
        def reduce_gradients(acc):
            return local(strategy.run(all_reduce, args=(acc,)))

        @tf.function(input_signature=[tf.TensorSpec([], tf.float64)])
        def reduce_value(x):
            return local(strategy.run(all_reduce, args=([x],)))[0]

        self._reduce_gradients, self._reduce_value = reduce_gradients, reduce_value

    def _collective(self, fn, *args):
        try:
            with tf.device(self.device):
                return fn(*args)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.InternalError, tf.errors.AbortedError) as e:
            raise PeerLost(lost_message(self.world, e)) from e

    def apply(self, micro_batches: int, lr: float, t: int) -> float:
        """Sum the workers' accumulated gradients, then the update of :meth:`Trainer.apply` with
        the sum divided by ``micro_batches * world.size``."""
        summed = self._collective(self._reduce_gradients, [self.acc[n] for n in self.names])
        self.acc = dict(zip(self.names, summed))
        return super().apply(micro_batches * self.world.size, lr, t)

    def all_mean(self, value: float) -> float:
        """The mean of ``value`` over the workers (the step's loss for the metrics)."""
        return float(self._collective(self._reduce_value, np.float64(value))) / self.world.size

    def barrier(self) -> None:
        """Wait for every worker."""
        self.all_mean(0.0)
