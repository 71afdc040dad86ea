"""Flag checks of the CLIs, all done before anything is loaded (so bad input fails fast).

Each check returns the value or raises a one-line :class:`~gpt2_common.cli.errors.UsageError`.
Standard library only at import.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..constants import BACKENDS, DEFAULT_DTYPE, DTYPES, TOP_P_MODES
from .errors import UsageError

_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(:\d+)?$")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is ``tf`` or ``torch``; raise :class:`UsageError` otherwise."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


def check_dtype(dtype: Any) -> str:
    """Return ``dtype`` if it is one of :data:`~gpt2_common.constants.DTYPES`; UsageError otherwise."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype


def check_device(device: Optional[str]) -> Optional[str]:
    """``None`` (the backend's default), ``cpu``, ``cuda``, ``cuda:N``, ``gpu`` or ``gpu:N``.

    Only the spelling is checked here; whether that GPU exists is the backend's call."""
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE_RE.match(device.lower()):
        raise UsageError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    return device.lower()


def check_model_name(model_name: Any, what: str = "model name", example: str = "124M",
                     path_flag: str = "--model_dir for a path") -> str:
    """A model name (or, with ``what="run name"``, a run name) must be one folder name: no path
    separators, not ``.`` or ``..``. ``example`` and ``path_flag`` finish the error's hint."""
    if not isinstance(model_name, str) or not model_name:
        raise UsageError(f"{what} must be a name such as {example}, got {model_name!r}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in model_name for s in seps) or model_name in (".", "..") or "\0" in model_name:
        raise UsageError(f"invalid {what} {model_name!r}: give a name such as {example} "
                         f"(use {path_flag})")
    return model_name


def check_folder(flag: str, path: Any) -> str:
    """``path`` (``~`` expanded) if it is an existing folder; else one line: no such folder, or a
    file where a folder is wanted."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{flag} must be a folder path, got {path!r}")
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: " + ("is a file, not a folder" if os.path.exists(path) else "no such folder"))
    return path


def check_text_or_file(text: Any, file: Any, nothing: str) -> None:
    """A command's text argument and its ``--file``: exactly one of them, and ``--file`` a path.
    ``nothing`` is the error when neither is given."""
    if text is not None and file is not None:
        raise UsageError("give either a text or --file, not both")
    if text is None and file is None:
        raise UsageError(nothing)
    if file is not None and (not isinstance(file, str) or not file):
        raise UsageError(f"--file must be a path, got {file!r}")


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> Optional[int]:
    """``value`` as an int ``>= minimum`` (``None`` allowed if ``allow_none``), else UsageError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, high: Optional[float] = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite number in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
        or value in (float("inf"), float("-inf"))
    if not bad:
        bad = value <= low if low_open else value < low
        bad = bad or (high is not None and value > high)
    if bad:
        rng = f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else \
            f"{'>' if low_open else '>='} {low:g}"
        raise UsageError(f"{name} must be a number {rng}, got {value!r}")
    return float(value)


def check_flag(name: str, value: Any) -> bool:
    """A boolean flag (``--name`` / ``--noname``)."""
    if not isinstance(value, bool):
        raise UsageError(f"--{name} is a switch (--{name} or --no{name}), got {value!r}")
    return value


@dataclass
class SamplingFlags:
    """The checked sampling flags both CLIs share."""

    backend: str
    device: Optional[str]
    dtype: str
    seed: Optional[int]
    nsamples: int
    batch_size: int
    length: Optional[int]
    temperature: float
    top_k: int
    top_p: float
    top_p_mode: str
    stop_at_endoftext: bool
    download: bool

    def sampling_kwargs(self) -> dict:
        """Keyword arguments for ``GPT2Model.generate`` (besides context, length, seeds, batch)."""
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                    top_p_mode=self.top_p_mode, stop_at_endoftext=self.stop_at_endoftext)


def check_sampling_flags(*, backend: Any, device: Any, seed: Any, nsamples: Any, batch_size: Any,
                         length: Any, temperature: Any, top_k: Any, top_p: Any, top_p_mode: Any,
                         stop_at_endoftext: Any, download: Any, min_nsamples: int,
                         dtype: Any = DEFAULT_DTYPE) -> SamplingFlags:
    """Check every sampling flag (one-line :class:`UsageError` for the first bad one)."""
    check_backend(backend)
    if batch_size is None:  # the original accepted None for 1
        batch_size = 1
    if top_p_mode not in TOP_P_MODES:
        raise UsageError(f"unknown top_p_mode {top_p_mode!r}: choose one of {', '.join(TOP_P_MODES)}")
    flags = SamplingFlags(
        backend=backend,
        device=check_device(device),
        dtype=check_dtype(dtype),
        seed=check_int("seed", seed, 0, allow_none=True),
        nsamples=check_int("nsamples", nsamples, min_nsamples),
        batch_size=check_int("batch_size", batch_size, 1),
        length=check_int("length", length, 0, allow_none=True),
        temperature=check_number("temperature", temperature, 0.0),
        top_k=check_int("top_k", top_k, 0),
        top_p=check_number("top_p", top_p, 0.0, 1.0, low_open=True),
        top_p_mode=top_p_mode,
        stop_at_endoftext=check_flag("stop_at_endoftext", stop_at_endoftext),
        download=check_flag("download", download),
    )
    return flags


def default_length(n_ctx: int, length: Optional[int], unconditional: bool) -> int:
    """``length`` checked against the context (as the original: at most ``n_ctx``); ``None`` is
    the original's default: ``n_ctx // 2`` for prompted samples, ``n_ctx`` for unconditional ones.
    """
    if length is None:
        return n_ctx if unconditional else n_ctx // 2
    if length > n_ctx:
        raise UsageError(f"length {length} is longer than the model's context (n_ctx={n_ctx})")
    return length


def fits_context(n_prompt: int, length: int, n_ctx: int) -> bool:
    """Whether ``n_prompt`` tokens plus ``length`` new ones fit the context.

    The last new token is never fed back into the model, so up to ``n_ctx + 1`` tokens fit."""
    return n_prompt >= 1 and n_prompt + max(length, 1) - 1 <= n_ctx
