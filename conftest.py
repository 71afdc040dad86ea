"""Shared pytest fixtures: the real GPT-2 vocabulary and small random checkpoints in the original format."""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # tests run from a checkout even before `pip install -e`

from gpt2_common.constants import VOCAB_FILES, VOCAB_SHA256  # noqa: E402

# MKL's strict conditional-numerical-reproducibility mode: fp32 GEMM sums in one order whatever the
# thread count. Set for the whole run before any test touches torch (MKL reads it once, at its first
# GEMM): a forward in this process (two threads) and one in a one-thread child (torchrun's ranks)
# then sum alike, so the runs the tests compare bit for bit do. The toolkit itself leaves it to the
# user: small products run 6-20x slower in it (see the README).
MKL_CBWR_STRICT = "AUTO,STRICT"
os.environ.setdefault("MKL_CBWR", MKL_CBWR_STRICT)

from gpt2_common.hparams import HParams  # noqa: E402


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``, as GitHub Actions and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str, *, ci_may_skip: bool = False) -> NoReturn:
    """The one way a test skips: with ``reason`` locally, but under ``CI=true`` the test fails
    with that reason, so CI cannot pass by skipping a dependency or the vocabulary.
    ``ci_may_skip``: for what CI can never have (a GPU, OpenAI's real weights). Works at module
    level too."""
    if in_ci() and not ci_may_skip:
        pytest.fail(f"{reason} (CI=true: a missing dependency or vocabulary is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need(module: str) -> Any:
    """``import module`` and return it; if that fails, :func:`unavailable` with the import error
    (replaces ``pytest.importorskip``, which skips under CI as well)."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken install failing inside its import
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    unavailable(f"{module} cannot be imported ({error})")

# Small configs with the real vocabulary size (so <|endoftext|> = 50256 exists) and weight scales
# chosen so logits have a std around 1: top-1/top-2 gaps then dwarf float noise and argmax is stable.
CONFIGS = {
    "tiny": (HParams(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2), 0.3),
    "mid": (HParams(n_vocab=50257, n_ctx=256, n_embd=256, n_head=8, n_layer=4), 0.06),
    "124M": (HParams(), 0.02),
}


def _is_gpt2_vocab(folder: Path) -> bool:
    return all((folder / f).is_file() and hashlib.sha256((folder / f).read_bytes()).hexdigest() == VOCAB_SHA256[f]
               for f in VOCAB_FILES)


def _vocab_dir() -> Optional[Path]:
    env = os.environ.get("GPT2_VOCAB_DIR")
    if env:  # what the user (or CI) chose, or nothing
        return Path(env) if _is_gpt2_vocab(Path(env)) else None
    cache = Path(os.environ.get("GPT2_CACHE_DIR", Path.home() / ".cache" / "gpt2-toolkit"))
    if _is_gpt2_vocab(cache / "124M"):
        return cache / "124M"
    try:  # the project's own downloader
        from gpt2_common.download import download_model

        return Path(download_model("124M", str(cache), files=VOCAB_FILES, progress=False, retries=1))
    except Exception:
        return None


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """Directory with the real GPT-2 ``encoder.json`` and ``vocab.bpe`` (checked by SHA-256).

    From ``GPT2_VOCAB_DIR`` when it is set (CI sets it to ../shared/gpt2-vocab), else downloaded
    with the project's downloader into ``~/.cache/gpt2-toolkit``; when neither works the test
    skips, or fails under ``CI=true`` (:func:`unavailable`).
    """
    d = _vocab_dir()
    if d is None:
        env = os.environ.get("GPT2_VOCAB_DIR")
        where = f"GPT2_VOCAB_DIR={env} has no GPT-2 encoder.json and vocab.bpe" if env else \
            "no GPT2_VOCAB_DIR and the download failed"
        unavailable(f"real GPT-2 vocabulary unavailable: {where} (set GPT2_VOCAB_DIR to a folder "
                    "with GPT-2's encoder.json and vocab.bpe)")
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
    need("torch")
    from gpt2_common import load_model

    return load_model("torch", tiny_model_dir, device="cpu")
