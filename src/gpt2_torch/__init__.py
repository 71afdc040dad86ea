"""GPT-2 in PyTorch: ``model.GPT2`` (the network) and ``sample.TorchGPT2`` (the loaded model)."""
import os

from gpt2_common.constants import MKL_CBWR_STRICT

# MKL's fp32 GEMM splits the inner dimension over threads for some shapes (seen on an AVX-512 Xeon:
# [80, 1024] @ [1024, 256], an MLP projection of a 2 x 40 token forward), so logits would depend on
# the thread count. Its strict conditional-numerical-reproducibility mode fixes the summation order
# whatever the thread count. MKL reads this once, at its first GEMM: it takes effect when the
# toolkit is imported before anything multiplies matrices with torch (set MKL_CBWR yourself to override).
os.environ.setdefault("MKL_CBWR", MKL_CBWR_STRICT)
