"""Output and input of the sampling CLIs: :func:`print_samples` generates in batches and streams
the text of each batch's first row token by token (:class:`StreamDecoder`), the per-sample seeds,
the original's prompt loop (:func:`read_prompts`) and terminal helpers. Standard library only at
import (numpy is imported inside the seed functions).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, TextIO

from ..constants import EOT_TOKEN
from .errors import UsageError
from .flags import fits_context


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
    Input that is not UTF-8 is refused (:class:`UsageError` naming the byte offset), as every other
    reader of text does (:mod:`gpt2_common.utf8`).
    """
    from ..utf8 import describe

    stdin, out = stdin or sys.stdin, out or sys.stdout
    tty = stdin is sys.stdin and out is sys.stdout and isatty(stdin) and isatty(out)
    raw = getattr(stdin, "buffer", None) if stdin is sys.stdin and not tty else None
    offset = 0  # bytes of stdin read so far (a pipe or file: read as bytes, decoded line by line)
    while True:
        if tty:
            try:
                line = input(prompt)
            except EOFError:
                out.write("\n")
                out.flush()
                return
            except UnicodeDecodeError as e:
                raise UsageError(f"prompt: {describe(e)} of the line") from None
        else:
            out.write(prompt)
            out.flush()
            if raw is not None:
                data = raw.readline()
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UsageError(f"stdin: {describe(e, offset)}") from None
                offset += len(data)
            else:
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
    """Never die on a character the terminal's encoding lacks (input that is not UTF-8 is refused
    by its reader instead, naming the byte: :mod:`gpt2_common.utf8`)."""
    for stream in (sys.stdout,):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError, OSError):
            pass
