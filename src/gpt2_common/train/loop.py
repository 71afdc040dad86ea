"""The training loop, the same for both backends: it draws batches from the shared sampler, asks
the backend's trainer for gradients and updates, and does everything else itself (schedule,
validation, samples, saves, metrics, the progress bar, Ctrl-C).

A backend trainer (``gpt2_torch.train.Trainer``, ``gpt2_tf.train.Trainer``) provides
``forward_backward(tokens) -> loss`` (gradients summed into its buffers), ``apply(micro_batches,
lr, t) -> grad_norm``, ``eval_loss(tokens)``, ``weights()``, ``optimizer_state()`` /
``load_optimizer_state()`` and ``rng_state()`` / ``load_rng_state()``.

Micro-batch ``j`` of step ``s`` is the sampler's batch ``s * accumulate + j``: a pure function of
the step, so a resumed run (and a data-parallel rank taking its share) draws exactly the batches
an uninterrupted single process would. With several data-parallel ranks (``LoopConfig.world``,
see ``distributed.py``) rank ``r`` draws its block of the step's batches; only rank 0 validates,
samples, shows the bar and writes (metrics, saves), and the trainer also provides
``all_mean(value)`` (the step's loss over all ranks) and ``barrier()``.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .data import BatchSampler
from .distributed import World, batch_index
from .optim import OptimConfig, step_scalars
from ..safeio import LinkRefused, open_nofollow
from .run import Metrics, RunFolder


@dataclasses.dataclass
class LoopConfig:
    """How long to train and what to do along the way (0 turns a periodic action off)."""

    steps: int
    accumulate: int = 1
    val_every: int = 0
    val_batch_count: int = 8
    sample_every: int = 0
    sample_length: int = 64
    sample_num: int = 1
    save_every: int = 0
    keep: int = 3
    seed: int = 0
    progress: bool = True
    stop_after: int = 0  # train at most this many steps in this call, then save (0: to the end)
    world: World = World()  # data-parallel ranks (see distributed.py); only rank 0 writes


class TrainerState:
    """What both backends' trainers share: their state as numpy, keyed by checkpoint names and
    shaped as in the checkpoint. Subclasses set ``names`` (the trainable variables), ``m``, ``v``
    and implement ``_numpy(name, tensor)`` and ``_all_variables()``."""

    names: List[str]
    m: Dict[str, Any]
    v: Dict[str, Any]

    def _numpy(self, name: str, tensor: Any) -> np.ndarray:
        raise NotImplementedError

    def _all_variables(self) -> Dict[str, Any]:
        raise NotImplementedError

    def weights(self) -> Dict[str, np.ndarray]:
        """Every model variable (trained or not), as in the checkpoint."""
        return {n: self._numpy(n, t) for n, t in self._all_variables().items()}

    def optimizer_state(self) -> Dict[str, np.ndarray]:
        """``m/<name>`` and ``v/<name>`` for each trainable variable."""
        out = {}
        for n in self.names:
            out["m/" + n] = self._numpy(n, self.m[n])
            out["v/" + n] = self._numpy(n, self.v[n])
        return out


class Interrupted(Exception):
    """Ctrl-C during training; the run was saved at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted; saved at step {step}")
        self.step = step


