"""Ready-made interventions: hook dicts for ``model.run_with_hooks`` / ``run_with_cache(hooks=...)``
/ ``generate(hooks=...)`` (framework-free; the same dict works on either backend).

    from gpt2_common.interp import interventions as iv

    clean_logits, clean = model.run_with_cache(clean_tokens)
    model.run_with_hooks(tokens, iv.ablate_heads(model, [(1, 4), (1, 7)]))           # zero-ablate
    model.run_with_hooks(tokens, iv.ablate_neurons(model, [(0, 123)], mode="mean"))
    model.run_with_hooks(corrupt, iv.patch(model, clean, "blocks.3.hook_resid_pre", positions=[5]))
    model.generate(prompt, 20, hooks=iv.steer(model, 6, vector, coeff=4.0))

Combine several with :func:`gpt2_common.hooks.merge_hooks`. An empty selection (no heads, no
neurons) gives no hooks, so the forward is exactly the plain one.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..hooks import HookError, NumpyHook, check_name

MODES = ("zero", "mean")
Positions = Optional[Union[int, Sequence[int]]]


def _pairs(model: Any, pairs: Iterable[Tuple[int, int]], what: str, size: int) -> Dict[int, list]:
    """``[(layer, index)]`` checked against the model, grouped by layer."""
    n_layer = model.hparams.n_layer
    by_layer: Dict[int, list] = {}
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in pair)):
            raise HookError(f"a {what} is a (layer, index) pair of ints, got {pair!r}")
        layer, index = int(pair[0]), int(pair[1])
        if not 0 <= layer < n_layer:
            raise HookError(f"layer {layer} is out of range: the model has {n_layer} layers (0..{n_layer - 1})")
        if not 0 <= index < size:
            raise HookError(f"{what} {index} is out of range: layer {layer} has {size} {what}s (0..{size - 1})")
        by_layer.setdefault(layer, []).append(index)
    return by_layer


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise HookError(f"unknown ablation mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def _ablate(name: str, index: Tuple, mode: str, means: Optional[Mapping[str, np.ndarray]],
            mean_axes: Tuple[int, ...]) -> NumpyHook:
    """A hook that sets ``array[index]`` to 0 or to its mean over batch and positions (``mean_axes``)
    taken from ``means[name]`` (a cache of a reference run) or from this run's own activation."""
    def fn(a: np.ndarray, _name: str) -> np.ndarray:
        a = a.copy()
        if mode == "zero":
            a[index] = 0.0
        else:
            ref = a if means is None else np.asarray(means[name], np.float32)
            if ref.shape[2:] != a.shape[2:]:
                raise HookError(f"mean cache for {name} has shape {list(ref.shape)}, "
                                f"incompatible with {list(a.shape)}: a cache of another model?")
            a[index] = ref.mean(axis=mean_axes, keepdims=True)[index]
        return a
    return fn


def ablate_heads(model: Any, heads: Iterable[Tuple[int, int]], mode: str = "zero",
                 means: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, NumpyHook]:
    """Hooks that zero- or mean-ablate attention heads ``[(layer, head), ...]``: the head's output
    ``blocks.{layer}.attn.hook_z[:, :, head]`` (before the output projection) is set to 0, or to its
    mean over batch and positions (of ``means``, a ``run_with_cache`` cache of a reference run, or
    else of this run)."""
    _mode(mode)
    by_layer = _pairs(model, heads, "head", model.hparams.n_head)
    if means is not None:
        for layer in by_layer:
            if f"blocks.{layer}.attn.hook_z" not in means:
                raise HookError(f"the mean cache has no blocks.{layer}.attn.hook_z")
    return {f"blocks.{l}.attn.hook_z": _ablate(f"blocks.{l}.attn.hook_z", (slice(None), slice(None), sorted(set(hs))),
                                                mode, means, (0, 1))
            for l, hs in by_layer.items()}


def ablate_neurons(model: Any, neurons: Iterable[Tuple[int, int]], mode: str = "zero",
                   means: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, NumpyHook]:
    """Hooks that zero- or mean-ablate MLP neurons ``[(layer, neuron), ...]``: the neuron's
    activation after GELU (``blocks.{layer}.mlp.hook_post[..., neuron]``) is set to 0 or to its
    mean over batch and positions (of ``means`` or of this run)."""
    _mode(mode)
    by_layer = _pairs(model, neurons, "neuron", 4 * model.hparams.n_embd)
    return {f"blocks.{l}.mlp.hook_post": _ablate(f"blocks.{l}.mlp.hook_post", (..., sorted(set(ns))), mode, means, (0, 1))
            for l, ns in by_layer.items()}


