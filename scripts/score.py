#!/usr/bin/env python3
"""Score text under GPT-2: each token's log-probability and rank, and the text's perplexity.

    gpt2_score "The quick brown fox" --model_name 124M
    echo "The quick brown fox" | python scripts/score.py - --json
    gpt2_score --file essay.txt --stride 256
    gpt2_score --file webtext.test.jsonl --json > scores.jsonl     # one result per line
    gpt2_score --file webtext.test.jsonl --output scores.jsonl     # resumable; under torchrun: sharded
    torchrun --nproc_per_node 4 scripts/score.py --file webtext.test.jsonl --output scores.jsonl
"""
import json as _json
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402

TOKEN_WIDTH = 24
GLTR_TOP = 5  # alternatives shown on hover in the --html page


def score(text=None, *, file=None, backend='torch', device=None, model_name=cli.DEFAULT_MODEL, models_dir='models',
          model_dir=None, stride=None, json=False, prepend_eot=True, max_tokens=None, limit=None,
          download=True, dtype='float32', html=None, plot=None, output=None, batch_docs=64,
          pad=False, progress=True):
    """Print per-token log-probabilities (natural log) and ranks, and the totals, for a text.

    The text comes from the argument, from --file (plain text; a file ending in .jsonl is read as
    JSON lines with a "text" field and scored line by line), or from stdin when the argument or
    --file is "-". (fire parses bare arguments, so a text such as 123 or [1] is given as its Python
    form; use --file or stdin for exact text.)

    Plain output: a table (position, token, log-probability, rank; rank 1 = the model's top choice)
    and a summary line "tokens N  total NLL x  mean NLL y  perplexity z". For a .jsonl file, one
    summary line per document. With --json: one JSON object per text (per line for .jsonl) with
    tokens, token_strings, logprobs, ranks, context, n_ctx, stride, n_tokens, total_nll, mean_nll,
    perplexity (and id and line for .jsonl input).

    A .jsonl file is scored in batches of --batch_docs documents: their windows are sorted by
    length and windows of equal length share a forward pass (no padding, so the numbers are those
    of scoring each document alone). With --output FILE the JSON lines go to FILE instead of
    stdout, in input order, with a progress bar (documents/s, tokens/s) on stderr. Under torchrun
    (RANK/WORLD_SIZE set) document i goes to rank i % WORLD_SIZE, each rank appends to
    FILE.part<rank>, and rank 0 writes FILE after a barrier (atomically) and removes the parts. A
    re-run skips the documents already recorded in FILE or its parts (resume).

    Args:
        text: The text to score, or "-" to read it from stdin.
        file: A plain-text file (scored whole), a .jsonl file (one result per line), or "-".
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_name: Which model to use: 124M, 355M, 774M, 1558M (folder in models_dir; a missing
            released model is downloaded unless --nodownload), or another folder in models_dir.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        stride: Sliding-window step for texts longer than the context (default n_ctx // 2;
            1 .. n_ctx - 1). Every token is scored once, with at least n_ctx - stride tokens of
            context once past the first window.
        json: Print JSON (one object per line) instead of a table.
        prepend_eot: Score the first token given <|endoftext|> (default); --noprepend_eot makes
            the first token context only.
        max_tokens: Score only the first max_tokens tokens of each text.
        limit: For .jsonl input: score only the first limit documents.
        download: Download a missing released model (--nodownload: just report it).
        dtype: Compute dtype: float32 (default), bfloat16 or float16.
        html: Also write a GLTR-style page to this file: every token coloured by its rank bucket
            (top 10 / 100 / 1000 / beyond), probability, rank and the top 5 alternatives on hover,
            and a histogram of the buckets (self-contained; one text, not a .jsonl file).
        plot: Also write the bucket histogram as a PNG to this file (needs matplotlib).
        output: For .jsonl input: write the JSON lines to this file (resumable; needed under
            torchrun).
        batch_docs: For .jsonl input: documents scored together (default 64).
        pad: For .jsonl input: also batch windows of different lengths, right-padded (faster for
            many short documents; the numbers then differ from one-at-a-time scoring by ~1e-6).
        progress: Show the progress bar with --output (--noprogress: none).
    """
    from gpt2_common import research

    cli.check_backend(backend)
    device = cli.check_device(device)
    dtype = cli.check_dtype(dtype)
    stride = cli.check_int("stride", stride, 1, allow_none=True)
    max_tokens = cli.check_int("max_tokens", max_tokens, 1, allow_none=True)
    limit = cli.check_int("limit", limit, 1, allow_none=True)
    as_json = cli.check_flag("json", json)
    prepend_eot = cli.check_flag("prepend_eot", prepend_eot)
    download = cli.check_flag("download", download)
    batch_docs = cli.check_int("batch_docs", batch_docs, 1)
    progress = cli.check_flag("progress", progress)
    pad = cli.check_flag("pad", pad)
    try:
        views = _gltr_paths(html, plot)  # before any input is read or model loaded
        if output is not None:
            from gpt2_common.gltr import check_output_path

            output = check_output_path(output, "--output")
        is_jsonl = isinstance(file, str) and file.endswith(".jsonl")
        _, world, _ = research.dist_env()
        if output is not None and not is_jsonl:
            raise cli.UsageError("--output is for .jsonl input (--file DOCS.jsonl)")
        if world > 1 and output is None:
            raise cli.UsageError("under torchrun (WORLD_SIZE > 1) give --output FILE: each rank writes a part of it")
        if views and is_jsonl:
            raise cli.UsageError("--html and --plot show one text: give a text or a plain file, not .jsonl")
        if is_jsonl:
            if text is not None:
                raise cli.UsageError("give either a text or --file, not both")
            research.plan(file, limit)  # every line checked before the model loads
        else:
            docs, _ = _read_input(text, file, limit)
        path, name = cli.resolve_model_dir(model_name, models_dir, model_dir)
        cli.ensure_model_files(path, name, download)
        from gpt2_common.hparams import load_hparams

        research.check_stride(stride, load_hparams(path).n_ctx)  # before the weights load
        from gpt2_common.interface import load_model

        def load(local_rank=0):
            dev = device
            if dev is None and world > 1 and backend == 'torch':
                import torch

                dev = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
            return load_model(backend, path, device=dev, dtype=dtype)

        kw = dict(stride=stride, prepend_eot=prepend_eot, max_tokens=max_tokens, pad=pad)
        if is_jsonl and output is not None:
            got = research.score_to_file(load, file, output, limit, batch_docs, progress, **kw)
            if research.dist_env()[0] == 0:
                print(f"{output}: {got['documents']} documents ({got['resumed']} resumed from an earlier run)",
                      file=sys.stderr)
            return
        model = load()
        enc = model.encoder
        cli.setup_text_streams()
        if is_jsonl:
            for out in research.score_corpus(model, file, None, limit, batch_docs, **kw):
                if as_json:
                    print(_json.dumps(out, ensure_ascii=False), flush=True)
                else:
                    label = f"line {out['line']}" + (f" id {out['id']}" if "id" in out else "")
                    print(f"{label}: {summary_line_dict(out)}", flush=True)
            return
        for where, record, doc in docs:
            try:
                result = research.score_text(model, doc, stride=stride, prepend_eot=prepend_eot,
                                             max_tokens=max_tokens, top_k=GLTR_TOP if views else 0)
            except research.ResearchError as e:
                raise research.ResearchError(f"{where}: {e}" if where else str(e)) from None
            if as_json:
                print(_json.dumps(result.to_dict(enc), ensure_ascii=False))
            else:
                print(table(result, enc))
                print(summary_line(result))
            _write_gltr(views, result, enc, f"model {path} on the {backend} backend ({dtype})")
    except research.ResearchError as e:
        raise cli.UsageError(str(e)) from None


