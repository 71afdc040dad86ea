"""The model's shape: GPT-2's hyperparameters (:class:`HParams`) and the variables, with their
shapes, that they imply (:func:`expected_shapes`). Pure data and checks, no files: the readers of
``hparams.json`` (:mod:`.hparams`), of checkpoints (:mod:`.weights`) and of Hugging Face folders
(:mod:`.hf`) all build on this module, which imports none of them."""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np

Weights = Dict[str, np.ndarray]
"""GPT-2 weights as numpy arrays, keyed by the original checkpoint's variable names."""


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


def expected_shapes(hp: HParams, n_layer: Optional[int] = None) -> Dict[str, tuple]:
    """Every variable of a GPT-2 checkpoint with its shape, in the original naming (of the first
    ``n_layer`` layers only, when given: a check can then stop at a checkpoint's own size)."""
    E = hp.n_embd
    shapes = {"model/wte": (hp.n_vocab, E), "model/wpe": (hp.n_ctx, E)}
    for i in range(hp.n_layer if n_layer is None else n_layer):
        p = f"model/h{i}"
        shapes.update({
            f"{p}/ln_1/g": (E,), f"{p}/ln_1/b": (E,),
            f"{p}/attn/c_attn/w": (1, E, 3 * E), f"{p}/attn/c_attn/b": (3 * E,),
            f"{p}/attn/c_proj/w": (1, E, E), f"{p}/attn/c_proj/b": (E,),
            f"{p}/ln_2/g": (E,), f"{p}/ln_2/b": (E,),
            f"{p}/mlp/c_fc/w": (1, E, 4 * E), f"{p}/mlp/c_fc/b": (4 * E,),
            f"{p}/mlp/c_proj/w": (1, 4 * E, E), f"{p}/mlp/c_proj/b": (E,),
        })
    shapes.update({"model/ln_f/g": (E,), "model/ln_f/b": (E,)})
    return shapes
