"""The console scripts' entry point: :func:`run` turns the user's errors into one line and exit 2.

Errors that are the user's (bad flags, missing or corrupt model files, network failures) print one
line on stderr and exit with status 2, with no traceback. Anything else is a bug and keeps its
traceback. Ctrl-C exits with status 130 and a closed output pipe (``... | head``) with 141, both
without a traceback. SIGTERM (``kill``, a job scheduler, ``docker stop``) is handled as Ctrl-C (the
same clean-up: temporary folders removed, training saves after its step) and exits with status 143.
Standard library only at import.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

from .argv import check_command
from .errors import _one_line, fail, user_errors


def run(component: Any, name: Optional[str] = None) -> None:
    """Run ``component`` (a function, or a dict of subcommands) with ``fire``, turning user errors
    into one line and exit status 2. The command line is checked against ``component`` first
    (:func:`~gpt2_common.cli.argv.check_command`): ``-h``/``--help`` print help on stdout, and an
    unknown flag or an argument too many is an error before anything runs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up chatter on stderr
    import fire

    name = name or os.path.basename(sys.argv[0])
    terminated = _sigterm_as_ctrl_c()
    try:
        check_command(component, sys.argv[1:], name)
        result = fire.Fire(component, name=name)
    except KeyboardInterrupt:
        _flush_quietly()
        print(file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except BrokenPipeError:  # e.g. `generate_unconditional_samples | head`
        _silence_stdout()
        sys.exit(141)
    except user_errors() as e:  # one line, no traceback
        _flush_quietly()
        fail(_one_line(e))
    del result


def _sigterm_as_ctrl_c() -> list:
    """Make SIGTERM do what Ctrl-C does: call the SIGINT handler in force when it arrives (a
    command's own, such as training's save-then-stop, else Python's KeyboardInterrupt), so every
    ``finally`` runs. Returns a list that becomes non-empty once SIGTERM came (exit status 143)."""
    terminated: list = []

    def handle(signum, frame):
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not handle:
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job) or default: still end as Ctrl-C would
            raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        pass
    return terminated


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
