"""Opening files without following a planted symbolic link, and the mode of an ordinary new file.

Partial and working files (a download's ``<file>.part``, a scoring rank's ``OUTPUT.part<rank>``,
a training run's ``metrics.jsonl``, samples, ``hparams.json`` and vocabulary copies) are opened
with :func:`open_nofollow`: a symbolic link put in their place (``ln -s ~/.bashrc
models/124M/vocab.bpe.part``) is refused with :class:`LinkRefused` (one line) instead of writing
to whatever it points at. Files written under a temporary name and renamed (``os.replace``
replaces a link, never its target) need no more than :func:`file_mode`, which gives them the
permissions an ordinary new file gets (``0666`` less the umask) rather than ``mkstemp``'s ``0600``.
Standard library only.
"""
from __future__ import annotations

import errno
import os
from typing import IO, Any, Optional

_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class LinkRefused(OSError):
    """A file to be opened is a symbolic link (refused: never read or written through)."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, "is a symbolic link; not followed (remove it)", path)

    def __str__(self) -> str:
        return f"{self.filename} is a symbolic link; not followed (remove it)"


def open_nofollow(path: str, mode: str = "rb", encoding: Optional[str] = None) -> IO[Any]:
    """``open(path, mode)``, but a ``path`` that is a symbolic link raises :class:`LinkRefused`.

    ``mode``: ``r``, ``w``, ``a`` or ``x`` with optional ``b`` and ``+``. The check is the
    kernel's (``O_NOFOLLOW`` on the last component), so a link planted between a check and the
    open is refused too. New files get ``0666`` less the umask.
    """
    path = os.fspath(path)
    flags = _FLAGS[mode.replace("b", "").replace("+", "")]
    if "+" in mode:
        flags = (flags & ~(os.O_WRONLY | os.O_RDONLY)) | os.O_RDWR
    if os.path.islink(path):  # where O_NOFOLLOW is missing, at least the plain case
        raise LinkRefused(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise LinkRefused(path) from None
        raise
    return os.fdopen(fd, mode, encoding=None if "b" in mode else (encoding or "utf-8"))


def can_write_in(folder: str) -> bool:
    """Whether this process may create files in the existing ``folder`` (by its effective ids)."""
    kw = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    return os.access(folder or ".", os.W_OK | os.X_OK, **kw)


def file_mode() -> int:
    """The permissions of an ordinary new file: ``0666`` less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
