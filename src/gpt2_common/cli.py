"""Shared plumbing for the ``fire`` command-line tools in ``scripts/``.

Every CLI wraps its entry point with :func:`run`: errors that are the user's (bad flags, missing or
corrupt model files, network failures) print one line on stderr and exit with status 2, with no
traceback. Anything else is a bug and keeps its traceback. Ctrl-C exits with status 130 and a
closed output pipe (``... | head``) with 141, both without a traceback.

The sampling CLIs (``interactive_conditional_samples``, ``generate_unconditional_samples``) share
everything else here as well: flag checks (all done before a model is loaded, so bad input fails
fast), model-directory resolution (``--model_name``/``--models_dir`` or ``--model_dir``), the
missing-model download offer, and :func:`print_samples`, which generates in batches and streams
the text of each batch's first row token by token.

Only the standard library is imported at module level: ``--help`` and flag errors stay fast, and
the backend (TensorFlow or PyTorch) is imported only by :func:`load_sampling_model`.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, NoReturn, Optional, Sequence, TextIO, Tuple

from .constants import (BACKENDS, CHECKPOINT_FILES, DTYPES, EOT_TOKEN, MODEL_FILES,  # noqa: F401
                        MODEL_NAMES, OLD_MODEL_NAMES, TOP_P_MODES, VOCAB_FILES)

PLACE_HINT = "checkpoint, encoder.json, hparams.json, model.ckpt.* and vocab.bpe"

_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(:\d+)?$")


class UsageError(Exception):
    """An error caused by the user's input; reported as one line, exit status 2."""


def user_errors() -> tuple:
    """Exception types that are reported as one line instead of a traceback."""
    from .checkpoint import CheckpointError
    from .download import DownloadError
    from .hparams import HParamsError
    from .interface import ModelError
    from .sampling import SamplingError

    errors = [UsageError, HParamsError, CheckpointError, DownloadError, ModelError, SamplingError,
              FileNotFoundError]
    try:  # the encoder's own error type, where it has one
        from . import encoder

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


# ------------------------------------------------------------------------------------------------
# Flag checks (before anything is loaded)
# ------------------------------------------------------------------------------------------------

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


def check_model_name(model_name: Any) -> str:
    """A model name must be one folder name: no path separators, not ``.`` or ``..``."""
    if not isinstance(model_name, str) or not model_name:
        raise UsageError(f"model name must be a name such as 124M, got {model_name!r}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in model_name for s in seps) or model_name in (".", "..") or "\0" in model_name:
        raise UsageError(f"invalid model name {model_name!r}: give a name such as 124M "
                         "(use --model_dir for a path)")
    return model_name


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
        rng = f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else f">= {low:g}"
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
                         dtype: Any = "float32") -> SamplingFlags:
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


# ------------------------------------------------------------------------------------------------
# Model directories
# ------------------------------------------------------------------------------------------------

def resolve_model_dir(model_name: Any, models_dir: Any, model_dir: Any = None) -> Tuple[str, Optional[str]]:
    """``(directory, downloadable name or None)`` for ``--model_dir`` or ``--model_name``/``--models_dir``.

    A released name (124M, 355M, 774M, 1558M; the old 117M/345M map to 124M/355M unless a folder
    with the old name exists) can be downloaded when missing. Any other name must be an existing
    folder in ``models_dir`` (e.g. a fine-tuned model). ``--model_dir`` is used as given.
    """
    if model_dir is not None:
        if not isinstance(model_dir, str) or not model_dir:
            raise UsageError(f"--model_dir must be a path, got {model_dir!r}")
        return os.path.expanduser(os.path.expandvars(model_dir)), None
    if not isinstance(models_dir, str) or not models_dir:
        raise UsageError(f"--models_dir must be a path, got {models_dir!r}")
    models_dir = os.path.expanduser(os.path.expandvars(models_dir))
    name = check_model_name(model_name)
    if name in OLD_MODEL_NAMES and not os.path.isdir(os.path.join(models_dir, name)):
        name = OLD_MODEL_NAMES[name]
    path = os.path.join(models_dir, name)
    if name in MODEL_NAMES:
        return path, name
    if os.path.isdir(path):
        return path, None
    raise UsageError(f"unknown model name {model_name!r}: choose one of {', '.join(MODEL_NAMES)}, "
                     f"a folder in {models_dir}, or give --model_dir")


