"""A known answer from OpenAI's released 124M weights, on both backends.

Greedy decoding of "The dog" (tokens 464, 3290) for 18 new tokens gives "... was found in a field
near the intersection of West and West Streets.\\n\\nThe dog": the sequence Hugging Face's own test
suite expects from these weights. Runs when ``GPT2_MODEL_DIR`` (or ``models/124M`` after
``download_model 124M``) holds the released 124M model; skipped with that reason otherwise,
also under CI=true (no real weights exist in CI: the tests build random checkpoints).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import need, unavailable

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [464, 3290]  # "The dog"
EXPECTED = [373, 1043, 287, 257, 2214, 1474, 262, 16246, 286, 2688, 290, 2688, 27262, 13, 198, 198,
            464, 3290]


@pytest.fixture(scope="module")
def released_124m() -> Path:
    from gpt2_common.cli import missing_model_files
    from gpt2_common.hparams import MODEL_SHAPES, HParamsError, load_hparams

    folder = Path(os.environ.get("GPT2_MODEL_DIR") or ROOT / "models" / "124M")
    try:
        ok = not missing_model_files(str(folder)) and load_hparams(folder) == MODEL_SHAPES["124M"]
    except HParamsError:
        ok = False
    if not ok:
        unavailable(f"no released 124M model in {folder} (set GPT2_MODEL_DIR, or run "
                    "`python scripts/download_model.py 124M`)", ci_may_skip=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_greedy_the_dog(released_124m, backend):
    need({"tf": "tensorflow", "torch": "torch"}[backend])
    from gpt2_common import load_model

    model = load_model(backend, released_124m, device="cpu")
    assert model.encoder.encode("The dog") == PROMPT
    tokens = model.generate(PROMPT, 18, temperature=0)[0].tolist()
    assert tokens == EXPECTED, model.encoder.decode(tokens)
    assert model.encoder.decode(tokens).startswith(" was found in a field near the intersection")
