"""Named activations of GPT-2 and the hook protocol of both model files (framework-free).

Every internal activation has a name, as TransformerLens users know them (B batch, T positions of
this forward, S = past + T positions attended to, H n_head, D head_dim, E n_embd):

==================================  ===========  ===================================================
name                                shape        what
==================================  ===========  ===================================================
``hook_embed``                      [B, T, E]    token embeddings ``wte[tokens]``
``hook_pos_embed``                  [B, T, E]    position embeddings ``wpe[positions]`` (left
                                                 padding does not shift positions)
``blocks.{l}.hook_resid_pre``       [B, T, E]    the residual stream entering block l (layer 0:
                                                 embed + pos_embed)
``blocks.{l}.ln1.hook_scale``       [B, T, 1]    ``sqrt(var + 1e-5)`` of ln_1 (biased variance)
``blocks.{l}.ln1.hook_normalized``  [B, T, E]    ln_1's output, after its gain ``g`` and bias ``b``
``blocks.{l}.attn.hook_q|k|v``      [B, T, H, D] queries, keys, values (c_attn's output, bias
                                                 included, split into heads)
``blocks.{l}.attn.hook_attn_scores`` [B, H, T, S] ``q k^T / sqrt(D)`` plus the mask: -1e10 added
                                                 where a key is in the future or padding
``blocks.{l}.attn.hook_pattern``    [B, H, T, S] softmax of the scores (rows sum to 1)
``blocks.{l}.attn.hook_z``          [B, T, H, D] ``pattern @ v`` per head, before c_proj
``blocks.{l}.hook_attn_out``        [B, T, E]    the attention's output (after c_proj, its bias too)
``blocks.{l}.hook_resid_mid``       [B, T, E]    resid_pre + attn_out
``blocks.{l}.ln2.hook_scale``       [B, T, 1]    as ln1, for ln_2
``blocks.{l}.ln2.hook_normalized``  [B, T, E]    as ln1, for ln_2
``blocks.{l}.mlp.hook_pre``         [B, T, 4E]   c_fc's output (bias included), before GELU
``blocks.{l}.mlp.hook_post``        [B, T, 4E]   after GELU (tanh approximation): the neurons
``blocks.{l}.hook_mlp_out``         [B, T, E]    the MLP's output (after its c_proj and bias)
``blocks.{l}.hook_resid_post``      [B, T, E]    resid_mid + mlp_out (= resid_pre of block l+1)
``ln_final.hook_scale``             [B, T, 1]    as ln1, for ln_f
``ln_final.hook_normalized``        [B, T, E]    ln_f's output (after gain and bias): the
                                                 unembedding's input (logits = it @ wte^T)
==================================  ===========  ===================================================

LayerNorm statistics, attention scores and patterns are fp32 whatever the model dtype; the other
activations have the model's dtype (arrays handed to numpy hooks are float32).

The model files' protocol (``gpt2_tf/model.py``, ``gpt2_torch/model.py``): ``forward(...,
hooks=None)`` where ``hooks`` maps a name to a function ``tensor -> tensor``. Each named point calls
:func:`hook`; with ``hooks=None`` (every plain forward) that is one ``is None`` test, and no extra
computation is done. The backends build ``hooks`` from numpy functions with :func:`numpy_hooks`
(``model.run_with_hooks``, ``run_with_cache``) or from their own autodiff marks
(``model.activation_gradients``).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

TOP_NAMES = ("hook_embed", "hook_pos_embed")
BLOCK_NAMES = (  # per block, in the order the forward pass computes them
    "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern",
    "attn.hook_z", "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")
FINAL_NAMES = ("ln_final.hook_scale", "ln_final.hook_normalized")

ModelHooks = Mapping[str, Callable[[Any], Any]]  # what a model file takes: name -> (tensor -> tensor)
NumpyHook = Callable[[np.ndarray, str], Optional[np.ndarray]]  # fn(array, name) -> array or None
Names = Union[None, str, Iterable[str], Callable[[str], bool]]


class HookError(ValueError):
    """A bad hook: unknown name, a hook returning the wrong shape or dtype, bad intervention arguments."""


def hook_names(n_layer: int) -> List[str]:
    """Every activation name of a model with ``n_layer`` blocks, in the order the forward computes them."""
    return [*TOP_NAMES, *(f"blocks.{l}.{n}" for l in range(n_layer) for n in BLOCK_NAMES), *FINAL_NAMES]


def check_name(name: Any, n_layer: int) -> str:
    """``name`` if it is an activation name of a model with ``n_layer`` blocks; :class:`HookError`
    naming the closest valid names otherwise."""
    valid = hook_names(n_layer)
    if isinstance(name, str) and name in valid:
        return name
    if not isinstance(name, str):
        raise HookError(f"an activation name must be a string, got {name!r}")
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if name.startswith("blocks.") and name.split(".")[1].isdigit() and int(name.split(".")[1]) >= n_layer:
        hint = f": the model has {n_layer} layers (0..{n_layer - 1})"
    else:
        hint = f"; did you mean {' or '.join(close)}?" if close else " (see gpt2_common.hooks.hook_names)"
    raise HookError(f"unknown activation name {name!r}{hint}")


def select_names(names: Names, n_layer: int) -> List[str]:
    """The names ``names`` selects, in forward order: all (None), one name, a list of names (each
    checked by :func:`check_name`), or those for which a filter function returns true."""
    valid = hook_names(n_layer)
    if names is None:
        return valid
    if callable(names):
        return [n for n in valid if names(n)]
    wanted = {check_name(n, n_layer) for n in ([names] if isinstance(names, str) else names)}
    return [n for n in valid if n in wanted]


# ---- what the model files call ----
def hook(hooks: Optional[ModelHooks], scope: str, name: str, x: Any) -> Any:
    """The named activation ``scope.name`` (``name`` when scope is empty): ``x`` itself, or what
    ``hooks`` makes of it. Costs one ``is None`` test when there are no hooks."""
    if hooks is None:
        return x
    fn = hooks.get(f"{scope}.{name}" if scope else name)
    return x if fn is None else fn(x)


def wants(hooks: Optional[ModelHooks], scope: str, *names: str) -> bool:
    """Whether any of ``scope.name`` is hooked (a model file then computes it explicitly, e.g. the
    attention pattern instead of a fused attention kernel)."""
    return hooks is not None and any(f"{scope}.{n}" in hooks for n in names)


# ---- numpy hooks -> model hooks (each backend supplies the two conversions) ----
def check_hook_output(out: Any, arr: np.ndarray, name: str) -> Optional[np.ndarray]:
    """What a numpy hook returned for ``arr``: None (keep the activation) or a floating array of
    ``arr``'s shape; anything else is a :class:`HookError`."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray) and not np.isscalar(out) and not isinstance(out, (list, tuple)):
        raise HookError(f"the hook on {name} returned {type(out).__name__}: return an array or None")
    out = np.asarray(out)
    if out.shape != arr.shape:
        raise HookError(f"the hook on {name} returned shape {list(out.shape)}, expected {list(arr.shape)}")
    if not np.issubdtype(out.dtype, np.floating):
        raise HookError(f"the hook on {name} returned dtype {out.dtype}, expected a floating dtype (float32)")
    return out


