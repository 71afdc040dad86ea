"""The CLIs' errors: :class:`UsageError`, which exception types are the user's
(:func:`user_errors`) and :func:`fail` (one line on stderr, exit 2). The runner that uses them is
:func:`gpt2_common.cli.entry.run`. Standard library only at import.
"""
from __future__ import annotations

import sys
from typing import NoReturn


class UsageError(Exception):
    """An error caused by the user's input; reported as one line, exit status 2."""


def user_errors() -> tuple:
    """Exception types that are reported as one line instead of a traceback."""
    from ..checkpoint import CheckpointError
    from ..download import DownloadError
    from ..hooks import HookError
    from ..hparams import HParamsError
    from ..interface import ModelError
    from ..safeio import LinkRefused
    from ..sampling import SamplingError
    from ..train.data import DataError

    errors = [UsageError, HParamsError, CheckpointError, DownloadError, ModelError, SamplingError, HookError,
              DataError, FileNotFoundError, PermissionError, LinkRefused]
    try:  # the encoder's own error type, where it has one
        from .. import encoder

        errors += [v for k, v in vars(encoder).items()
                   if k.endswith("Error") and isinstance(v, type) and issubclass(v, Exception)
                   and v.__module__ == encoder.__name__]
    except ImportError:
        pass
    return tuple(errors)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (first line only) on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, KeyError) and len(e.args) == 1:  # KeyError's str() adds quotes
        text = str(e.args[0])
    elif type(e) in (FileNotFoundError, PermissionError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"  # not "[Errno 13] Permission denied: '...'"
    return text.splitlines()[0] if text else type(e).__name__