def _gltr_paths(html, plot):
    """``{"html": path, "plot": path}`` for the flags given, each checked to be writable."""
    from gpt2_common.gltr import check_output_path, require_matplotlib

    if plot is not None:
        require_matplotlib()
    return {k: check_output_path(v, f"--{k}") for k, v in (("html", html), ("plot", plot)) if v is not None}


def _write_gltr(views, result, encoder, made_by=""):
    """Write the GLTR page and/or histogram asked for (issue 16); ``made_by`` names the model."""
    from gpt2_common import gltr

    if "html" in views:
        gltr.write_html(views["html"], result, encoder, made_by=made_by)
    if "plot" in views:
        gltr.plot_histogram(views["plot"], gltr.bucket_counts(result.ranks))


def _read_input(text, file, limit):
    """``([(where, record, text)], False)`` from the argument, a plain --file or stdin."""
    from gpt2_common import research

    cli.check_text_or_file(text, file, 'nothing to score: give a text, --file PATH, or "-" to read stdin')
    if file is not None:
        doc = _read_stdin() if file == "-" else research.read_text(file)
        where = "stdin" if file == "-" else file
    else:
        doc = _read_stdin() if text == "-" else (text if isinstance(text, str) else str(text))
        where = "stdin" if text == "-" else ""
    if not doc:
        raise cli.UsageError(f"empty text{' in ' + where if where else ''}: nothing to score")
    return [(where, None, doc)], False


def _read_stdin():
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from gpt2_common.utf8 import describe

        raise cli.UsageError(f"stdin: {describe(e)}") from None


def table(result, encoder):
    """The per-token table: position, token (as a Python string literal), log-probability, rank."""
    from gpt2_common import research

    rows = [f"{'pos':>5}  {'token':<{TOKEN_WIDTH}}  {'logprob':>10}  {'rank':>6}"]
    strings = research.token_strings(encoder, result.tokens)
    for i, (s, lp, rank) in enumerate(zip(strings, result.logprobs, result.ranks), 1):
        shown = repr(s)
        if len(shown) > TOKEN_WIDTH:
            shown = shown[:TOKEN_WIDTH - 3] + "..."
        rows.append(f"{i:>5}  {shown:<{TOKEN_WIDTH}}  {lp:>10.4f}  {int(rank):>6}")
    return "\n".join(rows)


def summary_line(result):
    """``tokens N  total NLL x  mean NLL y  perplexity z``."""
    return summary_line_dict(result.summary())


def summary_line_dict(d):
    """:func:`summary_line` from a result's :meth:`~ScoreResult.summary` or JSON dict."""
    return (f"tokens {d['n_tokens']}  total NLL {d['total_nll']:.4f}  mean NLL {d['mean_nll']:.4f}  "
            f"perplexity {d['perplexity']:.4f}")


def stdin_args(argv):
    """Spell a bare ``-`` (stdin) as ``--text=-`` / ``--file=-``: fire would take it for its
    command separator."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":  # fire's own flags follow
            return out + list(argv[i:])
        if arg != "-":
            out.append(arg)
        elif out and out[-1] in ("--file", "--text"):
            out[-1] += "=-"
        else:
            out.append("--text=-")
    return out


def main():
    """Console-script entry point."""
    sys.argv[1:] = stdin_args(sys.argv[1:])
    cli.run(score, name="gpt2_score")


if __name__ == "__main__":
    main()
