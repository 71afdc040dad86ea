"""Training data, framework-free: token files, the document split and the one batch sampler.

A token file is nanoGPT's ``.bin``: raw little-endian ``uint16`` token ids (GPT-2's 50257 ids fit),
documents joined by ``<|endoftext|>`` (each document is followed by one), read memory-mapped so a
corpus larger than memory works. :func:`encode_corpus` writes one from text files, folders, globs
and ``.jsonl`` files (one document per line, its ``text`` field); :func:`load_tokens` also reads
nshepperd's ``.npz`` datasets (one token array per file) and plain text directly (encoded on the fly).

The train/validation split is by document (:func:`is_validation_document`: a seeded hash of the
document's index, so it never depends on the order documents are read in chunks) and
:class:`BatchSampler` is a pure function of (seed, batch index): both backends, a resumed run and
every data-parallel rank see identical windows in identical order.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..constants import EOT_TOKEN
from ..safeio import file_mode

TOKEN_DTYPE = np.dtype("<u2")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text", ".jsonl", "")


class DataError(ValueError):
    """A dataset that is missing, empty, undecodable or too short (one line naming the file)."""


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, folders (walked recursively, sorted) and globs -> an ordered list of files."""
    if isinstance(inputs, str):
        inputs = [s for s in inputs.split(",") if s] if "," in inputs and not os.path.exists(inputs) else [inputs]
    files: List[str] = []
    for item in inputs:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
        elif os.path.isfile(item):
            files.append(item)
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f"{item}: no such file, folder or matching glob")
            files += matches
    if not files:
        raise DataError(f"{', '.join(map(str, inputs)) or 'dataset'}: no files found")
    return files


def iter_documents(files: Iterable[str]) -> Iterator[str]:
    """Documents as text: a ``.jsonl`` line's ``text`` field, or a whole text file."""
    for path in files:
        try:
            if path.endswith(".jsonl"):
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            doc = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                            raise DataError(f"{path}:{n}: expected an object with a 'text' string")
                        yield doc["text"]
            else:
                with open(path, encoding="utf-8") as f:
                    yield f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None


def is_validation_document(index: int, val_fraction: float, seed: int = 0) -> bool:
    """Whether document ``index`` belongs to the validation split (deterministic, seeded)."""
    if val_fraction <= 0:
        return False
    x = np.random.SeedSequence([seed, 0x5EED, index]).generate_state(1, np.uint64)[0]
    return float(x) / 2.0**64 < val_fraction


def _progress(total: Optional[int], desc: str, unit: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not show, leave=False)


class _TokenWriter:
    """Appends uint16 tokens to ``path`` through a temporary file renamed on :meth:`commit`."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        except OSError as e:  # no permission, a file in the way, a full disk
            raise DataError(f"cannot write {path}: {e.strerror or e}") from None
        self.f = os.fdopen(fd, "wb")
        self.count = 0

    def write(self, tokens: Sequence[int]) -> None:
        self.f.write(np.asarray(tokens, dtype=TOKEN_DTYPE).tobytes())
        self.count += len(tokens)

    def commit(self) -> None:
        self.f.close()
        os.chmod(self.tmp, file_mode())  # mkstemp's 0600 is for the temporary name only
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def validation_path(path: str) -> str:
    """``data/train.bin`` -> ``data/train.val.bin`` (where the validation split is written)."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.val{ext or '.bin'}"


