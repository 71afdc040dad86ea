"""Hugging Face model folders read as GPT-2 weights, and the one name/config mapping between layouts.

A Hugging Face GPT-2 folder (what ``save_pretrained`` writes, or a hub-cache snapshot) holds
``config.json`` (``GPT2Config`` fields), the weights in ``model.safetensors`` or
``pytorch_model.bin`` (or shards of either listed in ``*.index.json``) and the tokenizer's
``vocab.json``/``merges.txt``, which are the original's ``encoder.json``/``vocab.bpe`` renamed, or
(transformers 5) only ``tokenizer.json``, which holds both (read by :mod:`.encoder`).
Tensor names map one to one (Hugging Face's optionally prefixed ``transformer.``)::

    model/wte, model/wpe              wte.weight, wpe.weight
    model/h{i}/ln_1/{g,b}             h.{i}.ln_1.{weight,bias}        (ln_2, ln_f alike)
    model/h{i}/attn/c_attn/{w,b}      h.{i}.attn.c_attn.{weight,bias} (c_proj, mlp.c_fc, mlp.c_proj alike)

HF's ``Conv1D`` stores ``[in, out]`` like the checkpoint, so a matrix only loses or gains the
leading 1 of ``[1, in, out]``: a reshape, bit-exact both ways. ``lm_head.weight`` is tied to
``wte`` and accepted only when equal to it; the ``attn.bias``/``attn.masked_bias`` causal-mask
buffers of older saves are skipped. safetensors files are read with the ``safetensors`` library
(no pickle), one tensor at a time; ``pytorch_model.bin`` with ``torch.load(weights_only=True)``.

(A little over 350 lines: the mapping, the config rules and the checked reader are one contract.)
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .checkpoint import CheckpointError
from .constants import (EOT_TOKEN, HF_CONFIG_FILE, HF_TOKENIZER_FILE, HF_VOCAB_FILES, HF_WEIGHT_FILES,
                        VOCAB_FILES)
from .shapes import HParams, HParamsError, Weights, expected_shapes, validate

PREFIX = "transformer."
"""The prefix ``GPT2LMHeadModel`` gives the body's tensors (``GPT2Model`` saves them without)."""
_LEAF = {"g": "weight", "b": "bias", "w": "weight"}
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
# HParams field -> the GPT2Config field, then the generic aliases transformers also accepts
_CONFIG_FIELDS = {"n_vocab": ("vocab_size",), "n_ctx": ("n_positions", "max_position_embeddings"),
                  "n_embd": ("n_embd", "hidden_size"), "n_head": ("n_head", "num_attention_heads"),
                  "n_layer": ("n_layer", "num_hidden_layers")}
_FLOATS = {"F16", "BF16", "F32", "F64", "torch.float16", "torch.bfloat16", "torch.float32",
           "torch.float64"}


# ------------------------------------------------------------------------------- the mapping
def hf_name(name: str) -> str:
    """The Hugging Face tensor name (no ``transformer.`` prefix) of an original variable name."""
    _, *path, leaf = name.split("/")
    if not path:  # model/wte, model/wpe
        return f"{leaf}.weight"
    return ".".join([f"h.{p[1:]}" if re.fullmatch(r"h\d+", p) else p for p in path] + [_LEAF[leaf]])


