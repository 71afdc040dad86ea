"""``gpt2_train`` behind the CLI: check every flag and the data, settle where the weights start
(the run's latest save, a model folder, or fresh random weights of given hyperparameters), build
the backend's trainer and run the shared loop.

Everything that can be the user's fault is checked before the run folder is touched: bad flags,
missing/empty/too-short/undecodable data, ``--restore_from`` pointing at nothing, a run folder
made with other hyperparameters. The run folder is created only after the first step succeeded.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import cli
from ..cli import UsageError
from ..constants import EOT_TOKEN, VOCAB_FILES
from ..hparams import HParams, MODEL_SHAPES, load_hparams
from .data import BatchSampler, DataError, load_tokens, split_documents, validation_path
from .optim import LR_SCHEDULES, OPTIMIZERS, OptimConfig, transformer_layer
from .run import RunFolder, initial_weights

OOM_HINT = ("out of memory: lower --batch_size (raise --accumulate_gradients to keep the batch), "
            "lower --context, or add --memory_saving_gradients")


@dataclasses.dataclass
class Start:
    """Where the weights come from: a model folder to load, and (resuming) the step and state."""

    model_dir: str
    hparams: HParams
    vocab_dir: str
    step: int = 0
    state: Optional[Dict[str, Any]] = None
    fresh_run: bool = False
    temporary: bool = False


def check_optim(optimizer, learning_rate, steps, warmup_steps, lr_schedule, weight_decay, grad_clip) -> OptimConfig:
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown lr_schedule {lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    return OptimConfig(
        optimizer=optimizer, learning_rate=cli.check_number("learning_rate", learning_rate, 0.0, low_open=True),
        steps=cli.check_int("steps", steps, 1), warmup_steps=cli.check_int("warmup_steps", warmup_steps, 0),
        lr_schedule=lr_schedule, grad_clip=cli.check_number("grad_clip", grad_clip, 0.0),
        weight_decay=None if weight_decay is None else cli.check_number("weight_decay", weight_decay, 0.0))


def scratch_hparams(n_layer, n_embd, n_head, n_ctx, n_vocab=None) -> Optional[HParams]:
    """Hyperparameters for training from scratch (the others as 124M's), or None when none of the
    five is given. ``n_vocab`` below 124M's keeps only the token ids 0..n_vocab-1 (a toy task's)."""
    given = {k: v for k, v in dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_ctx=n_ctx,
                                   n_vocab=n_vocab).items() if v is not None}
    if not given:
        return None
    for k, v in given.items():
        cli.check_int(k, v, 1)
    if given.get("n_embd", 0) and "n_head" not in given and given["n_embd"] % 12:
        raise UsageError(f"n_embd {given['n_embd']} needs an --n_head that divides it")
    hp = dataclasses.asdict(MODEL_SHAPES["124M"])
    if given.get("n_vocab", 0) > hp["n_vocab"]:
        raise UsageError(f"--n_vocab {given['n_vocab']} is larger than the vocabulary's {hp['n_vocab']} tokens")
    hp.update(given)
    if hp["n_embd"] % hp["n_head"]:
        raise UsageError(f"n_embd {hp['n_embd']} is not divisible by n_head {hp['n_head']}")
    return HParams(**hp)


def has_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "checkpoint")) or os.path.isfile(os.path.join(path, "model.ckpt.index"))


def settle_start(run: RunFolder, restore_from: Any, base_dir: str, base_name: Optional[str],
                 scratch: Optional[HParams], vocab_dir: Optional[str], seed: int, download: bool) -> Start:
    """Decide where the weights start (see ``--restore_from``); nothing is written here except a
    temporary folder for fresh random weights."""
    if not isinstance(restore_from, str) or not restore_from:
        raise UsageError(f"--restore_from must be latest, fresh or a path, got {restore_from!r}")
    latest = run.latest() if restore_from == "latest" else None
    if latest is not None:  # resume the run
        prefix, step = latest
        hp = run.hparams() or load_hparams(run.path)
        if scratch is not None:
            run.check_compatible(scratch)
        from ..checkpoint import list_variables
        from ..weights import check_variables

        shapes = check_variables(list_variables(prefix), hp, prefix)  # bounded, whatever hparams.json says
        return Start(run.path, hp, vocab_dir or run.path, step, run.load_train_state(step, shapes))
    if restore_from not in ("latest", "fresh"):
        path = os.path.expanduser(restore_from)
        if not os.path.isdir(path) or not has_checkpoint(path):
            raise UsageError(f"--restore_from {restore_from}: no model or run folder with a checkpoint there")
        hp = load_hparams(path)
        run.check_compatible(hp)
        return Start(path, hp, vocab_dir or path, fresh_run=True)
    if scratch is not None:  # fresh random weights
        vocab = vocab_dir or base_dir
        missing = [f for f in VOCAB_FILES if not os.path.isfile(os.path.join(vocab, f))]
        if missing:
            raise UsageError(f"training from scratch needs the vocabulary: {', '.join(missing)} not in {vocab} "
                             "(give --vocab_dir or --model_dir)")
        run.check_compatible(scratch)
        from ..weights import save_model

        remove_stale_init_folders()
        tmp = tempfile.mkdtemp(prefix=_init_prefix(os.getpid()))
        save_model(tmp, scratch, initial_weights(scratch, seed))
        return Start(tmp, scratch, vocab, fresh_run=True, temporary=True)
    cli.ensure_model_files(base_dir, base_name, download)
    hp = load_hparams(base_dir)
    run.check_compatible(hp)
    return Start(base_dir, hp, vocab_dir or base_dir, fresh_run=True)


def _init_prefix(pid: int) -> str:
    """``gpt2-train-init-<host>-<pid>-``: whose the temporary folder of fresh weights is."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
    return f"gpt2-train-init-{host}-{pid}-"


