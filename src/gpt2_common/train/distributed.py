"""Data-parallel training, the framework-free part: which launcher started us, who this process
is, and which micro-batches it takes.

* PyTorch: ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``) -> ``gpt2_torch.distributed`` (a process group and DDP).
* TensorFlow: ``TF_CONFIG`` naming a cluster of workers -> ``gpt2_tf.distributed``
  (``tf.distribute.MultiWorkerMirroredStrategy``).

The sharding rule: a step of ``N`` ranks x accumulation ``k`` is the step of one process with
accumulation ``N * k``; rank ``r`` takes the *contiguous* block ``r*k .. r*k + k - 1`` of the
step's ``N * k`` micro-batches, so the sampler's batch of micro-batch ``j`` of rank ``r`` at step
``s`` is ``s*N*k + r*k + j``. Every rank sums its ``k`` gradients, the ranks' sums are added by the
framework's all-reduce, and the update divides by ``N * k``: the same samples, in the same order,
as one process. For ``N = 2, k = 1`` (and any power-of-two ``N`` with ``k = 1``) the sum is the
same float operations as the single process's, so the weights agree to the last bit; otherwise
they agree up to the rounding of a differently bracketed sum.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

# the words that say why, in the frameworks' error texts, best first
LOST_WORDS = ("unhealthy", "connection", "timed out", "deadline", "refused", "closed", "aborted")
DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others in a collective before giving up


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (``size`` 1: alone)."""

    rank: int = 0
    size: int = 1
    launcher: str = ""  # "torchrun", "tf_config" or ""

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics, samples and the progress bar."""
        return self.rank == 0


class PeerLost(RuntimeError):
    """Another rank died or stopped answering; this rank cannot go on."""


def torchrun_world(env=os.environ) -> Optional[World]:
    """The world that ``torchrun`` describes in the environment, or None outside it."""
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun")


def tf_config_world(env=os.environ) -> Optional[World]:
    """The worker that ``TF_CONFIG`` describes, or None without one (or with a single worker)."""
    raw = env.get("TF_CONFIG")
    if not raw:
        return None
    config = json.loads(raw)
    cluster = config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task = config.get("task", {})
    index = int(task.get("index", 0)) + (len(cluster.get("chief", [])) if task.get("type") == "worker" else 0)
    return World(index, workers, "tf_config") if workers > 1 else None


def detect(backend: str, env=os.environ) -> World:
    """The world of ``backend`` from its launcher's environment (alone if none)."""
    world = torchrun_world(env) if backend == "torch" else tf_config_world(env)
    return world or World()


def batch_index(step: int, micro: int, accumulate: int, world: World) -> int:
    """The sampler batch of this rank's micro-batch ``micro`` (0..accumulate-1) at ``step``."""
    return (step * world.size + world.rank) * accumulate + micro


def timeout_seconds(env=os.environ) -> float:
    """How long a rank waits in a collective (``GPT2_DIST_TIMEOUT`` seconds, default 600)."""
    return float(env.get("GPT2_DIST_TIMEOUT", DEFAULT_TIMEOUT))


def lost_message(world: World, cause: BaseException) -> str:
    """The one line a rank prints when another rank is gone."""
    lines = [x.strip() for x in str(cause).splitlines() if x.strip()]
    telling = [x for w in LOST_WORDS for x in lines if w in x.lower()]
    why = f"{type(cause).__name__}: {(telling or lines or [''])[0]}"[:200]
    return (f"gpt2_train rank {world.rank}/{world.size}: another rank died or stopped answering ({why}); "
            "stopping. The run folder keeps its last save: run the same command again to resume.")