def encode_corpus(inputs: Sequence[str], out: str, encoder, val_fraction: float = 0.0, seed: int = 0,
                  progress: bool = True) -> Tuple[int, int, int, int]:
    """Encode documents from ``inputs`` into the token file ``out`` (and, with ``val_fraction``,
    the validation documents into :func:`validation_path` of it), streaming document by document.

    Returns ``(documents, tokens, val_documents, val_tokens)``. Nothing is left under the final
    names unless every input was read and encoded."""
    files = expand_inputs(inputs)
    writers = [_TokenWriter(out)] + ([_TokenWriter(validation_path(out))] if val_fraction > 0 else [])
    docs = [0, 0]
    try:
        bar = _progress(sum(os.path.getsize(p) for p in files), "encoding", "B", progress)
        for i, text in enumerate(iter_documents(files)):
            part = int(is_validation_document(i, val_fraction, seed))
            writers[part].write(encoder.encode(text) + [EOT_TOKEN])
            docs[part] += 1
            bar.update(len(text.encode("utf-8", "surrogatepass")))
        bar.close()
        if docs[0] + docs[1] == 0:
            raise DataError(f"{', '.join(map(str, inputs))}: no documents found")
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return docs[0], writers[0].count, docs[1], writers[1].count if len(writers) > 1 else 0


def load_tokens(dataset, encoder=None, progress: bool = False) -> np.ndarray:
    """A dataset as one 1-D token array: a ``.bin`` token file (memory-mapped), a ``.npz`` of token
    arrays (nshepperd's format: each array a document), or text/``.jsonl`` (encoded now)."""
    files = expand_inputs([dataset] if isinstance(dataset, str) else dataset)
    parts: List[np.ndarray] = []
    for path in files:
        if path.endswith(".bin"):
            size = os.path.getsize(path)
            if size % 2:
                raise DataError(f"{path}: not a uint16 token file (odd size {size})")
            parts.append(np.memmap(path, dtype=TOKEN_DTYPE, mode="r") if size else np.zeros(0, TOKEN_DTYPE))
        elif path.endswith(".npz"):
            try:
                with np.load(path) as npz:
                    for key in npz.files:
                        a = np.asarray(npz[key]).reshape(-1)
                        parts.append(np.append(a, EOT_TOKEN).astype(TOKEN_DTYPE))
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: not a readable .npz dataset ({e})") from None
        else:
            if encoder is None:
                raise DataError(f"{path}: text datasets need a vocabulary to encode them")
            for text in iter_documents([path]):
                parts.append(np.asarray(encoder.encode(text) + [EOT_TOKEN], dtype=TOKEN_DTYPE))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)


def split_documents(tokens: np.ndarray, val_fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Split a token array at its ``<|endoftext|>`` tokens into train and validation documents with
    :func:`is_validation_document` (the same rule ``gpt2_encode --val_fraction`` applies)."""
    ends = np.flatnonzero(np.asarray(tokens) == EOT_TOKEN) + 1
    bounds = np.concatenate([[0], ends, [len(tokens)] if (not len(ends) or ends[-1] != len(tokens)) else []])
    bounds = bounds.astype(np.int64)
    train, val = [], []
    for i in range(len(bounds) - 1):
        (val if is_validation_document(i, val_fraction, seed) else train).append(tokens[bounds[i]:bounds[i + 1]])
    join = lambda xs: np.concatenate(xs) if xs else np.zeros(0, TOKEN_DTYPE)  # noqa: E731
    return join(train), join(val)


class BatchSampler:
    """Windows of ``context`` tokens from ``tokens``: batch ``k`` is a pure function of
    ``(seed, k)``, so any batch can be drawn again (resume, other backend, another rank)."""

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int = 0,
                 name: str = "dataset") -> None:
        if len(tokens) < context:
            raise DataError(f"{name} has {len(tokens)} tokens, shorter than one window of {context} "
                            "(use a smaller --context or more data)")
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed

    def _windows(self, key: Sequence[int]) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *key])))
        starts = rng.integers(0, len(self.tokens) - self.context + 1, size=self.batch_size)
        return np.stack([np.asarray(self.tokens[s:s + self.context]) for s in starts]).astype(np.int32)

    def batch(self, index: int) -> np.ndarray:
        """Training batch ``index`` (0, 1, ...) as int32 ``[batch_size, context]``."""
        return self._windows([index])

    def eval_batches(self, count: int) -> Iterator[np.ndarray]:
        """``count`` fixed batches, the same at every evaluation (never a training batch's key)."""
        for k in range(count):
            yield self._windows([0xE7A1, k])
