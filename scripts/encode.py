#!/usr/bin/env python3
"""Encode text into a token file for training (nanoGPT's ``.bin``: uint16, memory-mappable).

    gpt2_encode corpus/ data/train.bin --model_dir models/124M
    gpt2_encode corpus/ data/train.bin --vocab_dir $GPT2_VOCAB_DIR             # the vocabulary alone: no weights needed
    gpt2_encode 'notes/**/*.txt' data/train.bin --val_fraction 0.05      # + data/train.val.bin
    gpt2_encode webtext.train.jsonl data/webtext.bin                      # the "text" field of each line
"""
import os
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def encode(inputs, out, *, model_name=cli.DEFAULT_MODEL, models_dir='models', model_dir=None, vocab_dir=None,
           val_fraction=0.0, seed=0, progress=True):
    """Encode documents into one token file, each document followed by <|endoftext|>.

    A document is a whole text file, or one line of a .jsonl file (its "text" field). Folders are
    read recursively (sorted), globs are expanded; the input is streamed document by document.

    Args:
        inputs: A file, folder or glob, or several separated by commas.
        out: The token file to write (uint16 little-endian, e.g. data/train.bin).
        model_name: Model whose vocabulary to use (a folder in models_dir; only encoder.json and
            vocab.bpe are read).
        models_dir: Parent folder of model folders.
        model_dir: A model folder given directly (instead of model_name/models_dir).
        vocab_dir: A folder with encoder.json and vocab.bpe, used instead of a model folder (as
            gpt2_train --vocab_dir; no weights needed).
        val_fraction: Put this fraction of the documents (chosen by a seeded hash of their index)
            into a validation file beside out (data/train.bin -> data/train.val.bin).
        seed: Seed of the validation choice.
        progress: Show a progress bar (--noprogress to hide it).
    """
    from gpt2_common.encoder import load_encoder
    from gpt2_common.hf import vocab_paths
    from gpt2_common.train.data import encode_corpus, validation_path

    val_fraction = cli.check_number("val_fraction", val_fraction, 0.0, 1.0)
    seed = cli.check_int("seed", seed, 0)
    if not isinstance(out, str) or not out or os.path.isdir(out):
        raise cli.UsageError(f"out must be a file path, got {out!r}")
    if vocab_dir is not None:
        path = cli.check_folder("--vocab_dir", vocab_dir)
    else:
        path, _ = cli.resolve_model_dir(model_name, models_dir, model_dir)
    missing = [p for p in vocab_paths(path) if not os.path.isfile(p)]
    if missing:
        raise cli.UsageError(f"{path}: no GPT-2 vocabulary ({', '.join(map(os.path.basename, missing))} missing): "
                             "give --vocab_dir FOLDER with encoder.json and vocab.bpe, or a downloaded model")
    enc = load_encoder(path)
    docs, tokens, vdocs, vtokens = encode_corpus(inputs, out, enc, val_fraction, seed,
                                                  progress=cli.check_flag("progress", progress) and cli.isatty(sys.stderr))
    print(f"{out}: {docs} documents, {tokens} tokens")
    if val_fraction > 0:
        print(f"{validation_path(out)}: {vdocs} documents, {vtokens} tokens")


def main():
    """Console-script entry point."""
    cli.run(encode, name="gpt2_encode")


if __name__ == "__main__":
    main()
