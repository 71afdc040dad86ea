"""The error runner of the CLIs: :func:`run` turns the user's errors into one line and exit 2.

Errors that are the user's (bad flags, missing or corrupt model files, network failures) print one
line on stderr and exit with status 2, with no traceback. Anything else is a bug and keeps its
traceback. Ctrl-C exits with status 130 and a closed output pipe (``... | head``) with 141, both
without a traceback. Standard library only at import.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Optional


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


def run(component: Callable[..., Any], name: Optional[str] = None) -> None:
    """Run ``component`` with ``fire``, turning user errors into one line and exit status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up chatter on stderr
    import fire

    try:
        result = fire.Fire(component, name=name)
    except KeyboardInterrupt:
        _flush_quietly()
        print(file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `generate_unconditional_samples | head`
        _silence_stdout()
        sys.exit(141)
    except user_errors() as e:  # one line, no traceback
        _flush_quietly()
        fail(_one_line(e))
    del result


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