def as_hook_list(fns: Union[NumpyHook, Sequence[NumpyHook]]) -> List[NumpyHook]:
    """One hook function, or a list of them (run in order), as a list."""
    fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
    for fn in fns:
        if not callable(fn):
            raise HookError(f"a hook must be a function fn(array, name) -> array or None, got {fn!r}")
    return fns


def numpy_hooks(fns: Mapping[str, Union[NumpyHook, Sequence[NumpyHook]]], n_layer: int,
                to_numpy: Callable[[Any], np.ndarray], from_numpy: Callable[[np.ndarray, Any], Any]
                ) -> Dict[str, Callable[[Any], Any]]:
    """Model hooks from numpy ones: ``fns`` maps names to ``fn(array, name) -> array or None`` (or a
    list of such functions, applied in order). ``to_numpy(tensor)`` gives the activation as a
    float32 array; ``from_numpy(array, like)`` a tensor of ``like``'s dtype and device."""
    if not isinstance(fns, Mapping):
        raise HookError(f"hooks must be a dict {{name: fn}}, got {type(fns).__name__}")
    checked = {check_name(name, n_layer): as_hook_list(f) for name, f in fns.items()}

    def wrap(name: str, chain: List[NumpyHook]) -> Callable[[Any], Any]:
        def run(x: Any) -> Any:
            arr, changed = to_numpy(x), False
            for fn in chain:
                out = check_hook_output(fn(arr, name), arr, name)
                if out is not None:
                    arr, changed = out.astype(np.float32, copy=False), True
            return from_numpy(arr, x) if changed else x
        return run

    return {name: wrap(name, chain) for name, chain in checked.items()}


def merge_hooks(*hook_dicts: Mapping[str, Union[NumpyHook, Sequence[NumpyHook]]]) -> Dict[str, List[NumpyHook]]:
    """Several ``{name: fn}`` dicts as one (functions on the same name run in the given order)."""
    merged: Dict[str, List[NumpyHook]] = {}
    for d in hook_dicts:
        for name, fns in d.items():
            merged.setdefault(name, []).extend(as_hook_list(fns))
    return merged
