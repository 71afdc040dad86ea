#!/usr/bin/env python3
"""Convert a GPT-2 model folder between OpenAI's original layout and Hugging Face's.

    gpt2_convert models/124M models/124M-hf            # original -> Hugging Face (safetensors)
    gpt2_convert ~/.cache/huggingface/hub/models--gpt2 models/gpt2   # Hugging Face -> original
    gpt2_convert checkpoint/run1 run1-hf --overwrite   # a training run's latest checkpoint
"""
import os
import sys
import time

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401
from gpt2_common import cli


def convert(src, dst, *, to=None, overwrite=False):
    """Convert the model folder SRC into DST, bit-exact for the weights.

    SRC in the original layout (hparams.json, checkpoint, model.ckpt.*, encoder.json, vocab.bpe;
    a training run's folder whose checkpoint file names model-<step> too) becomes a Hugging Face
    folder: config.json, model.safetensors, vocab.json, merges.txt, tokenizer_config.json, which
    transformers' GPT2LMHeadModel/AutoTokenizer.from_pretrained load. A Hugging Face folder or
    hub-cache snapshot (config.json with model.safetensors or pytorch_model.bin, read with
    weights_only=True) becomes the original layout. DST is written in a temporary folder beside it
    and renamed when complete and read back.

    Args:
        src: The model folder to read (either layout; which one is detected).
        dst: The folder to create. It must not exist or be empty, unless --overwrite.
        to: "hf" or "original" (default: the layout SRC is not in).
        overwrite: Replace a non-empty DST (only once the new folder is complete).
    """
    from gpt2_common.convert import LAYOUTS, convert_model

    for flag, value in (("SRC", src), ("DST", dst)):
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise cli.UsageError(f"{flag} must be a folder path, got {value!r}")
    if to is not None and to not in LAYOUTS:
        raise cli.UsageError(f"unknown layout {to!r} for --to: choose one of {', '.join(LAYOUTS)}")
    overwrite = cli.check_flag("overwrite", overwrite)
    src, dst = (os.path.expanduser(str(p)) for p in (src, dst))
    start = time.perf_counter()
    layout, to, hp, warnings = convert_model(src, dst, to=to, overwrite=overwrite,
                                             progress=cli.isatty(sys.stderr))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
    print(f"{src} ({layout}) -> {dst} ({to}): n_layer={hp.n_layer} n_embd={hp.n_embd} "
          f"n_head={hp.n_head} n_ctx={hp.n_ctx} n_vocab={hp.n_vocab}, {size / 1e6:.1f} MB "
          f"in {time.perf_counter() - start:.1f} s")


def main():
    """Console-script entry point."""
    cli.run(convert, name="gpt2_convert")


if __name__ == "__main__":
    main()
