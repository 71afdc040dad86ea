"""Shared plumbing for the ``fire`` command-line tools in ``scripts/``.

Every CLI wraps its entry point with :func:`run` (:mod:`.entry`; the error types are in
:mod:`.errors`), which first checks the command line against the command's signature (:mod:`.argv`: ``-h``/``--help`` on stdout, an unknown flag or
an argument too many is an error before anything runs). Errors that are the user's (bad
flags, missing or corrupt model files, network failures) print one line on stderr and exit with
status 2, with no traceback. Anything else is a bug and keeps its traceback. Ctrl-C exits with
status 130 and a closed output pipe (``... | head``) with 141, both without a traceback.

The sampling CLIs (``interactive_conditional_samples``, ``generate_unconditional_samples``) share
everything else here as well: flag checks (:mod:`.flags`, all done before a model is loaded, so bad
input fails fast), model-directory resolution and the missing-model download offer
(:mod:`.models`), and :func:`print_samples` (:mod:`.output`), which generates in batches and
streams the text of each batch's first row token by token.

Every name is re-exported here (``from gpt2_common import cli; cli.run(...)``). Only the standard
library is imported at package import: ``--help`` and flag errors stay fast, and the backend
(TensorFlow or PyTorch) is imported only by :meth:`Loaded.load`.
"""
from __future__ import annotations

from ..constants import (BACKENDS, CHECKPOINT_FILES, DEFAULT_MODEL, DTYPES, EOT_TOKEN,  # noqa: F401
                         MODEL_FILES, MODEL_NAMES, OLD_MODEL_NAMES, TOP_P_MODES, VOCAB_FILES)
from .argv import check_command, help_text
from .entry import run
from .errors import UsageError, fail, user_errors
from .flags import (SamplingFlags, check_backend, check_device, check_dtype, check_flag, check_folder, check_int,
                    check_model_name, check_number, check_sampling_flags, check_text_or_file, default_length,
                    fits_context)
from .models import (PLACE_HINT, Loaded, ensure_model_files, missing_model_files, missing_model_message,
                     prepare_model, resolve_model_dir)
from .output import (PROMPT, StreamDecoder, cut_at_endoftext, isatty, print_samples, random_base_seed,
                     read_prompts, sample_header, sample_seeds, setup_text_streams)

__all__ = [
    "check_command", "help_text", "UsageError", "fail", "run", "user_errors",
    "SamplingFlags", "check_backend", "check_device", "check_dtype", "check_flag", "check_folder", "check_int",
    "check_model_name", "check_number", "check_sampling_flags", "check_text_or_file", "default_length",
    "fits_context",
    "PLACE_HINT", "Loaded", "ensure_model_files", "missing_model_files", "missing_model_message",
    "prepare_model", "resolve_model_dir",
    "PROMPT", "StreamDecoder", "cut_at_endoftext", "isatty", "print_samples", "random_base_seed",
    "read_prompts", "sample_header", "sample_seeds", "setup_text_streams",
]
