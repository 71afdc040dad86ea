"""GPT-2 hyperparameters read from a model folder (the release's ``hparams.json``, or a Hugging
Face folder's ``config.json``) and written as ``hparams.json``. The :class:`HParams` type itself
lives in :mod:`.shapes` (imported here, so ``gpt2_common.hparams.HParams`` keeps working)."""
from __future__ import annotations

import json
import os
from typing import Union

from .hf import hf_folder, read_hf_config
from .shapes import FIELDS, MODEL_SHAPES, HParams, HParamsError, validate

__all__ = ["FIELDS", "MODEL_SHAPES", "HParams", "HParamsError", "PathLike", "load_hparams",
           "save_hparams", "validate"]

PathLike = Union[str, "os.PathLike[str]"]


def load_hparams(path: PathLike) -> HParams:
    """Load ``hparams.json`` from a file path or a model directory (of a Hugging Face folder: its
    ``config.json``, see :mod:`gpt2_common.hf`).

    Every key of :class:`HParams` must be present, no other key is allowed, and every value
    must be a positive integer with ``n_embd % n_head == 0``. Errors raise :class:`HParamsError`
    with one line naming the file and the field.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        folder = hf_folder(path)
        if folder is not None:
            return read_hf_config(folder)
        path = os.path.join(path, "hparams.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise HParamsError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HParamsError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise HParamsError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise HParamsError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise HParamsError(f"{path}: unknown field '{unknown[0]}'")
    missing = [k for k in FIELDS if k not in raw]
    if missing:
        raise HParamsError(f"{path}: missing field '{missing[0]}'")
    validate(raw, path)
    return HParams(**raw)


def save_hparams(hp: HParams, path: PathLike) -> None:
    """Write ``hparams.json`` (a file path or a model directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "hparams.json")
    from .safeio import open_nofollow

    with open_nofollow(path, "w") as f:  # a symbolic link there is refused, not written through
        json.dump(hp.to_dict(), f, indent=2)
        f.write("\n")
