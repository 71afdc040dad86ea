#!/usr/bin/env python3
"""Look inside GPT-2 on a text: every head's attention pattern, the logit lens, and each head's
induction / previous-token / duplicate-token score.

    gpt2_inspect "The cat sat on the mat. The cat sat on the" --html inspect.html
    gpt2_inspect --file text.txt --model_dir checkpoint/run1 --json inspect.json --html inspect.html
    gpt2_inspect "Hello there" --json | jq .head_scores.top
"""
if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402

DEFAULT_REPEAT_LENGTH = 20  # random tokens per copy for the head scores (fewer when n_ctx is smaller)


def inspect_model(text=None, *, file=None, tokens=None, html=None, json=None, backend='torch', device=None,
                  model_name=cli.DEFAULT_MODEL, models_dir='models', model_dir=None, dtype='float32',
                  download=True, prepend_eot=True, top_k=5, layer=None, head=None,
                  repeat_length=None, repeat_vocab=None, repeat_low=0, repeat_count=8,
                  repeat_bos=False, seed=0):
    """Show what happens inside GPT-2 on a text: attention patterns, logit lens, head scores.

    Prints the head-score table and each score's top heads. With --html PAGE.html: a self-contained
    page (no external assets) with every head's attention pattern as a token-labelled heat map
    (thumbnails of all heads; pick a layer and head), the logit-lens table (each stage's top token
    and probability per position, and the rank of the text's next token, colour-coded) and the head
    scores (top heads highlighted); it names the model and backend. With --json OUT.json (or --json
    alone: stdout, instead of the table) the same numbers: tokens, token_labels, attention
    [layer][head][query][key <= query], logit_lens {stages, top_ids, top_labels, top_probs,
    target, target_rank, target_prob}, head_scores {induction, previous, duplicate [layer][head],
    top, repeat}, about.

    The head scores are measured on repeated random tokens, not on the text (see
    gpt2_common.interp.heads): --repeat_count sequences of --repeat_length ids drawn from
    --repeat_low .. --repeat_low + --repeat_vocab - 1, each followed by itself.

    Args:
        text: The text to look at (or use --file).
        file: A UTF-8 text file to read the text from.
        tokens: Token ids instead of a text, e.g. --tokens 5,17,3 (for toy models trained on ids).
        html: Write the page to this file.
        json: Write the numbers as JSON to this file (--json alone: to stdout).
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_name: Which model to use: 124M, 355M, 774M, 1558M (folder in models_dir; a missing
            released model is downloaded unless --nodownload), or another folder in models_dir.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        dtype: Compute dtype: float32 (default), bfloat16 or float16.
        download: Download a missing released model (--nodownload: just report it).
        prepend_eot: Put <|endoftext|> before the text (default), as GPT-2 saw documents begin.
        top_k: Top tokens kept per logit-lens cell (default 5).
        layer: The layer whose head the page shows first (default: the top induction head's).
        head: The head the page shows first (give with --layer).
        repeat_length: Random tokens per copy for the head scores (default 20, or what fits n_ctx).
        repeat_vocab: How many token ids they are drawn from (default: all from --repeat_low on).
        repeat_low: The lowest of those ids (default 0).
        repeat_count: Sequences the scores are averaged over (default 8).
        repeat_bos: Put <|endoftext|> before each sequence (--repeat_bos; default off).
        seed: Seed of the random tokens (default 0).
    """
    import json as _json
    import os

    from gpt2_common.research import ResearchError

    cli.check_backend(backend)
    device = cli.check_device(device)
    dtype = cli.check_dtype(dtype)
    download = cli.check_flag("download", download)
    prepend_eot = cli.check_flag("prepend_eot", prepend_eot)
    repeat_bos = cli.check_flag("repeat_bos", repeat_bos)
    top_k = cli.check_int("top_k", top_k, 1)
    layer = cli.check_int("layer", layer, 0, allow_none=True)
    head = cli.check_int("head", head, 0, allow_none=True)
    if (layer is None) != (head is None):
        raise cli.UsageError("give --layer and --head together")
    repeat_length = cli.check_int("repeat_length", repeat_length, 1, allow_none=True)
    repeat_vocab = cli.check_int("repeat_vocab", repeat_vocab, 1, allow_none=True)
    repeat_low = cli.check_int("repeat_low", repeat_low, 0)
    repeat_count = cli.check_int("repeat_count", repeat_count, 1)
    seed = cli.check_int("seed", seed, 0)
    if json is not None and json is not False and json is not True and not isinstance(json, str):
        raise cli.UsageError(f"--json takes a file path (or nothing, for stdout), got {json!r}")
    to_stdout = json is True
    try:  # every output location checked before anything is loaded
        from gpt2_common.gltr import check_output_path

        html = check_output_path(html, "--html") if html is not None else None
        json_path = check_output_path(json, "--json") if isinstance(json, str) else None
    except ResearchError as e:
        raise cli.UsageError(str(e)) from None
    if html is not None and json_path is not None and os.path.abspath(html) == os.path.abspath(json_path):
        raise cli.UsageError("--html and --json name the same file")
    if tokens is not None:
        if text is not None or file is not None:
            raise cli.UsageError("give a text, --file or --tokens, not more than one")
        ids = _token_ids(tokens)
    else:
        ids = None
        doc = _read_text(text, file)

    path, name = cli.resolve_model_dir(model_name, models_dir, model_dir)
    cli.ensure_model_files(path, name, download)
    from gpt2_common.encoder import load_encoder
    from gpt2_common.hparams import load_hparams

    hp = load_hparams(path)
    enc = load_encoder(path)
    tokens = ([cli.EOT_TOKEN] if prepend_eot else []) + (ids if ids is not None else enc.encode(doc))
    bad = [t for t in tokens if t >= hp.n_vocab]
    if bad:
        hint = " (--noprepend_eot leaves out <|endoftext|>)" if bad[0] == cli.EOT_TOKEN and prepend_eot else ""
        raise cli.UsageError(f"token id {bad[0]} is outside the model's vocabulary of {hp.n_vocab}{hint}")
    if len(tokens) > hp.n_ctx:
        raise cli.UsageError(f"the text is {len(tokens)} tokens{' with <|endoftext|>' if prepend_eot else ''}; "
                             f"the model's context is {hp.n_ctx}: shorten it")
    if layer is not None and (layer >= hp.n_layer or head >= hp.n_head):
        raise cli.UsageError(f"--layer {layer} --head {head} is outside the model's {hp.n_layer} layers "
                             f"x {hp.n_head} heads (0-based)")
    offset = 1 if repeat_bos else 0
    fits = (hp.n_ctx - offset) // 2
    if repeat_length is None:
        repeat_length = min(DEFAULT_REPEAT_LENGTH, fits)
    elif repeat_length > fits:
        raise cli.UsageError(f"--repeat_length {repeat_length}: two copies must fit the context of "
                             f"{hp.n_ctx} (at most {fits})")
    if repeat_vocab is None:
        repeat_vocab = hp.n_vocab - repeat_low
    if repeat_low + repeat_vocab > hp.n_vocab:
        raise cli.UsageError(f"--repeat_low {repeat_low} --repeat_vocab {repeat_vocab}: ids up to "
                             f"{repeat_low + repeat_vocab - 1} are outside the model's {hp.n_vocab}")

    from gpt2_common.interface import load_model
    from gpt2_common.interp import page, view

    model = load_model(backend, path, device=device, dtype=dtype)
    about = {"model": path, "backend": backend, "dtype": dtype, "device": device or "default"}
    v = view.inspect_text(model, tokens, top_k=min(top_k, hp.n_vocab), repeat_length=repeat_length,
                          repeat_vocab=repeat_vocab, repeat_low=repeat_low, repeat_count=repeat_count,
                          repeat_bos=repeat_bos, seed=seed, encoder=enc, about=about)
    if html is not None:
        page.write_html(html, v, layer, head)
    if json_path is not None:
        page.write_json(json_path, v)
    cli.setup_text_streams()
    if to_stdout:
        print(_json.dumps(v, ensure_ascii=False))
        return
    print(f"{path} ({backend}, {dtype}): {len(tokens)} tokens, {hp.n_layer} layers x {hp.n_head} heads")
    print(f"head scores on {repeat_count} sequences of {repeat_length} random tokens "
          f"(ids {repeat_low}..{repeat_low + repeat_vocab - 1}) repeated:")
    print(_score_table(v))
    for line in view.top_heads_line(v):
        print("top " + line)
    for p in (html, json_path):
        if p is not None:
            print(f"wrote {p}")


