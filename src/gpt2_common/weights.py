"""GPT-2 weights of a model folder (the original checkpoint, or a Hugging Face folder through
:mod:`.hf`) as numpy arrays, keyed by the original checkpoint's variable names; random weights and
the writing of a model folder.

Both backends load through here, so the name/shape contract (:func:`.shapes.expected_shapes`)
is checked once:

    model/wte                      [n_vocab, n_embd]   token embedding, also the LM head (tied)
    model/wpe                      [n_ctx, n_embd]     position embedding
    model/h{i}/ln_1/{g,b}          [n_embd]
    model/h{i}/attn/c_attn/{w,b}   [1, n_embd, 3*n_embd], [3*n_embd]
    model/h{i}/attn/c_proj/{w,b}   [1, n_embd, n_embd],   [n_embd]
    model/h{i}/ln_2/{g,b}          [n_embd]
    model/h{i}/mlp/c_fc/{w,b}      [1, n_embd, 4*n_embd], [4*n_embd]
    model/h{i}/mlp/c_proj/{w,b}    [1, 4*n_embd, n_embd], [n_embd]
    model/ln_f/{g,b}               [n_embd]
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .checkpoint import CheckpointError, list_variables, read_checkpoint, write_checkpoint
from .hf import hf_folder, read_hf_model
from .hf import huggingface_state as _huggingface_state
from .hparams import load_hparams, save_hparams
from .shapes import HParams, Weights, expected_shapes

__all__ = ["Weights", "check_weights", "expected_shapes", "huggingface_state", "load_weights",
           "random_weights", "save_model"]


VARIABLES_PER_LAYER = 12


def check_variables(have: Mapping[str, Sequence[int]], hp: HParams, source: str) -> Dict[str, tuple]:
    """Check a checkpoint's variables (name -> shape, e.g. from ``list_variables``) against ``hp``
    and return :func:`expected_shapes`; :class:`CheckpointError` names the first problem.

    A variable ``hp`` needs is missing, a layer's variable it does not account for (a layer more
    than ``n_layer`` says: loading would silently drop it), or a shape other than ``hp`` implies.
    Other variables (an optimizer's, a step counter such as ``model/step``) are not the network's
    and are ignored. The work is bounded by the checkpoint's size, whatever ``n_layer`` says
    (``hparams.json`` may be damaged).
    """
    layers = {int(m.group(1)) for n in have if (m := re.match(r"model/h(\d+)/", n))}
    k = min(hp.n_layer, max(layers) + 1 if layers else 0)
    shapes = expected_shapes(hp, k)
    missing = [n for n in shapes if n not in have]
    count = len(missing) + VARIABLES_PER_LAYER * (hp.n_layer - k)
    if count:
        first = (missing or [f"model/h{k}/ln_1/g"])[:3]
        more = f", ... ({count} in all)" if count > len(first) else ""
        raise CheckpointError(f"{source}: missing variables {', '.join(first)}{more} (hparams.json: "
                              f"n_layer {hp.n_layer}; the checkpoint has {len(layers)} layers)")
    extra = sorted(n for n in have if re.match(r"model/h\d+/", n) and n not in shapes)
    if extra:
        more = f", ... ({len(extra)} in all)" if len(extra) > 3 else ""
        raise CheckpointError(f"{source}: variables that hparams.json (n_layer {hp.n_layer}) does not "
                              f"account for: {', '.join(extra[:3])}{more} (the checkpoint has "
                              f"{len(layers)} layers)")
    for name, shape in shapes.items():
        if tuple(have[name]) != shape:
            raise CheckpointError(f"{source}: variable '{name}' has shape {tuple(have[name])}, "
                                  f"hparams.json implies {shape}")
    return shapes


def check_weights(weights: Mapping[str, np.ndarray], hp: HParams, source: str = "weights") -> None:
    """Raise :class:`CheckpointError` unless ``weights`` has exactly the variables ``hp`` needs."""
    shapes = expected_shapes(hp)
    missing = [k for k in shapes if k not in weights]
    if missing:
        raise CheckpointError(f"{source}: missing variable '{missing[0]}' ({len(missing)} missing)")
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(
                f"{source}: variable '{name}' has shape {tuple(weights[name].shape)}, "
                f"hparams.json implies {shape}"
            )


def load_weights(model_dir: str, hp: Optional[HParams] = None) -> Weights:
    """Read and check the checkpoint in ``model_dir`` (no TensorFlow needed), or the weights of a
    Hugging Face folder (see :mod:`gpt2_common.hf`)."""
    if hf_folder(model_dir) is not None:
        hf_hp, weights = read_hf_model(model_dir)
        if hp is not None and hp != hf_hp:
            raise CheckpointError(f"{os.fspath(model_dir)}: config.json describes {hf_hp}, not {hp}")
        return weights
    hp = hp or load_hparams(model_dir)
    shapes = check_variables(list_variables(model_dir), hp, os.fspath(model_dir))
    weights = read_checkpoint(model_dir, names=list(shapes))
    check_weights(weights, hp, source=os.fspath(model_dir))
    return weights


def random_weights(hp: HParams, seed: int = 0, scale: float = 0.02) -> Weights:
    """Random float32 weights with GPT-2's shapes (for tests and benchmarks).

    ``scale`` is the std of the matrices; gains are near 1 and biases small but non-zero so that
    every parameter influences the output (a test with all-zero biases cannot catch a lost bias).
    """
    rng = np.random.default_rng(seed)
    out: Weights = {}
    for name, shape in expected_shapes(hp).items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "g":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "b":
            a = scale * rng.standard_normal(shape)
        else:
            a = scale * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def save_model(model_dir: str, hp: HParams, weights: Mapping[str, np.ndarray],
               vocab_dir: Optional[str] = None) -> str:
    """Write a model directory in the original layout: hparams.json, checkpoint, model.ckpt.*.

    ``vocab_dir``, if given, is where ``encoder.json`` and ``vocab.bpe`` are copied from.
    """
    check_weights(weights, hp)
    os.makedirs(model_dir, exist_ok=True)
    write_checkpoint(model_dir, weights)
    save_hparams(hp, model_dir)
    if vocab_dir is not None:
        for f in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(os.path.join(vocab_dir, f), os.path.join(model_dir, f))
    return model_dir


def huggingface_state(weights: Mapping[str, np.ndarray], hp: HParams) -> Tuple[Dict[str, Any], Weights]:
    """``(GPT2Config kwargs, state dict)`` for Hugging Face ``GPT2LMHeadModel``: see
    :func:`gpt2_common.hf.huggingface_state`, where the name mapping lives."""
    return _huggingface_state(weights, hp)
