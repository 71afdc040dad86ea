"""The run folder: a model folder in the original layout, plus what resuming needs.

    <checkpoint_dir>/<run_name>/
        hparams.json encoder.json vocab.bpe    as a released model folder
        checkpoint                            model_checkpoint_path: "model-<step>" (the latest)
        model-<step>.index, .data-00000-of-00001
        train-<step>.npz                      optimizer state (m/<name>, v/<name>), framework RNG
                                              state, and a JSON record (step, sampler position ...)
        metrics.jsonl                         one line per step (loss, lr, grad norm, tokens/s, val loss)
        samples/step-<step>.txt

``load_model``, every CLI and TensorFlow's own checkpoint reader read it as a model. A save writes
``train-<step>.npz`` first and the checkpoint after it; the ``checkpoint`` pointer is renamed into
place last, so a crash mid-save leaves the previous save as the latest. Older saves beyond the
last ``keep`` are removed only after that.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..cli import UsageError
from ..checkpoint import read_checkpoint, resolve_checkpoint_prefix, write_checkpoint
from ..constants import VOCAB_FILES
from ..hparams import HParams, load_hparams, save_hparams
from ..safeio import can_write_in, file_mode, open_nofollow
from ..weights import expected_shapes

_MODEL_RE = re.compile(r"^model-(\d+)\.index$")
_TEMP_RE = re.compile(r"^\.(train-\d+\.npz|model-\d+\.(data|index|checkpoint)|metrics\.jsonl)\..+\.tmp$")
"""The temporary names of this module's and ``write_checkpoint``'s writes in a run folder."""


class RunError(UsageError):
    """A run folder that cannot be used as asked (one line, exit status 2 in the CLIs)."""


def initial_weights(hp: HParams, seed: int = 0) -> Dict[str, np.ndarray]:
    """GPT-2's initialisation for training from scratch: matrices and embeddings N(0, 0.02) (the
    residual projections ``c_proj`` scaled by 1/sqrt(2 n_layer)), position embeddings N(0, 0.01),
    biases 0, gains 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(hp).items():
        leaf = name.rsplit("/", 1)[1]
        if leaf in ("g", "b"):
            a = np.full(shape, 1.0 if leaf == "g" else 0.0)
        else:
            std = 0.01 if leaf == "wpe" else 0.02 / (math.sqrt(2 * hp.n_layer) if "/c_proj/" in name else 1)
            a = std * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def _atomic_write(path: str, write) -> None:
    parent = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _reason(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return (text.strip().splitlines() or [type(e).__name__])[0].split(". ")[0]


class RunFolder:
    """Saves and restores one run (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path

    # ---- reading ----
    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.path, "checkpoint"))

    def steps(self) -> List[int]:
        """The saved steps, oldest first."""
        if not os.path.isdir(self.path):
            return []
        return sorted(int(m.group(1)) for f in os.listdir(self.path) if (m := _MODEL_RE.match(f)))

    def latest(self) -> Optional[Tuple[str, int]]:
        """``(checkpoint prefix, step)`` of the latest save, or None."""
        if not self.exists():
            return None
        prefix = resolve_checkpoint_prefix(self.path)
        m = re.match(r"^model-(\d+)$", os.path.basename(prefix))
        return prefix, int(m.group(1)) if m else 0

    def hparams(self) -> Optional[HParams]:
        path = os.path.join(self.path, "hparams.json")
        return load_hparams(path) if os.path.isfile(path) else None

    def check_writable(self) -> None:
        """Refuse, before anything is loaded, a run folder that cannot be created or written: a
        file where it or one of its parents should be, or a folder this process may not write."""
        path = os.path.abspath(self.path)
        here = path
        while not os.path.isdir(here):
            if os.path.lexists(here):
                raise RunError(f"{here} is a file, not a folder: choose another --checkpoint_dir or --run_name")
            here = os.path.dirname(here)
        if not can_write_in(here):
            raise RunError(f"cannot write in {here} (permission denied): choose another --checkpoint_dir")

    def check_compatible(self, hp: HParams) -> None:
        """Refuse a run folder made with other hyperparameters."""
        have = self.hparams()
        if have is not None and have != hp:
            diff = ", ".join(f"{k} {getattr(have, k)} there vs {getattr(hp, k)} now"
                             for k in hp.to_dict() if getattr(have, k) != getattr(hp, k))
            raise RunError(f"{self.path} was made with other hyperparameters ({diff}): "
                           "choose another --run_name or --checkpoint_dir")

    def load_train_state(self, step: int, shapes: Optional[Mapping[str, tuple]] = None) -> Optional[Dict[str, Any]]:
        """``{"record": {...}, "optimizer": {...}, "rng": {...}}`` saved with ``step``, or None.

        A damaged or foreign file (not a zip of arrays, no JSON record, optimizer moments that are
        not among ``shapes``' variables) is a :class:`RunError` naming it and saying how to go on."""
        path = os.path.join(self.path, f"train-{step}.npz")
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path) as z:
                record = json.loads(str(z["record"]))
                optimizer = {k[4:]: z[k] for k in z.files if k.startswith("opt/")}
                rng = {k[4:]: z[k] for k in z.files if k.startswith("rng/")}
            if not isinstance(record, dict) or not isinstance(record.get("step", step), int):
                raise ValueError("its record is not a training record")
            for k, a in optimizer.items():
                kind, _, name = k.partition("/")
                if kind not in ("m", "v") or (shapes is not None and tuple(a.shape) != shapes.get(name)):
                    raise ValueError(f"optimizer entry {k!r} is not a moment of this model's variables")
        except Exception as e:  # zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError ...
            raise RunError(f"{path}: damaged or not a training state ({_reason(e)}): " + self._resume_hint(step)) from None
        return {"record": record, "optimizer": optimizer, "rng": rng}

    def _resume_hint(self, step: int) -> str:
        earlier = [s for s in self.steps() if s < step and os.path.isfile(os.path.join(self.path, f"train-{s}.npz"))]
        go_back = (f"to resume from an earlier save, write model_checkpoint_path: \"model-{earlier[-1]}\" in "
                   f"{os.path.join(self.path, 'checkpoint')}; ") if earlier else ""
        return (f"{go_back}to resume from model-{step} with a fresh optimizer state, remove the file; "
                "or start again with --restore_from fresh")

    # ---- writing ----
    def prepare(self, hp: HParams, vocab_dir: str) -> None:
        """Create the folder with ``hparams.json`` and the vocabulary (once); remove what a
        killed earlier process left under temporary names."""
        os.makedirs(self.path, exist_ok=True)
        self.remove_temporaries()
        hparams = os.path.join(self.path, "hparams.json")
        if not os.path.isfile(hparams) or os.path.islink(hparams):
            save_hparams(hp, self.path)
        for f in VOCAB_FILES:
            dst = os.path.join(self.path, f)
            if not os.path.isfile(dst) or os.path.islink(dst):
                with open(os.path.join(vocab_dir, f), "rb") as src, open_nofollow(dst, "wb") as out:
                    shutil.copyfileobj(src, out)

    def save(self, step: int, weights: Mapping[str, np.ndarray], optimizer: Mapping[str, np.ndarray],
             rng: Mapping[str, np.ndarray], record: Mapping[str, Any], keep: int) -> str:
        """Save step ``step`` atomically; keep the last ``keep`` saves (0: all)."""
        self.remove_temporaries()
        arrays = {"record": np.array(json.dumps(dict(record)))}
        arrays.update({"opt/" + k: v for k, v in optimizer.items()})
        arrays.update({"rng/" + k: v for k, v in rng.items()})
        _atomic_write(os.path.join(self.path, f"train-{step}.npz"), lambda f: np.savez(f, **arrays))
        prefix = write_checkpoint(self.path, weights, prefix=f"model-{step}")
        if keep:
            older = [s for s in self.steps() if s != step]
            for s in older[:max(0, len(older) - (keep - 1))]:
                self.remove(s)
        return prefix

    def remove(self, step: int) -> None:
        for f in (f"model-{step}.index", f"model-{step}.data-00000-of-00001", f"train-{step}.npz"):
            p = os.path.join(self.path, f)
            if os.path.exists(p):
                os.remove(p)

    def remove_temporaries(self) -> None:
        """Remove the run's stale temporary files (``.train-<step>.npz.*.tmp``,
        ``.model-<step>.data.*.tmp`` ...: a save killed half-way); only one process writes a run."""
        if not os.path.isdir(self.path):
            return
        for f in os.listdir(self.path):
            if _TEMP_RE.match(f):
                try:
                    os.remove(os.path.join(self.path, f))
                except FileNotFoundError:
                    pass

    def remove_all_saves(self) -> None:
        """``--restore_from fresh`` on an existing run: its old saves and metrics go."""
        for s in self.steps():
            self.remove(s)
        for f in ("checkpoint", "metrics.jsonl"):
            p = os.path.join(self.path, f)
            if os.path.exists(p):
                os.remove(p)


def load_weights_at(prefix_or_dir: str, hp: HParams) -> Dict[str, np.ndarray]:
    """The model variables of a checkpoint prefix or model folder."""
    return read_checkpoint(prefix_or_dir, names=list(expected_shapes(hp)))


class Metrics:
    """``metrics.jsonl``: one JSON object per step. Resuming at step ``s`` drops lines after it."""

    def __init__(self, path: str, resume_step: int) -> None:
        self.path = path
        kept = []
        if os.path.isfile(path) or os.path.islink(path):
            with open_nofollow(path, "r") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if rec.get("step", 0) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            _atomic_write(path, lambda f: f.write("".join(kept).encode("utf-8")))
        self.records = [json.loads(x) for x in kept]

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))
        with open_nofollow(self.path, "a") as f:
            f.write(json.dumps(dict(record)) + "\n")


def plot_metrics(records: List[Mapping[str, Any]], path: str, title: str = "") -> None:
    """A PNG of the training (and validation) loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records if "loss" in r]
    ax.plot(steps, [r["loss"] for r in records if "loss" in r], label="train", lw=1)
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