def missing_model_files(model_dir: str) -> List[str]:
    """The files of the original layout that ``model_dir`` lacks (``[]`` when it looks complete).

    The checkpoint counts as present when there is a ``checkpoint`` file or any ``*.index``
    (fine-tuned models use other prefixes); whether it reads is the checkpoint reader's call.
    A file with a ``.part`` (an interrupted download) is missing, so the download resumes, and so
    is the data of a ``model.ckpt.index`` without any ``model.ckpt.data-*`` (a download stopped
    between the two).
    A Hugging Face folder (``config.json``) is left to its own reader's checks.
    """
    if not os.path.isdir(model_dir):
        return list(MODEL_FILES)
    from .hf import hf_folder

    if hf_folder(model_dir) is not None:
        return []
    have = set(os.listdir(model_dir))
    missing = [f for f in ("hparams.json",) + VOCAB_FILES if f not in have]
    if "checkpoint" not in have and not any(f.endswith(".index") for f in have):
        missing += list(CHECKPOINT_FILES)
    missing += [f for f in MODEL_FILES if f + ".part" in have and f not in have]
    if "model.ckpt.index" in have and not any(f.startswith("model.ckpt.data-") and not f.endswith(".part")
                                              for f in have):
        missing += [f for f in CHECKPOINT_FILES if f.startswith("model.ckpt.data-")]
    return sorted(set(missing))


def missing_model_message(model_dir: str, name: Optional[str], missing: Sequence[str],
                          reason: Optional[str] = None) -> str:
    """The one line that says what to place where."""
    what = "model directory not found" if not os.path.isdir(model_dir) else \
        f"model files missing ({', '.join(missing)})"
    if reason:
        what += f" and the download failed ({reason})"
    hint = f" (or run download_model {name})" if name else ""
    return f"{what}: place {PLACE_HINT} in {model_dir}{hint}"


def ensure_model_files(model_dir: str, name: Optional[str], download: bool = True,
                       err: Optional[TextIO] = None) -> None:
    """Make sure ``model_dir`` has the model files, downloading a released model if allowed.

    A failed or interrupted download keeps what :func:`gpt2_common.download.download_model`
    keeps: complete (checked) files and a ``.part`` file, which the next run resumes (folders are
    removed only if they were created and stayed empty). A one-line :class:`UsageError` says what
    to place where.
    """
    err = err or sys.stderr
    missing = missing_model_files(model_dir)
    if not missing:
        return
    if name is None or not download:
        raise UsageError(missing_model_message(model_dir, name, missing))
    from .download import DownloadError, download_model

    models_dir = os.path.dirname(model_dir) or "."
    print(f"model {name} not found in {model_dir}; downloading it ...", file=err, flush=True)
    try:
        download_model(name, models_dir, files=tuple(missing), progress=isatty(err))
    except DownloadError as e:
        raise UsageError(missing_model_message(model_dir, name, missing, _one_line(e))) from None
    still = missing_model_files(model_dir)
    if still:
        raise UsageError(missing_model_message(model_dir, name, still))


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


@dataclass
class Loaded:
    """A checked model directory: its hyperparameters, encoder and (lazy) model."""

    model_dir: str
    hparams: Any
    encoder: Any
    length: int
    flags: SamplingFlags

    def load(self):
        """Load the weights with the chosen backend (imports TensorFlow or PyTorch)."""
        from .interface import load_model

        return load_model(self.flags.backend, self.model_dir, device=self.flags.device,
                          dtype=self.flags.dtype)


def prepare_model(flags: SamplingFlags, *, model_name: Any, models_dir: Any, model_dir: Any,
                  unconditional: bool) -> Loaded:
    """Resolve and check the model directory (downloading if allowed), read ``hparams.json`` and
    the vocabulary, and settle ``length``; the weights are loaded later by :meth:`Loaded.load`."""
    from .encoder import load_encoder
    from .hparams import load_hparams

    path, name = resolve_model_dir(model_name, models_dir, model_dir)
    ensure_model_files(path, name, flags.download)
    hp = load_hparams(path)
    length = default_length(hp.n_ctx, flags.length, unconditional)
    enc = load_encoder(path)
    return Loaded(path, hp, enc, length, flags)


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

class StreamDecoder:
    """Token ids in, printable text out, one token at a time.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; the encoder then decodes the
    unfinished bytes to U+FFFD. So tokens are held back while their text ends in U+FFFD, and
    released (decoded together) once it does not. :meth:`finish` releases the rest, so the
    concatenated output is exactly ``decode(all tokens)``.
    """

    def __init__(self, decode: Callable[[List[int]], str]) -> None:
        self._decode = decode
        self.tokens: List[int] = []
        self._pending: List[int] = []
        self.text = ""  # emitted so far

    def push(self, token: int) -> str:
        """Add one token; return the text that is now final (maybe ``""``)."""
        token = int(token)
        self.tokens.append(token)
        self._pending.append(token)
        piece = self._decode(self._pending)
        if piece.endswith("\ufffd"):
            return ""
        self._pending = []
        self.text += piece
        return piece

    def finish(self) -> str:
        """Return whatever is still held back (possibly with U+FFFD for broken bytes)."""
        full = self._decode(self.tokens)
        rest = full[len(self.text):] if full.startswith(self.text) else self._decode(self._pending)
        self._pending = []
        self.text += rest
        return rest