def _positions(positions: Positions, T: int, name: str) -> Any:
    if positions is None:
        return slice(None)
    pos = np.atleast_1d(np.asarray(positions))
    if not np.issubdtype(pos.dtype, np.integer) or pos.size == 0 or pos.min() < -T or pos.max() >= T:
        raise HookError(f"positions {positions!r} out of range for {name} with {T} positions")
    return pos % T


def patch(model: Any, source: Mapping[str, np.ndarray], name: str, positions: Positions = None,
          heads: Optional[Union[int, Sequence[int]]] = None) -> Dict[str, NumpyHook]:
    """A hook that replaces activation ``name`` by the same activation of another run (``source``: a
    ``run_with_cache`` cache of it, same batch and length): whole, or only at ``positions`` and/or
    ``heads`` (for names with a head axis: ``hook_q/k/v/z`` ``[B, T, H, D]``, ``hook_attn_scores`` and
    ``hook_pattern`` ``[B, H, T, S]``, where positions are the query positions)."""
    check_name(name, model.hparams.n_layer)
    if name not in source:
        raise HookError(f"the patch cache has no {name} (cache it with run_with_cache(..., names=[{name!r}]))")
    src = np.asarray(source[name], np.float32)
    head_axis = 2 if name.split(".")[-1] in ("hook_q", "hook_k", "hook_v", "hook_z") else \
        1 if name.split(".")[-1] in ("hook_attn_scores", "hook_pattern") else None
    if heads is not None:
        if head_axis is None:
            raise HookError(f"{name} has no head axis: patch heads in hook_z, hook_q/k/v or hook_pattern")
        hs = np.atleast_1d(np.asarray(heads))
        H = model.hparams.n_head
        if not np.issubdtype(hs.dtype, np.integer) or hs.size == 0 or hs.min() < 0 or hs.max() >= H:
            raise HookError(f"heads {heads!r} out of range: the model has {H} heads (0..{H - 1})")

    def fn(a: np.ndarray, _name: str) -> np.ndarray:
        if src.shape != a.shape:
            raise HookError(f"cannot patch {name}: the cache's shape {list(src.shape)} differs from this run's "
                            f"{list(a.shape)} (another model, batch or length)")
        index: list = [slice(None)] * a.ndim
        index[2 if head_axis == 1 else 1] = _positions(positions, a.shape[2 if head_axis == 1 else 1], name)
        out = a.copy()
        if heads is None:
            out[tuple(index)] = src[tuple(index)]
        else:
            for h in np.atleast_1d(heads):  # one head at a time: positions and heads index separately
                index[head_axis] = int(h)
                out[tuple(index)] = src[tuple(index)]
        return out
    return {name: fn}


def steer(model: Any, layer: int, vector: np.ndarray, coeff: float = 1.0, positions: Positions = None,
          where: str = "hook_resid_pre") -> Dict[str, NumpyHook]:
    """A hook that adds ``coeff * vector`` (``[n_embd]``) to the residual stream of block ``layer``
    (``where``: ``hook_resid_pre``, ``hook_resid_mid`` or ``hook_resid_post``) at ``positions`` (all
    by default; in ``generate`` a decoding step has one position, so leave positions unset there)."""
    n_layer, E = model.hparams.n_layer, model.hparams.n_embd
    if not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layer:
        raise HookError(f"layer {layer!r} is out of range: the model has {n_layer} layers (0..{n_layer - 1})")
    if where not in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
        raise HookError(f"steer where={where!r}: choose hook_resid_pre, hook_resid_mid or hook_resid_post")
    v = np.asarray(vector, np.float32)
    if v.shape != (E,):
        raise HookError(f"a steering vector has shape [{E}] (n_embd), got {list(v.shape)}")
    name = f"blocks.{layer}.{where}"

    def fn(a: np.ndarray, _name: str) -> np.ndarray:
        out = a.copy()
        out[:, _positions(positions, a.shape[1], name)] += np.float32(coeff) * v
        return out
    return {name: fn}
