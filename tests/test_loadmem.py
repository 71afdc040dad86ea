"""Loading holds one copy of the weights: the rise of peak RSS during ``load_model``, measured in a
fresh interpreter, stays within 1.35x the weights' bytes on both backends (it was 2.0x in torch and
2.6x in TensorFlow when both built zeroed parameters and copied the arrays in)."""
from __future__ import annotations

import sys

import pytest

from gpt2_common.hparams import HParams
from gpt2_common.loadmem import load_peak

MAX_RATIO = 1.35
# GPT-2's vocabulary, width 512, two layers: ~130 MB of weights, so the runtime's own
# allocations during loading (a few MB) do not blur the ratio
CONFIG = HParams(n_vocab=50257, n_ctx=1024, n_embd=512, n_head=8, n_layer=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/self/clear_refs to reset the peak RSS")
@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_load_peak_memory_within_1_35x_of_the_weights(make_model_dir, backend):
    pytest.importorskip("tensorflow" if backend == "tf" else "torch")
    d = make_model_dir(CONFIG)
    r = load_peak(backend, str(d), "float32")
    print(f"{backend}: load_model peak RSS rise {r['peak_rise_bytes'] / 2**20:.0f} MiB "
          f"for {r['weights_bytes'] / 2**20:.0f} MiB of weights: {r['ratio']:.2f}x")
    assert r["ratio"] <= MAX_RATIO