def sample_header(number: int) -> str:
    """The original's sample separator line."""
    return "=" * 40 + " SAMPLE " + str(number) + " " + "=" * 40


def sample_seeds(base: int, prompt_index: int, first: int, count: int) -> List[int]:
    """One seed per sample: sample ``k`` (0-based) of prompt ``p`` draws from a generator seeded by
    ``(base, p, k)``, so the text does not depend on ``batch_size``."""
    import numpy as np

    return [int(np.random.SeedSequence([base, prompt_index, k]).generate_state(1, np.uint64)[0])
            for k in range(first, first + count)]


def random_base_seed() -> int:
    """A fresh seed for runs without ``--seed``."""
    import numpy as np

    return int(np.random.SeedSequence().entropy % (2**63))


def cut_at_endoftext(tokens: Sequence[int]) -> List[int]:
    """The tokens before the first ``<|endoftext|>``."""
    out = []
    for t in tokens:
        if int(t) == EOT_TOKEN:
            break
        out.append(int(t))
    return out


def print_samples(model: Any, encoder: Any, context: Optional[Sequence[int]], *, nsamples: int,
                  batch_size: int, length: int, seeds: Callable[[int, int], List[int]],
                  out: Optional[TextIO] = None, stream: bool = True, **sampling: Any) -> int:
    """Generate ``nsamples`` samples (``0``: forever) in batches of at most ``batch_size`` and print
    each as the original did: :func:`sample_header`, then the text.

    The first row of each batch is streamed (printed as its tokens arrive, flushed after each);
    the other rows are printed whole when the batch is done. The last batch is only as large as
    needed. ``seeds(first, count)`` gives the per-sample seeds. ``context`` ``None`` starts from
    ``<|endoftext|>``. With ``stop_at_endoftext`` a sample ends before its first
    ``<|endoftext|>``. Returns the number of samples printed.
    """
    out = out or sys.stdout
    stop = bool(sampling.get("stop_at_endoftext"))
    n_ctx = model.hparams.n_ctx
    n_prompt = len(context) if context else 1
    if not fits_context(n_prompt, length, n_ctx):
        raise UsageError(f"prompt of {n_prompt} tokens + length {length} does not fit the model's "
                         f"context of {n_ctx} tokens")
    done = 0
    while nsamples == 0 or done < nsamples:
        n = batch_size if nsamples == 0 else min(batch_size, nsamples - done)
        out.write(sample_header(done + 1) + "\n")
        out.flush()
        live = StreamDecoder(encoder.decode)
        ended = [False]

        def callback(step: int, tokens: Any) -> None:
            if not stream or ended[0]:
                return
            t = int(tokens[0])
            if stop and t == EOT_TOKEN:
                ended[0] = True
                return
            piece = live.push(t)
            if piece:
                out.write(piece)
                out.flush()

        rows = model.generate(list(context) if context else None, length, batch_size=n,
                              seed=seeds(done, n), callback=callback,
                              **sampling)
        for i in range(n):
            tokens = cut_at_endoftext(rows[i]) if stop else [int(t) for t in rows[i]]
            if i == 0 and stream:
                if live.tokens != tokens:  # cannot happen; never print a different text
                    raise RuntimeError("streamed tokens differ from the returned sample")
                out.write(live.finish() + "\n")
            else:
                if i:
                    out.write(sample_header(done + i + 1) + "\n")
                out.write(encoder.decode(tokens) + "\n")
            out.flush()
        done += n
    return done


PROMPT = "Model prompt >>> "


def read_prompts(stdin: Optional[TextIO] = None, out: Optional[TextIO] = None,
                 prompt: str = PROMPT) -> Any:
    """Yield prompts as the original loop read them: ask with ``prompt``, re-ask on an empty line
    ("Prompt should not be empty!"), stop at end of input (after a newline, so the output ends
    cleanly). Works on pipes and files as well as terminals (where ``input()`` adds line editing).
    """
    stdin, out = stdin or sys.stdin, out or sys.stdout
    tty = stdin is sys.stdin and out is sys.stdout and isatty(stdin) and isatty(out)
    while True:
        if tty:
            try:
                line = input(prompt)
            except EOFError:
                out.write("\n")
                out.flush()
                return
        else:
            out.write(prompt)
            out.flush()
            line = stdin.readline()
            if not line:
                out.write("\n")
                out.flush()
                return
            line = line[:-1] if line.endswith("\n") else line
            line = line[:-1] if line.endswith("\r") else line
        if not line:
            out.write("Prompt should not be empty!\n")
            continue
        yield line


def isatty(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for closed or odd streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def setup_text_streams() -> None:
    """Never die on a character the terminal's encoding lacks, or on undecodable input bytes."""
    for stream in (sys.stdout, sys.stdin):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError, OSError):
            pass
