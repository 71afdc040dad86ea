"""Model directories for the CLIs: ``--model_name``/``--models_dir`` or ``--model_dir`` resolution,
the check for missing files, the download offer for a released model, and :func:`prepare_model`
(hyperparameters, vocabulary and a lazily loaded model). The backend (TensorFlow or PyTorch) is
imported only by :meth:`Loaded.load`; standard library only at import.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, TextIO, Tuple

from ..constants import CHECKPOINT_FILES, MODEL_FILES, MODEL_NAMES, OLD_MODEL_NAMES, VOCAB_FILES
from .errors import UsageError, _one_line
from .flags import SamplingFlags, check_model_name, default_length
from .output import isatty

PLACE_HINT = "checkpoint, encoder.json, hparams.json, model.ckpt.* and vocab.bpe"


def resolve_model_dir(model_name: Any, models_dir: Any, model_dir: Any = None) -> Tuple[str, Optional[str]]:
    """``(directory, downloadable name or None)`` for ``--model_dir`` or ``--model_name``/``--models_dir``.

    A released name (124M, 355M, 774M, 1558M; the old 117M/345M map to 124M/355M unless a folder
    with the old name exists) can be downloaded when missing. Any other name must be an existing
    folder in ``models_dir`` (e.g. a fine-tuned model). ``--model_dir`` is used as given.
    """
    if model_dir is not None:
        if not isinstance(model_dir, str) or not model_dir:
            raise UsageError(f"--model_dir must be a path, got {model_dir!r}")
        return os.path.expanduser(os.path.expandvars(model_dir)), None
    if not isinstance(models_dir, str) or not models_dir:
        raise UsageError(f"--models_dir must be a path, got {models_dir!r}")
    models_dir = os.path.expanduser(os.path.expandvars(models_dir))
    name = check_model_name(model_name)
    if name in OLD_MODEL_NAMES and not os.path.isdir(os.path.join(models_dir, name)):
        name = OLD_MODEL_NAMES[name]
    path = os.path.join(models_dir, name)
    if name in MODEL_NAMES:
        return path, name
    if os.path.isdir(path):
        return path, None
    raise UsageError(f"unknown model name {model_name!r}: choose one of {', '.join(MODEL_NAMES)}, "
                     f"a folder in {models_dir}, or give --model_dir")


def missing_model_files(model_dir: str) -> List[str]:
    """The files of the original layout that ``model_dir`` lacks (``[]`` when it looks complete).

    The checkpoint counts as present when there is a ``checkpoint`` file or any ``*.index``
    (fine-tuned models use other prefixes); whether it reads is the checkpoint reader's call.
    A file with a ``.part`` (an interrupted download) is missing, so the download resumes, and so
    is the data of a ``model.ckpt.index`` without any ``model.ckpt.data-*`` (a download stopped
    between the two).
    A Hugging Face folder (``config.json``) is left to its own reader's checks.
    """
    if not os.path.isdir(model_dir):
        return list(MODEL_FILES)
    from ..hf import hf_folder

    if hf_folder(model_dir) is not None:
        return []
    have = set(os.listdir(model_dir))
    missing = [f for f in ("hparams.json",) + VOCAB_FILES if f not in have]
    if "checkpoint" not in have and not any(f.endswith(".index") for f in have):
        missing += list(CHECKPOINT_FILES)
    missing += [f for f in MODEL_FILES if f + ".part" in have and f not in have]
    if "model.ckpt.index" in have and not any(f.startswith("model.ckpt.data-") and not f.endswith(".part")
                                              for f in have):
        missing += [f for f in CHECKPOINT_FILES if f.startswith("model.ckpt.data-")]
    return sorted(set(missing))


def missing_model_message(model_dir: str, name: Optional[str], missing: Sequence[str],
                          reason: Optional[str] = None) -> str:
    """The one line that says what to place where."""
    what = "model directory not found" if not os.path.isdir(model_dir) else \
        f"model files missing ({', '.join(missing)})"
    if reason:
        what += f" and the download failed ({reason})"
    hint = f" (or run download_model {name})" if name else ""
    return f"{what}: place {PLACE_HINT} in {model_dir}{hint}"


def ensure_model_files(model_dir: str, name: Optional[str], download: bool = True,
                       err: Optional[TextIO] = None) -> None:
    """Make sure ``model_dir`` has the model files, downloading a released model if allowed.

    A failed or interrupted download keeps what :func:`gpt2_common.download.download_model`
    keeps: complete (checked) files and a ``.part`` file, which the next run resumes (folders are
    removed only if they were created and stayed empty). A one-line :class:`UsageError` says what
    to place where.
    """
    err = err or sys.stderr
    missing = missing_model_files(model_dir)
    if not missing:
        return
    if name is None or not download:
        raise UsageError(missing_model_message(model_dir, name, missing))
    from ..download import DownloadError, download_model

    models_dir = os.path.dirname(model_dir) or "."
    print(f"model {name} not found in {model_dir}; downloading it ...", file=err, flush=True)
    try:
        download_model(name, models_dir, files=tuple(missing), progress=isatty(err))
    except DownloadError as e:  # what is still missing: the files fetched before the failure are there
        still = missing_model_files(model_dir) or missing
        raise UsageError(missing_model_message(model_dir, name, still, _one_line(e))) from None
    still = missing_model_files(model_dir)
    if still:
        raise UsageError(missing_model_message(model_dir, name, still))


@dataclass
class Loaded:
    """A checked model directory: its hyperparameters, encoder and (lazy) model."""

    model_dir: str
    hparams: Any
    encoder: Any
    length: int
    flags: SamplingFlags

    def load(self):
        """Load the weights with the chosen backend (imports TensorFlow or PyTorch)."""
        from ..interface import load_model

        return load_model(self.flags.backend, self.model_dir, device=self.flags.device,
                          dtype=self.flags.dtype)


def prepare_model(flags: SamplingFlags, *, model_name: Any, models_dir: Any, model_dir: Any,
                  unconditional: bool) -> Loaded:
    """Resolve and check the model directory (downloading if allowed), read ``hparams.json`` and
    the vocabulary, and settle ``length``; the weights are loaded later by :meth:`Loaded.load`."""
    from ..encoder import load_encoder
    from ..hparams import load_hparams

    path, name = resolve_model_dir(model_name, models_dir, model_dir)
    ensure_model_files(path, name, flags.download)
    hp = load_hparams(path)
    length = default_length(hp.n_ctx, flags.length, unconditional)
    enc = load_encoder(path)
    return Loaded(path, hp, enc, length, flags)
