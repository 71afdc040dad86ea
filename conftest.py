"""Shared pytest fixtures: the real GPT-2 vocabulary and small random checkpoints in the original format."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # tests run from a checkout even before `pip install -e`

from gpt2_common.hparams import HParams  # noqa: E402

VOCAB_FILES = ("encoder.json", "vocab.bpe")

# Small configs with the real vocabulary size (so <|endoftext|> = 50256 exists) and weight scales
# chosen so logits have a std around 1: top-1/top-2 gaps then dwarf float noise and argmax is stable.
CONFIGS = {
    "tiny": (HParams(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2), 0.3),
    "mid": (HParams(n_vocab=50257, n_ctx=256, n_embd=256, n_head=8, n_layer=4), 0.06),
    "124M": (HParams(), 0.02),
}


def _vocab_dir() -> Optional[Path]:
    env = os.environ.get("GPT2_VOCAB_DIR")
    if env and all((Path(env) / f).is_file() for f in VOCAB_FILES):
        return Path(env)
    cache = Path(os.environ.get("GPT2_CACHE_DIR", Path.home() / ".cache" / "gpt2-toolkit"))
    if all((cache / "124M" / f).is_file() for f in VOCAB_FILES):
        return cache / "124M"
    try:  # the project's own downloader
        from gpt2_common.download import download_model

        return Path(download_model("124M", str(cache), files=VOCAB_FILES, progress=False, retries=1))
    except Exception:
        return None


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """Directory with the real GPT-2 ``encoder.json`` and ``vocab.bpe``.

    From ``GPT2_VOCAB_DIR`` (CI sets it to ../shared/gpt2-vocab), else downloaded with the
    project's downloader into ``~/.cache/gpt2-toolkit``; skipped when neither is possible.
    """
    d = _vocab_dir()
    if d is None:
        pytest.skip("real GPT-2 vocabulary unavailable: set GPT2_VOCAB_DIR to a folder with "
                    "encoder.json and vocab.bpe (or allow downloads)")
    return d


@pytest.fixture(scope="session")
def make_model_dir(tmp_path_factory, request) -> Callable[..., Path]:
    """Factory: ``make_model_dir("tiny", seed=0, vocab=True)`` -> a model directory in the original
    layout (``hparams.json``, ``checkpoint``, ``model.ckpt.*``, optionally the real vocabulary),
    with random weights. Cached per (config, seed, vocab) for the session."""
    from gpt2_common.weights import random_weights, save_model

    cache = {}

    def make(config="tiny", seed: int = 0, vocab: bool = False) -> Path:
        key = (config if isinstance(config, str) else repr(config), seed, vocab)
        if key not in cache:
            hp, scale = CONFIGS[config] if isinstance(config, str) else (config, 0.3)
            d = tmp_path_factory.mktemp(f"model-{key[0][:12]}-{seed}")
            vdir = str(request.getfixturevalue("vocab_dir")) if vocab else None
            save_model(str(d), hp, random_weights(hp, seed=seed, scale=scale), vocab_dir=vdir)
            cache[key] = d
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_model_dir) -> Path:
    """The "tiny" random checkpoint (seed 0) with the real vocabulary."""
    return make_model_dir("tiny", vocab=True)


@pytest.fixture(scope="session")
def tiny_torch(tiny_model_dir):
    """:func:`tiny_model_dir` loaded on the torch backend, CPU (skipped without torch)."""
    pytest.importorskip("torch")
    from gpt2_common import load_model

    return load_model("torch", tiny_model_dir, device="cpu")