def remove_stale_init_folders(folder: Optional[str] = None) -> None:
    """Remove the fresh-weights folders (see :func:`settle_start`) that processes of this host
    killed before they could (``SIGKILL`` during start-up); a live process's folder stays."""
    folder = folder or tempfile.gettempdir()
    stem = _init_prefix(0)[:-2]  # gpt2-train-init-<host>-
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = re.match(r"(\d+)-", name[len(stem):]) if name.startswith(stem) else None
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue  # another user's, or not a pid
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def load_data(dataset, val_dataset, val_fraction: float, encoder, context: int, batch_size: int,
              seed: int, val_batch_count: int, n_vocab: Optional[int] = None
              ) -> Tuple[BatchSampler, Optional[BatchSampler]]:
    """The training and validation samplers (windows of ``context + 1`` tokens); with ``n_vocab``,
    every token id must be below it."""
    if dataset is None or dataset == "":
        raise UsageError("--dataset is required (a token .bin file, .npz, text file, folder or glob)")
    tokens = load_tokens(dataset, encoder)
    if len(tokens) == 0 or (len(tokens) <= 1 << 20 and not (np.asarray(tokens) != EOT_TOKEN).any()):
        raise DataError(f"{dataset}: the dataset is empty")
    val = None
    if val_dataset is not None:
        val = load_tokens(val_dataset, encoder)
        if len(val) == 0:
            raise DataError(f"{val_dataset}: the validation dataset is empty")
    elif val_fraction > 0:
        tokens, val = split_documents(tokens, val_fraction, seed)
        if len(val) == 0:
            raise DataError(f"{dataset}: --val_fraction {val_fraction} chose no document; raise it")
    elif isinstance(dataset, str) and dataset.endswith(".bin") and os.path.isfile(validation_path(dataset)):
        val = load_tokens(validation_path(dataset))  # written beside it by gpt2_encode --val_fraction
    for name, part in ((dataset, tokens), (val_dataset or dataset, val)):
        if n_vocab is not None and part is not None and len(part) and int(np.max(part)) >= n_vocab:
            raise DataError(f"{name}: token id {int(np.max(part))} is outside the model's vocabulary of {n_vocab}")
    train = BatchSampler(tokens, context + 1, batch_size, seed, name=str(dataset))
    val_sampler = None
    if val is not None and val_batch_count > 0:
        val_sampler = BatchSampler(val, context + 1, batch_size, seed, name=f"validation data of {dataset}")
    return train, val_sampler


def make_trainer(model, optim: OptimConfig, only_transformer: bool, memory_saving: bool, world=None,
                 accumulate: int = 1, dtype: str = "float32", dropout: float = 0.0, seed: int = 0,
                 **distributed):
    """The backend's trainer for a loaded model; with a ``world`` of several ranks, its
    data-parallel trainer (``gpt2_<backend>.distributed``; ``distributed`` goes to it).
    ``dtype`` bfloat16: mixed precision (see ``optim.TRAINING_DTYPES``); ``dropout``: its rate,
    the masks seeded by ``seed``."""
    trainable = transformer_layer if only_transformer else (lambda name: True)
    if world is not None and world.size > 1:
        if model.backend == "torch" and distributed.pop("fsdp", False):
            from gpt2_torch.distributed import FSDPTrainer as DistributedTrainer
        elif model.backend == "torch":
            from gpt2_torch.distributed import DistributedTrainer
        else:
            from gpt2_tf.distributed import DistributedTrainer
        return DistributedTrainer(model, optim, trainable, memory_saving, world=world, accumulate=accumulate,
                                  dtype=dtype, dropout=dropout, seed=seed, **distributed)
    if model.backend == "torch":
        from gpt2_torch.train import Trainer
    else:
        from gpt2_tf.train import Trainer
    return Trainer(model, optim, trainable, memory_saving, dtype, dropout, seed)


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    return name in ("OutOfMemoryError", "ResourceExhaustedError") or "out of memory" in str(e).lower()[:200]


def cleanup(start: Start) -> None:
    if start.temporary:
        shutil.rmtree(start.model_dir, ignore_errors=True)