def hf_shape(name: str, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The Hugging Face shape of original variable ``name``: ``[1, in, out]`` becomes ``[in, out]``."""
    return tuple(shape[1:]) if name.endswith("/w") else tuple(shape)


def to_hf(name: str, a: np.ndarray) -> np.ndarray:
    """Original variable ``name``'s array in Hugging Face's shape (a view, no copy)."""
    return a.reshape(hf_shape(name, a.shape))


def config_from_hparams(hp: HParams) -> Dict[str, Any]:
    """``config.json`` for ``hp``: transformers' ``GPT2Config`` fields with GPT-2's values (dropout
    as GPT2Config's defaults; it only matters when the model is trained there)."""
    eot = min(EOT_TOKEN, hp.n_vocab - 1)
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": hp.n_vocab,
            "n_positions": hp.n_ctx, "n_embd": hp.n_embd, "n_layer": hp.n_layer, "n_head": hp.n_head,
            "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02,
            "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
            "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "use_cache": True, "bos_token_id": eot,
            "eos_token_id": eot, "tie_word_embeddings": True}


def huggingface_state(weights: Mapping, hp: HParams) -> Tuple[Dict[str, Any], Weights]:
    """``(GPT2Config kwargs, state dict of numpy arrays)`` for ``GPT2LMHeadModel.load_state_dict``
    (the parity suite's third opinion, the benchmark's peer row): prefixed names, views of
    ``weights``, ``lm_head.weight`` tied to ``wte``; dropout off."""
    config = {k: v for k, v in config_from_hparams(hp).items() if k not in ("architectures", "model_type")}
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    state = {PREFIX + hf_name(n): to_hf(n, weights[n]) for n in expected_shapes(hp)}
    state["lm_head.weight"] = weights["model/wte"]
    return config, state


def hparams_from_config(config: Any, source: str) -> HParams:
    """The :class:`HParams` of a ``config.json``; :class:`HParamsError` (one line) unless it is a
    GPT-2 this toolkit computes exactly (tanh GELU, LayerNorm eps 1e-5, MLP of 4 * n_embd, ...).
    Missing shape fields take ``GPT2Config``'s defaults, which are the 124M's, as transformers does."""
    if not isinstance(config, dict):
        raise HParamsError(f"{source}: expected a JSON object, got {type(config).__name__}")
    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != "gpt2" and not (model_type is None and any(str(a).startswith("GPT2") for a in archs)):
        what = ", ".join(map(str, archs)) if archs else "an unnamed architecture"
        raise HParamsError(f"{source}: a config for {what} (model_type {model_type!r}), "
                           "not GPT-2 (model_type 'gpt2')")
    values = {}
    for ours, theirs in _CONFIG_FIELDS.items():
        key = next((k for k in theirs if k in config), None)
        values[ours] = config[key] if key else getattr(HParams, ours)
    validate(values, source)
    needs = [("activation_function", "gelu_new", lambda v: v in ("gelu_new", "gelu_pytorch_tanh"),
              "GPT-2's tanh GELU 'gelu_new'"),
             ("layer_norm_epsilon", 1e-5, lambda v: v == 1e-5, "1e-05"),
             ("n_inner", None, lambda v: v in (None, 4 * values["n_embd"]), "4 * n_embd (null)"),
             ("scale_attn_weights", True, lambda v: v is True, "true"),
             ("scale_attn_by_inverse_layer_idx", False, lambda v: v is False, "false"),
             ("add_cross_attention", False, lambda v: v is False, "false")]
    for field, default, ok, want in needs:
        value = config.get(field, default)
        if not ok(value):
            raise HParamsError(f"{source}: {field} is {value!r}, but GPT-2 here needs {want}")
    return HParams(**values)


# ----------------------------------------------------------------------------------- folders
def hf_folder(path: Any) -> Optional[str]:
    """The Hugging Face model folder at ``path``, or ``None`` if it is not one (no ``config.json``,
    or a ``hparams.json`` beside it: the original layout wins). A hub-cache repository folder
    (``models--org--name`` with ``snapshots/``) resolves to the snapshot ``refs/main`` names."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return None
    snapshots = os.path.join(path, "snapshots")
    if os.path.isdir(snapshots) and not os.path.exists(os.path.join(path, HF_CONFIG_FILE)):
        ref, names = os.path.join(path, "refs", "main"), sorted(os.listdir(snapshots))
        if os.path.isfile(ref):
            with open(ref, encoding="utf-8") as f:
                path = os.path.join(snapshots, f.read().strip())
        elif len(names) == 1:
            path = os.path.join(snapshots, names[0])
    if os.path.isfile(os.path.join(path, HF_CONFIG_FILE)) and \
            not os.path.exists(os.path.join(path, "hparams.json")):
        return path
    return None


def read_hf_config(folder: str) -> HParams:
    """The :class:`HParams` of the Hugging Face folder ``folder`` (see :func:`hparams_from_config`)."""
    path = os.path.join(folder, HF_CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HParamsError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise HParamsError(f"{path}: cannot read ({e.strerror})") from None
    return hparams_from_config(config, path)


def vocab_paths(model_dir: Any) -> Tuple[str, str]:
    """``(encoder.json, vocab.bpe)`` of a model folder, under Hugging Face's names
    (``vocab.json``, ``merges.txt``) when the folder is a Hugging Face one without the originals."""
    model_dir = os.fspath(model_dir)
    folder = hf_folder(model_dir)
    if folder and not os.path.isfile(os.path.join(model_dir, VOCAB_FILES[0])):
        return os.path.join(folder, HF_VOCAB_FILES[0]), os.path.join(folder, HF_VOCAB_FILES[1])
    return os.path.join(model_dir, VOCAB_FILES[0]), os.path.join(model_dir, VOCAB_FILES[1])


def tokenizer_file(model_dir: Any) -> Optional[str]:
    """The ``tokenizer.json`` of a Hugging Face folder that has no other vocabulary files (what
    transformers 5's ``save_pretrained`` writes), else ``None``."""
    folder = hf_folder(model_dir)
    if folder is None or any(os.path.isfile(p) for p in vocab_paths(model_dir)):
        return None
    path = os.path.join(folder, HF_TOKENIZER_FILE)
    return path if os.path.isfile(path) else None


def weight_files(folder: str) -> List[str]:
    """The weight files of a Hugging Face folder: the first of ``HF_WEIGHT_FILES`` present, or the
    shards its ``*.index.json`` lists."""
    for name in HF_WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a valid shard index ({type(e).__name__}: {e})") from None
        return [os.path.join(folder, s) for s in shards]
    raise CheckpointError(f"{folder}: no weights: expected one of {', '.join(HF_WEIGHT_FILES)}")


# ------------------------------------------------------------------------------------ reading
def few(items: List[str], shown: int = 3) -> str:
    """The first ``shown`` of ``items``, comma-separated, with the count when there are more."""
    more = f", ... ({len(items)} in all)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


class HFTensors(Mapping):
    """A Hugging Face folder's weights as a read-only mapping from original names to numpy arrays
    in the original shapes, each read from disk when it is asked for (so a caller that takes one
    at a time holds one at a time). Names, dtypes and shapes are checked against ``hp`` when
    opened (:class:`CheckpointError`, one line). Close it, or use it as a context manager."""

    def __init__(self, folder: str, hp: HParams) -> None:
        self.folder, self.hp = folder, hp
        self._shapes = expected_shapes(hp)
        self._where: Dict[str, Tuple[Callable[[], np.ndarray], str, tuple, str]] = {}
        self._open: List[Any] = []
        try:
            for path in weight_files(folder):
                if not os.path.isfile(path):
                    raise CheckpointError(f"{path}: shard named in the index does not exist")
                (self._add_bin if path.endswith(".bin") else self._add_safetensors)(path)
            self._check()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "HFTensors":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the open files."""
        for f in self._open:
            getattr(f, "__exit__", lambda *a: None)(None, None, None)
        self._open, self._where = [], {}

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self._shapes[name]
        get, key, _, path = self._where[hf_name(name)]
        try:
            a = get()
        except Exception as e:  # noqa: BLE001 - the libraries' own errors, reported as one line
            raise CheckpointError(f"{path}: cannot read tensor {key!r} ({_first_line(e)})") from None
        return np.asarray(a).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    # -- opening ---------------------------------------------------------------------------------
    def _add(self, key: str, shape: tuple, dtype: str, path: str, get: Callable[[], np.ndarray]) -> None:
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if _BUFFER.match(name):
            return
        if name in self._where:
            raise CheckpointError(f"{path}: tensor {name!r} is stored twice")
        if dtype not in _FLOATS:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, not a floating point type")
        self._where[name] = (get, key, tuple(shape), path)

    def _add_safetensors(self, path: str) -> None:
        try:
            from safetensors import safe_open
        except ImportError:
            raise CheckpointError(f"{path}: reading it needs the 'safetensors' package "
                                  "(pip install safetensors)") from None
        try:
            try:  # pread: read each tensor as asked, no mapping of the whole file
                f = safe_open(path, framework="numpy", backend="pread")
            except TypeError:  # safetensors < 0.8 only maps the file
                f = safe_open(path, framework="numpy")
            self._open.append(f)
            for key in f.keys():
                view = f.get_slice(key)
                dtype = view.get_dtype()
                get = (lambda k=key: _bf16_tensor(path, k)) if dtype == "BF16" else \
                    (lambda k=key, f=f: f.get_tensor(k))
                self._add(key, tuple(view.get_shape()), dtype, path, get)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - SafetensorError and the OS's errors
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)}); "
                                  "is it truncated or corrupt?") from None

    def _add_bin(self, path: str) -> None:
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{path}: reading a pytorch_model.bin needs PyTorch (pip install "
                                  "torch); a model.safetensors does not") from None
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as e:
            why = re.search(r"Unsupported global: GLOBAL \S+", str(e))
            raise CheckpointError(f"{path}: torch.load(weights_only=True) refuses it ("
                                  f"{why.group(0) if why else _first_line(e)}): it holds more than "
                                  "tensors, and unpickling it could run code; not loaded") from None
        except Exception as e:  # noqa: BLE001 - torch's errors for broken archives
            raise CheckpointError(f"{path}: cannot read it ({_first_line(e)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
        for key, t in state.items():
            self._add(key, tuple(t.shape), str(t.dtype), path, lambda t=t: _torch_numpy(t))

    def _check(self) -> None:
        names = {hf_name(n): n for n in self._shapes}
        tied = self._where.pop("lm_head.weight", None)
        missing = [h for h in names if h not in self._where]
        unexpected = [h for h in self._where if h not in names]
        for what, items in (("missing", missing), ("unexpected", unexpected)):
            if items:
                raise CheckpointError(f"{self.folder}: {what} tensors for the GPT-2 config.json "
                                      f"describes: {few(items)}")
        for h, name in names.items():
            _, key, shape, path = self._where[h]
            want = hf_shape(name, self._shapes[name])
            if shape != want:
                raise CheckpointError(f"{path}: tensor {key!r} has shape {shape}, "
                                      f"config.json implies {want}")
        if tied is not None:
            get, key, shape, path = tied
            wte = np.ascontiguousarray(self["model/wte"])
            head = np.ascontiguousarray(get())
            if head.shape != wte.shape or head.dtype != wte.dtype or \
                    not np.array_equal(head.view(np.uint8), wte.view(np.uint8)):
                raise CheckpointError(f"{path}: {key!r} differs from wte.weight: an untied LM head, "
                                      "which GPT-2 does not have")


def _torch_numpy(t: Any) -> np.ndarray:
    """A copy of torch tensor ``t`` as numpy (bfloat16 through ``ml_dtypes``)."""
    import torch

    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def _bf16_tensor(path: str, key: str) -> np.ndarray:
    """A bfloat16 tensor of a safetensors file (numpy has no bfloat16: read through torch)."""
    try:
        from safetensors import safe_open
        import ml_dtypes  # noqa: F401 - needed by _torch_numpy
        import torch  # noqa: F401
    except ImportError as e:
        raise CheckpointError(f"{path}: bfloat16 tensors need torch and ml_dtypes ({e})") from None
    with safe_open(path, framework="pt") as f:
        return _torch_numpy(f.get_tensor(key))


def read_hf_model(path: Any, dtype: Optional[Any] = np.float32) -> Tuple[HParams, Weights]:
    """``(hparams, weights)`` of the Hugging Face folder (or hub-cache repository) at ``path``,
    the weights under their original names and shapes, checked; one-line errors. ``dtype``:
    what the arrays are cast to (float16/bfloat16 weights widen exactly; the backends take
    float32), or ``None`` to keep the stored dtype."""
    folder = hf_folder(path)
    if folder is None:
        raise CheckpointError(f"{os.fspath(path)}: not a Hugging Face model folder (no {HF_CONFIG_FILE})")
    hp = read_hf_config(folder)
    with HFTensors(folder, hp) as tensors:
        return hp, {name: tensors[name] if dtype is None else tensors[name].astype(dtype, copy=False)
                    for name in tensors}
