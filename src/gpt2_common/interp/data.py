"""Repeated random tokens: the data on which induction heads form, and on which they are scored.

A sequence is ``[bos] + r + r``: ``r`` is ``length`` token ids drawn uniformly from
``low .. low + vocab - 1`` (a small subset of GPT-2's ids), then the same ``r`` again. Nothing in
the first copy can be predicted (its loss stays at ``ln(vocab)``); every token of the second copy
can, by looking back ``length`` positions for the current token and copying the token after it:
what an induction head does (Olsson et al. 2022, "In-context Learning and Induction Heads").

    from gpt2_common.interp.data import repeated_random_tokens, write_token_file

    tokens = repeated_random_tokens(4, length=16, vocab=64, seed=0)   # int32 [4, 32]
    write_token_file("data/repeat.bin", repeated_random_tokens(20000, 16, 64, seed=0))

``write_token_file`` writes nanoGPT's ``.bin`` (raw little-endian uint16), which ``gpt2_train
--dataset`` reads: the rows one after another, so a training window (taken at a random offset)
holds the end of one copy of ``r`` and the start of the next and the sequence after it.
No deep-learning framework is imported.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..hparams import HParams
from ..train.data import _TokenWriter

DEFAULT_VOCAB = HParams().n_vocab


def repeated_random_tokens(count: int, length: int, vocab: int, seed: int = 0, bos: Optional[int] = None,
                           low: int = 0, copies: int = 2) -> np.ndarray:
    """``count`` sequences ``[bos] + r + r``, int32 ``[count, 2 * length (+1 with bos)]``; with
    ``copies`` = k, ``r`` k times (``[count, k * length (+1)]``).

    ``r`` (``length`` ids, a fresh draw per row) is uniform over ``low .. low + vocab - 1``, from a
    ``numpy`` generator seeded with ``seed`` (the same arguments give the same array). ``bos``: a
    token id put first (e.g. ``EOT_TOKEN``, as TransformerLens prepends), or None for no such token.
    """
    if count < 1 or length < 1 or vocab < 1 or copies < 1:
        raise ValueError(f"count, length, vocab and copies must be >= 1, got {count}, {length}, {vocab}, {copies}")
    if low < 0 or low + vocab > DEFAULT_VOCAB:
        raise ValueError(f"token ids {low}..{low + vocab - 1} are outside GPT-2's 0..{DEFAULT_VOCAB - 1}")
    rng = np.random.Generator(np.random.PCG64(seed))
    r = rng.integers(low, low + vocab, size=(count, length), dtype=np.int64)
    parts = [r] * copies
    if bos is not None:
        parts.insert(0, np.full((count, 1), bos, dtype=np.int64))
    return np.concatenate(parts, axis=1).astype(np.int32)


def write_token_file(path: str, tokens: np.ndarray) -> int:
    """Write ``tokens`` (any shape, row after row) to ``path`` as a ``.bin`` token file (raw
    little-endian uint16, the format of ``gpt2_encode``), through a temporary file renamed at the
    end. Returns the number of tokens written."""
    flat = np.asarray(tokens).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 2 ** 16):
        raise ValueError("token ids must be in 0..65535 to fit a .bin token file")
    writer = _TokenWriter(os.fspath(path))
    try:
        writer.write(flat)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return int(flat.size)
