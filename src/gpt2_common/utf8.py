"""Text input that is not UTF-8: one rule everywhere (refuse it, naming the first bad byte).

Every reader of user text (``gpt2_encode``/``gpt2_train`` data, ``gpt2_score`` files and stdin,
the research readers, ``interactive_conditional_samples`` prompts) reports undecodable input as
``not UTF-8 text (byte N: reason)``, N counted from the start of the file or stream. Standard
library only.
"""
from __future__ import annotations

import codecs
import os
from typing import Union

CHUNK = 1 << 20


def not_utf8(offset: int, reason: str) -> str:
    """The shared wording: ``not UTF-8 text (byte N: reason)``."""
    return f"not UTF-8 text (byte {offset}: {reason})"


def describe(error: UnicodeDecodeError, offset: int = 0) -> str:
    """:func:`not_utf8` for ``error`` raised decoding bytes that start at ``offset`` of the input."""
    return not_utf8(offset + error.start, error.reason)


def first_bad_byte(path: Union[str, os.PathLike]) -> str:
    """:func:`not_utf8` for the file at ``path`` (read in chunks, so the offset is exact whatever
    the reader that failed had buffered); ``"not UTF-8 text"`` if it decodes after all."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            pending = len(decoder.getstate()[0])  # bytes of a character split over two chunks
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                return not_utf8(offset - pending + e.start, e.reason)
            if not chunk:
                return "not UTF-8 text"
            offset += len(chunk)
