"""Input for scoring and detection: text files and the gpt-2-output-dataset's ``.jsonl`` files.

The dataset's lines are ``{"id", "ended", "length", "text"}``; its files are named
``<source>.<split>.jsonl`` (``webtext`` holds the real text; labels: real = 0, generated = 1).
Unreadable or malformed files raise a one-line :class:`~gpt2_common.research.score.ResearchError`.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .score import ResearchError

SPLITS = ("train", "valid", "test")


def iter_jsonl(path: str, limit: Optional[int] = None, field: str = "text") -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, record)`` for the first ``limit`` records of a ``.jsonl`` file.

    Each non-blank line must be a JSON object whose ``field`` is a string; anything else raises
    :class:`ResearchError` naming the file and line. Blank lines are skipped.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ResearchError(f"limit must be an integer >= 1, got {limit!r}")
    count = 0
    with _reading(path):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if limit is not None and count >= limit:
                    return
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise ResearchError(f"{path}:{number}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get(field), str):
                    raise ResearchError(f"{path}:{number}: expected a JSON object with a string {field!r} field")
                count += 1
                yield number, record


def read_jsonl(path: str, limit: Optional[int] = None, field: str = "text") -> List[str]:
    """The ``field`` (default ``text``) of the first ``limit`` records of a ``.jsonl`` file."""
    return [record[field] for _, record in iter_jsonl(path, limit, field)]


def read_text(path: str) -> str:
    """A whole UTF-8 text file (ResearchError if missing or unreadable)."""
    with _reading(path), open(path, encoding="utf-8") as f:
        return f.read()


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn a failure to read ``path`` into a one-line :class:`ResearchError`."""
    try:
        yield
    except FileNotFoundError:
        raise ResearchError(f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise ResearchError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ResearchError(f"cannot read {path}: {e.strerror or e}") from None


def source_name(path: str) -> str:
    """The dataset's source name from a file name: ``small-117M.valid.jsonl`` -> ``small-117M``."""
    name = os.path.basename(path)
    if name.endswith(".jsonl"):
        name = name[:-len(".jsonl")]
    for split in SPLITS:
        if name.endswith("." + split):
            return name[:-len(split) - 1]
    return name


def split_paths(data_dir: str, source: str, splits: Sequence[str] = SPLITS,
                real: str = "webtext") -> Dict[str, Tuple[str, str]]:
    """``{split: (real path, generated path)}`` in the dataset's layout:
    ``data_dir/webtext.<split>.jsonl`` and ``data_dir/<source>.<split>.jsonl``."""
    return {s: (os.path.join(data_dir, f"{real}.{s}.jsonl"), os.path.join(data_dir, f"{source}.{s}.jsonl"))
            for s in splits}


def labelled(real: Sequence[str], fake: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """Texts ``real + fake`` and labels (0 = real, 1 = generated), as ``baseline.py`` builds them."""
    return list(real) + list(fake), np.array([0] * len(real) + [1] * len(fake), dtype=np.int64)


def require_both_classes(split: str, labels: Sequence[int]) -> None:
    """:class:`ResearchError` unless split ``split``'s ``labels`` hold both real (0) and generated
    (1) documents: a detector cannot be trained, tuned or tested on one class (an empty generated
    test file would score 100%)."""
    have = set(np.asarray(labels).tolist())
    missing = [name for k, name in ((0, "real"), (1, "generated")) if k not in have]
    if missing:
        raise ResearchError(f"the {split} split needs both real and generated documents "
                            f"(it has no {' and no '.join(missing)} ones)")
