#!/usr/bin/env python3
"""Benchmark both backends (and Hugging Face transformers as a peer) on the same GPT-2 weights.

    gpt2_benchmark                                  # 124M shapes, random weights, tf + torch + hf
    gpt2_benchmark --model 355M --batch_sizes 1 --json
    python scripts/benchmark.py --model_dir models/124M --plot bench.png

The machinery lives in :mod:`gpt2_common.bench` (what is measured and how: see its docstring).
"""
if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401
from gpt2_common import cli
from gpt2_common.bench.run import benchmark


def main() -> None:
    """Console-script entry point."""
    cli.run(benchmark, name="gpt2_benchmark")


if __name__ == "__main__":
    main()