def _score_table(v):
    """The three scores of every head, one row per head (:meth:`HeadScores.table`)."""
    import numpy as np

    from gpt2_common.interp.heads import SCORES, HeadScores

    s, rep = v["head_scores"], v["head_scores"]["repeat"]
    return HeadScores(*(np.asarray(s[k]) for k in SCORES), tokens=np.zeros((0, 0), np.int32),
                      length=rep["length"], offset=int(rep["bos"])).table()


def _token_ids(tokens):
    """``--tokens``: a list of ids (fire parses ``5,17,3`` as a tuple) or one id, each >= 0."""
    if isinstance(tokens, str):
        try:
            tokens = [int(x) for x in tokens.replace(",", " ").split()]
        except ValueError:
            raise cli.UsageError(f"--tokens must be token ids such as 5,17,3, got {tokens!r}") from None
    elif isinstance(tokens, int) and not isinstance(tokens, bool):
        tokens = [tokens]
    if not isinstance(tokens, (list, tuple)) or not tokens or \
            not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise cli.UsageError(f"--tokens must be token ids >= 0 such as 5,17,3, got {tokens!r}")
    return list(tokens)


def _read_text(text, file):
    """The text from the argument or --file (UTF-8), never empty."""
    cli.check_text_or_file(text, file, "nothing to inspect: give a text or --file PATH")
    if file is not None:
        from gpt2_common import research

        try:
            doc = research.read_text(file)
        except research.ResearchError as e:
            raise cli.UsageError(str(e)) from None
    else:
        doc = text if isinstance(text, str) else str(text)
    if not doc:
        raise cli.UsageError(f"empty text{' in ' + file if file else ''}: nothing to inspect")
    return doc


def main():
    """Console-script entry point."""
    cli.run(inspect_model, name="gpt2_inspect")


if __name__ == "__main__":
    main()
