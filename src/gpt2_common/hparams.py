"""GPT-2 hyperparameters, loaded from the release's ``hparams.json``."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


class HParamsError(ValueError):
    """A ``hparams.json`` that is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class HParams:
    """Model shape. Defaults are the original release's (the 124M model)."""

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12

    def __post_init__(self) -> None:
        validate(dataclasses.asdict(self), "HParams")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(values: dict, source: str) -> None:
    """Raise :class:`HParamsError` unless every field is a positive int and heads divide n_embd."""
    for name in FIELDS:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise HParamsError(f"{source}: field '{name}' must be an integer, got {value!r}")
        if value <= 0:
            raise HParamsError(f"{source}: field '{name}' must be positive, got {value}")
    if values["n_embd"] % values["n_head"] != 0:
        raise HParamsError(f"{source}: field 'n_embd' ({values['n_embd']}) must be divisible by "
                           f"'n_head' ({values['n_head']})")


FIELDS = tuple(f.name for f in dataclasses.fields(HParams))

# Real shapes of the released models (used by the benchmark and tests).
MODEL_SHAPES = {
    "124M": HParams(n_layer=12, n_embd=768, n_head=12),
    "355M": HParams(n_layer=24, n_embd=1024, n_head=16),
    "774M": HParams(n_layer=36, n_embd=1280, n_head=20),
    "1558M": HParams(n_layer=48, n_embd=1600, n_head=25),
}



def load_hparams(path: PathLike) -> HParams:
    """Load ``hparams.json`` from a file path or a model directory (of a Hugging Face folder: its
    ``config.json``, see :mod:`gpt2_common.hf`).

    Every key of :class:`HParams` must be present, no other key is allowed, and every value
    must be a positive integer with ``n_embd % n_head == 0``. Errors raise :class:`HParamsError`
    with one line naming the file and the field.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        from .hf import hf_folder, read_hf_config  # a Hugging Face folder: its config.json

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
