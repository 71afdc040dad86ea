"""Is a downloaded file what its name promises? Checked before it gets that name.

:func:`check_download` is called by :mod:`gpt2_common.download` on the complete ``.part`` file:

* ``encoder.json`` and ``vocab.bpe`` must have the SHA-256 of GPT-2's released files
  (:data:`~gpt2_common.constants.VOCAB_SHA256`);
* ``hparams.json`` must pass :func:`~gpt2_common.hparams.load_hparams`, other ``.json`` files
  must parse, and each non-empty line of a ``.jsonl`` file must parse;
* ``checkpoint`` must name a checkpoint (``model_checkpoint_path: "..."``);
* ``*.index`` must pass the checkpoint reader's index checks (table checksums, entries), and a
  ``*.data-*`` file every tensor's checks against the index already in the folder (sizes, dtypes,
  crc32c; read one tensor at a time, so memory stays at the largest tensor). Without an index
  there the data file cannot be checked and is accepted.

Other files (``model.ckpt.meta``, which nothing here reads) are not checked.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

from .constants import VOCAB_SHA256


class InvalidFile(Exception):
    """A downloaded file that is not what its name promises (one-line message)."""


def check_download(name: str, path: str, folder: str) -> None:
    """Raise :class:`InvalidFile` unless ``path`` (to be saved as ``folder/name``) is valid."""
    if name in VOCAB_SHA256:
        _check_sha256(name, path)
    elif name == "hparams.json":
        from .hparams import HParamsError, load_hparams

        try:
            load_hparams(path)
        except HParamsError as e:
            raise InvalidFile(str(e).replace(f"{path}: ", "", 1)) from None
    elif name.endswith(".json"):
        _check_json_lines(path, whole=True)
    elif name.endswith(".jsonl"):
        _check_json_lines(path, whole=False)
    elif name == "checkpoint":
        with open(path, "rb") as f:
            if b'model_checkpoint_path: "' not in f.read(1 << 16):
                raise InvalidFile("not a checkpoint state file (no 'model_checkpoint_path: \"...\"' line)")
    elif name.endswith(".index") or ".data-" in name:
        _check_checkpoint(name, path, folder)


def _check_sha256(name: str, path: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != VOCAB_SHA256[name]:
        raise InvalidFile(f"SHA-256 {digest.hexdigest()[:16]}... is not that of GPT-2's {name} "
                          f"({VOCAB_SHA256[name][:16]}...): wrong or damaged file")


def _check_json_lines(path: str, whole: bool) -> None:
    with open(path, "rb") as f:
        parts = [f.read()] if whole else f
        for n, part in enumerate(parts, start=1):
            if not whole and not part.strip():
                continue
            try:
                json.loads(part)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                where = "" if whole else f"line {n}: "
                raise InvalidFile(f"{where}not valid JSON ({str(e).splitlines()[0]})") from None


def _check_checkpoint(name: str, path: str, folder: str) -> None:
    """Run the reader on a temporary folder of links: the index and, for data, the new file."""
    from .checkpoint import CheckpointError, list_variables, read_checkpoint

    is_index = name.endswith(".index")
    prefix_name = name[:-len(".index")] if is_index else name.split(".data-")[0]
    index = path if is_index else os.path.join(folder, prefix_name + ".index")
    if not os.path.isfile(index):
        return  # a data file alone: nothing to check it against
    with tempfile.TemporaryDirectory(prefix=".check-", dir=folder) as tmp:
        _link(index, os.path.join(tmp, prefix_name + ".index"))
        if not is_index:
            _link(path, os.path.join(tmp, name))
        prefix = os.path.join(tmp, prefix_name)
        try:
            names = list_variables(prefix)
            if not is_index:
                for n in names:  # one tensor at a time
                    read_checkpoint(prefix, [n])
        except CheckpointError as e:
            raise InvalidFile(str(e).replace(prefix, os.path.join(folder, prefix_name))) from None


def _link(src: str, dst: str) -> None:
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:  # no symlinks here (e.g. Windows without the privilege): a hard link
        os.link(src, dst)
