"""Model folders converted between OpenAI's original layout and Hugging Face's (``gpt2_convert``).

    original (hparams.json, checkpoint, model.ckpt.*, encoder.json, vocab.bpe)
        <->  Hugging Face (config.json, model.safetensors, vocab.json, merges.txt, tokenizer.json,
             tokenizer_config.json; read with tokenizer.json as its only vocabulary file too)

The weights go over bit-exact (names and a leading 1 of the matrices' shapes change, see
:mod:`gpt2_common.hf`). Everything is written into a temporary folder beside ``dst``, checked by
reading it back, and renamed to ``dst`` at the end, so a failure never leaves a half-written
``dst``. The original layout is written tensor by tensor (one in memory at a time); the
safetensors writer takes all tensors at once, so that direction holds the weights once.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .checkpoint import CheckpointError, list_variables, read_checkpoint, write_checkpoint
from .constants import (ENDOFTEXT, HF_CONFIG_FILE, HF_LAYOUT, HF_TOKENIZER_FILE, HF_VOCAB_FILES,
                        ORIGINAL_LAYOUT, VOCAB_FILES)
from .encoder import read_vocab, write_vocab
from .hf import (HFTensors, config_from_hparams, hf_folder, hf_name, read_hf_config, to_hf,
                 tokenizer_file, vocab_paths)
from .hparams import HParams, load_hparams, save_hparams
from .weights import check_variables

LAYOUTS = (HF_LAYOUT, ORIGINAL_LAYOUT)


class ConvertError(CheckpointError):
    """A conversion that cannot be done as asked (not a model folder, ``dst`` in the way)."""


def detect_layout(path: str) -> str:
    """``"hf"`` or ``"original"`` for the model folder ``path``; :class:`ConvertError` otherwise."""
    if not os.path.isdir(path):
        raise ConvertError(f"{path}: no such folder")
    if hf_folder(path) is not None:
        return HF_LAYOUT
    names = os.listdir(path)
    if "hparams.json" in names or "checkpoint" in names or any(n.endswith(".index") for n in names):
        return ORIGINAL_LAYOUT
    raise ConvertError(f"{path}: neither an original model folder (hparams.json, checkpoint, "
                       "model.ckpt.*) nor a Hugging Face one (config.json, model.safetensors or "
                       "pytorch_model.bin)")


class OriginalTensors(Mapping):
    """An original-layout checkpoint as a mapping from names to arrays read one per access
    (names and shapes checked against ``hp`` when opened: :func:`gpt2_common.weights.check_variables`)."""

    def __init__(self, model_dir: str, hp: HParams) -> None:
        self.model_dir = model_dir
        self._shapes = check_variables(list_variables(model_dir), hp, model_dir)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._shapes:
            raise KeyError(name)
        return read_checkpoint(self.model_dir, names=[name])[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


class _Counted(Mapping):
    """``tensors`` with ``tick()`` called after each access (a progress bar)."""

    def __init__(self, tensors: Mapping, tick: Callable[[], Any]) -> None:
        self._tensors, self._tick = tensors, tick

    def __getitem__(self, name: str) -> np.ndarray:
        a = self._tensors[name]
        self._tick()
        return a

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _write_original(out: str, hp: HParams, tensors: Mapping) -> None:
    write_checkpoint(out, tensors)
    save_hparams(hp, out)


def _write_hf(out: str, hp: HParams, tensors: Mapping) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ConvertError("writing model.safetensors needs the 'safetensors' package "
                           "(pip install safetensors)") from None
    arrays = {hf_name(n): np.ascontiguousarray(to_hf(n, tensors[n])) for n in tensors}
    save_file(arrays, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    del arrays
    with open(os.path.join(out, HF_CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config_from_hparams(hp), f, indent=2)
        f.write("\n")


def _has_vocab(src: str) -> bool:
    """Whether the model folder ``src`` has a vocabulary (files, or a lone ``tokenizer.json``)."""
    return tokenizer_file(src) is not None or all(os.path.isfile(p) for p in vocab_paths(src))


def _write_vocab(src: str, out: str, to: str, vocab: Optional[tuple]) -> List[str]:
    """The vocabulary ``read_vocab(src)`` gave (``None``: there is none) under ``to``'s file names:
    files copied as they are, or written from a lone ``tokenizer.json`` (GPT-2's come out byte
    for byte as released). To Hugging Face, ``tokenizer.json`` too (built with the ``tokenizers``
    library when installed, else copied from ``src`` if it has one). Returns warnings."""
    if vocab is None:
        return [f"{src} has no vocabulary ({' and '.join(os.path.basename(p) for p in vocab_paths(src))}, "
                f"or {HF_TOKENIZER_FILE}): the converted folder has none either"]
    encoder, merges, sources = vocab
    names = [os.path.join(out, n) for n in (HF_VOCAB_FILES if to == HF_LAYOUT else VOCAB_FILES)]
    if sources[0] == sources[1]:  # tokenizer.json
        write_vocab(encoder, merges, *names)
    else:
        for source, name in zip(sources, names):
            shutil.copyfile(source, name)
    if to != HF_LAYOUT:
        return []
    if write_tokenizer_json(encoder, merges, os.path.join(out, HF_TOKENIZER_FILE)):
        return []
    if sources[0] == sources[1]:
        shutil.copyfile(sources[0], os.path.join(out, HF_TOKENIZER_FILE))
        return []
    return [f"the 'tokenizers' package is not installed: no {HF_TOKENIZER_FILE} written "
            f"({' and '.join(HF_VOCAB_FILES)} are, which transformers also reads)"]


def write_tokenizer_json(encoder: Dict[str, int], merges: Sequence[Tuple[str, str]], path: str) -> bool:
    """Write GPT-2's BPE as a ``tokenizer.json`` with the ``tokenizers`` library (what
    ``GPT2TokenizerFast`` builds: byte-level BPE, no prefix space, ``<|endoftext|>`` special);
    ``False`` if that library is not installed."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return False
    tokenizer = Tokenizer(models.BPE(vocab=dict(encoder), merges=[tuple(m) for m in merges]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    if ENDOFTEXT in encoder:
        tokenizer.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    tokenizer.save(path)
    return True


def _tokenizer_config(out: str, hp: HParams) -> None:
    """``tokenizer_config.json``: GPT-2's tokenizer class, context length and special token."""
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": hp.n_ctx, "add_prefix_space": False,
              "bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def _verify(out: str, to: str, hp: HParams) -> None:
    """Read back what was written: hyperparameters, tensor names and shapes."""
    if load_hparams(out) != hp:
        raise CheckpointError(f"{out}: written hyperparameters do not read back")  # pragma: no cover
    if to == HF_LAYOUT:
        HFTensors(out, hp).close()
    else:
        OriginalTensors(out, hp)


def _check_dst(src: str, dst: str, overwrite: bool) -> None:
    if os.path.realpath(src) == os.path.realpath(dst):
        raise ConvertError(f"{dst}: the destination is the source folder")
    if os.path.lexists(dst):
        if not os.path.isdir(dst) or os.path.islink(dst):
            raise ConvertError(f"{dst}: exists and is not a folder")
        if os.listdir(dst) and not overwrite:
            raise ConvertError(f"{dst}: exists and is not empty (--overwrite replaces it)")


def convert_model(src: str, dst: str, to: Optional[str] = None, overwrite: bool = False,
                  progress: bool = False) -> Tuple[str, str, HParams, List[str]]:
    """Convert the model folder ``src`` into ``dst`` in layout ``to`` (``"hf"`` or
    ``"original"``; default: the other one). Returns ``(from layout, to layout, hparams,
    warnings)``. Bad input raises a one-line :class:`CheckpointError` (:class:`ConvertError`,
    :class:`~gpt2_common.hparams.HParamsError` or an encoder error) and leaves ``dst`` as it was.
    ``overwrite`` replaces a non-empty ``dst``, only once the new folder is complete."""
    from tqdm import tqdm

    src, dst = os.fspath(src), os.fspath(dst)
    layout = detect_layout(src)
    to = to or (ORIGINAL_LAYOUT if layout == HF_LAYOUT else HF_LAYOUT)
    if to not in LAYOUTS:
        raise ConvertError(f"unknown layout {to!r}: choose one of {', '.join(LAYOUTS)}")
    _check_dst(src, dst, overwrite)
    folder = hf_folder(src)
    hp = read_hf_config(folder) if layout == HF_LAYOUT else load_hparams(src)
    # a broken vocabulary is refused before anything is written
    vocab = read_vocab(folder or src) if _has_vocab(folder or src) else None
    tensors = HFTensors(folder, hp) if layout == HF_LAYOUT else OriginalTensors(src, hp)
    parent = os.path.dirname(os.path.abspath(dst))
    created, d, tmp = [], parent, None  # folders this call creates, innermost first
    while not os.path.isdir(d):
        created.append(d)
        d = os.path.dirname(d)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(dst))}.", suffix=".tmp", dir=parent)
        with tqdm(total=len(tensors), unit="tensor", desc=f"to {to}", disable=not progress) as bar:
            counted = _Counted(tensors, bar.update)
            (_write_hf if to == HF_LAYOUT else _write_original)(tmp, hp, counted)
        warnings = _write_vocab(folder or src, tmp, to, vocab)
        if to == HF_LAYOUT:
            _tokenizer_config(tmp, hp)
        _verify(tmp, to, hp)
        _publish(tmp, dst, parent)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # innermost first, only if still empty
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, OSError):  # no space, no permission, ...: the user's to fix
            raise ConvertError(f"{dst}: cannot write it ({e.strerror or e})") from None
        raise
    finally:
        if isinstance(tensors, HFTensors):
            tensors.close()
    return layout, to, hp, warnings


def _publish(tmp: str, dst: str, parent: str) -> None:
    """Give the finished ``tmp`` the user's usual permissions and rename it to ``dst`` (a ``dst``
    in the way is moved aside first, and back if the rename fails)."""
    mask = _umask()  # temporary files are private; the folder is the user's as any other
    os.chmod(tmp, 0o777 & ~mask)
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), 0o666 & ~mask)
    if not os.path.lexists(dst):
        os.replace(tmp, dst)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(dst))}.", suffix=".old", dir=parent)
    os.replace(dst, os.path.join(old, "dst"))
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(os.path.join(old, "dst"), dst)
        os.rmdir(old)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