class _CtrlC:
    """The first Ctrl-C asks the loop to save and stop after the current step; a second one
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_CtrlC":
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving after this step (press again to stop at once) ...", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def evaluate(trainer: Any, sampler: Optional[BatchSampler], count: int) -> Optional[float]:
    """Mean loss over ``count`` fixed batches of ``sampler`` (None without one)."""
    if sampler is None or count <= 0:
        return None
    return float(np.mean([trainer.eval_loss(b) for b in sampler.eval_batches(count)]))


def train_loop(trainer: Any, optim: OptimConfig, loop: LoopConfig, train: BatchSampler,
               val: Optional[BatchSampler], run: RunFolder, start_step: int = 0,
               state: Optional[Dict[str, Any]] = None,
               sample: Optional[Callable[[int], List[str]]] = None,
               prepare: Callable[[], None] = lambda: None,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train from ``start_step`` to ``loop.steps``; returns the last metrics record.

    ``prepare()`` creates the run folder, after the first step succeeded (so bad input or an
    out-of-memory first step leaves nothing behind). ``sample(step)`` returns sample texts (written to ``samples/step-<step>.txt``). Saves every
    ``save_every`` steps and at the end; on Ctrl-C saves the completed steps and raises
    :class:`Interrupted`."""
    from tqdm import tqdm

    metrics: Optional[Metrics] = None
    record: Dict[str, Any] = dict(state or {})
    tokens_seen = int(record.get("tokens", 0))
    world = loop.world
    tokens_per_step = train.batch_size * (train.context - 1) * loop.accumulate * world.size  # predicted tokens
    last_val = record.get("val_loss")

    sharded = getattr(trainer, "sharded", False)  # FSDP: every rank takes part in gathering or evaluating

    def save(step: int) -> None:
        if not (world.main or sharded):
            return
        weights, optimizer = trainer.weights(), trainer.optimizer_state()
        if not world.main:
            return
        prepare()
        rec = {"step": step, "tokens": tokens_seen, "batches_drawn": step * loop.accumulate * world.size,
               "seed": loop.seed, "val_loss": last_val}
        run.save(step, weights, optimizer, trainer.rng_state(), rec, loop.keep)

    bar = tqdm(total=loop.steps, initial=start_step, desc="training", unit="step",
               disable=not (loop.progress and world.main), dynamic_ncols=True, file=sys.stderr)
    step, saved = start_step, start_step if state is not None else -1
    out: Dict[str, Any] = {"step": step, "val_loss": last_val}
    stop = min(loop.steps, start_step + loop.stop_after) if loop.stop_after else loop.steps
    with _CtrlC() as ctrl_c:
        try:
            while step < stop:
                t0 = time.perf_counter()
                scalars = step_scalars(optim, step)
                losses = [trainer.forward_backward(train.batch(batch_index(step, j, loop.accumulate, world)))
                          for j in range(loop.accumulate)]
                norm = trainer.apply(loop.accumulate, **scalars)
                loss = float(np.mean(losses)) if world.size == 1 else trainer.all_mean(float(np.mean(losses)))
                step += 1
                tokens_seen += tokens_per_step
                dt = time.perf_counter() - t0
                out = {"step": step, "loss": loss, "lr": scalars["lr"], "grad_norm": norm,
                       "tokens": tokens_seen, "tokens_per_s": tokens_per_step / dt}
                if not np.isfinite(out["loss"]):
                    raise FloatingPointError(f"loss became {out['loss']} at step {step}: "
                                             "lower --learning_rate or set --grad_clip")
                if (val is not None and loop.val_every and (step % loop.val_every == 0 or step == loop.steps)
                        and (world.main or sharded)):
                    last_val = out["val_loss"] = evaluate(trainer, val, loop.val_batch_count)
                if not world.main:  # the other ranks only compute gradients
                    if loop.save_every and step % loop.save_every == 0 and step < stop:
                        save(step)  # (a no-op unless sharded)
                        saved = step
                    if ctrl_c.requested:
                        break
                    continue
                if metrics is None:
                    prepare()
                    metrics = Metrics(os.path.join(run.path, "metrics.jsonl"), start_step)
                metrics.append(out)
                bar.update(1)
                bar.set_postfix(loss=f"{out['loss']:.3f}", val=f"{last_val:.3f}" if last_val is not None else "-",
                                lr=f"{out['lr']:.2e}", tok_s=f"{out['tokens_per_s']:.0f}", refresh=False)
                if sample is not None and loop.sample_every and step % loop.sample_every == 0:
                    write_samples(run, step, sample(step), bar.write if loop.progress else log)
                if loop.save_every and step % loop.save_every == 0 and step < stop:
                    save(step)
                    saved = step
                if ctrl_c.requested:
                    break
        finally:  # (a second Ctrl-C raises KeyboardInterrupt: the step in flight is lost, the last save stays)
            bar.close()
        if saved != step:
            save(step)
        if world.size > 1:
            trainer.barrier()  # every rank ends after rank 0's last save
        if ctrl_c.requested and step < loop.steps:
            raise Interrupted(step)
    out["val_loss"] = last_val
    out["records"] = metrics.records if metrics is not None else []
    return out


def write_samples(run: RunFolder, step: int, texts: List[str], log: Callable[[str], None]) -> None:
    """Write ``samples/step-<step>.txt`` and show the samples."""
    folder = os.path.join(run.path, "samples")
    if os.path.islink(folder):
        raise LinkRefused(folder)
    os.makedirs(folder, exist_ok=True)
    body = "".join(f"{'=' * 20} SAMPLE {i + 1} {'=' * 20}\n{t}\n" for i, t in enumerate(texts))
    with open_nofollow(os.path.join(folder, f"step-{step}.txt"), "w") as f:
        f.write(body)
    log(f"[step {step}]\n{body.rstrip()}")
