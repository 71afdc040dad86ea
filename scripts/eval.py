#!/usr/bin/env python3
"""Zero-shot evaluation as the GPT-2 paper and lm-evaluation-harness measure it (issue 16).

    gpt2_eval lambada --model_name 124M                 # fetches data/lambada_test.jsonl if missing
    gpt2_eval lambada --target last_token --json
    gpt2_eval perplexity --file wiki.test.raw --detokenizer wikitext --stride 512

The metrics are computed by gpt2_common.evaluate; this file only checks flags, loads the model and
prints.
"""
import json as _json

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401
from gpt2_common import cli


def lambada(data=None, *, data_dir='data', target='word', backend='torch', device=None, model_name=cli.DEFAULT_MODEL,
            models_dir='models', model_dir=None, batch_size=16, stride=None, limit=None, json=False,
            progress=True, download=True):
    """LAMBADA accuracy and perplexity, as lm-evaluation-harness's lambada_openai defines them.

    Context = the passage minus its last word, target = " " + the last word. accuracy = the share
    of passages (percent) where greedy decoding reproduces every target token; perplexity =
    exp(-mean log P(target | context)). A passage with no word to predict is skipped and counted.

    Args:
        data: A LAMBADA .jsonl file (one {"text": ...} per line). Default: DATA_DIR/lambada_test.jsonl,
            OpenAI's preprocessed test set (5,153 passages), downloaded if missing.
        data_dir: Where the default file lives or is downloaded to.
        target: "word" (default: the whole last word) or "last_token" (only the final BPE token,
            as OpenAI's own evaluation did).
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_name: 124M, 355M, 774M, 1558M (folder in models_dir), or another folder there.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        batch_size: Passages per forward pass.
        stride: Sliding-window step for a passage longer than the context (default n_ctx // 2).
        limit: Evaluate only the first limit passages.
        json: Print one JSON object instead of a summary.
        progress: Show a progress bar on stderr (--noprogress: none).
        download: Download a missing model or data file (--nodownload: just report it).
    """
    from gpt2_common import evaluate, research

    if target not in evaluate.TARGETS:
        raise cli.UsageError(f"unknown target {target!r}: choose one of {', '.join(evaluate.TARGETS)}")
    flags = _common_flags(backend, device, batch_size, stride, limit, json, progress, download)
    try:
        if data is None:
            data = _lambada_file(data_dir, flags["download"])
        texts = evaluate.read_lambada(_path("data", data), flags["limit"])
        model = _load(flags, model_name, models_dir, model_dir)
        result = evaluate.lambada(model, texts, target=target, batch_size=flags["batch_size"],
                                  stride=flags["stride"], progress=flags["progress"])
    except research.ResearchError as e:
        raise cli.UsageError(str(e)) from None
    out = {"task": "lambada", **result, "data": data, **_settings(flags, model)}
    _print(out, flags["json"], f"LAMBADA ({target}): {out['n']} passages ({out['skipped']} skipped)  "
                               f"accuracy {out['accuracy']:.2f}%  perplexity {out['perplexity']:.2f}")


def perplexity(file=None, *, detokenizer='none', backend='torch', device=None, model_name=cli.DEFAULT_MODEL,
               models_dir='models', model_dir=None, batch_size=16, stride=None, limit=None, json=False,
               progress=True, download=True):
    """Perplexity of a text file: per token, bits per byte and per word (the harness's definitions).

    Every token is scored once after <|endoftext|>, with gpt2_score's sliding windows (--stride).
    perplexity = exp(-LL / tokens); bits_per_byte = -LL / bytes / ln 2; word_perplexity =
    exp(-LL / words), with words and UTF-8 bytes counted on the text before detokenizing.

    Args:
        file: A plain-text file (one document) or a .jsonl file (one {"text": ...} document per line).
        detokenizer: "none" (default) or "wikitext" (undo WikiText's tokenisation, as the paper did).
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_name: 124M, 355M, 774M, 1558M (folder in models_dir), or another folder there.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        batch_size: Documents whose windows share forward passes.
        stride: Sliding-window step (default n_ctx // 2; 1 .. n_ctx - 1).
        limit: For .jsonl input: only the first limit documents.
        json: Print one JSON object instead of a summary.
        progress: Show a progress bar on stderr (--noprogress: none).
        download: Download a missing released model (--nodownload: just report it).
    """
    from gpt2_common import evaluate, research

    if detokenizer not in evaluate.DETOKENIZERS:
        raise cli.UsageError(f"unknown detokenizer {detokenizer!r}: choose one of "
                             f"{', '.join(evaluate.DETOKENIZERS)}")
    if file is None:
        raise cli.UsageError("nothing to evaluate: give --file PATH (text or .jsonl)")
    flags = _common_flags(backend, device, batch_size, stride, limit, json, progress, download)
    try:
        docs = evaluate.read_documents(_path("file", file), flags["limit"])
        model = _load(flags, model_name, models_dir, model_dir)
        result = evaluate.perplexity(model, docs, stride=flags["stride"], detokenizer=detokenizer,
                                     batch_size=flags["batch_size"], progress=flags["progress"])
    except research.ResearchError as e:
        raise cli.UsageError(str(e)) from None
    out = {"task": "perplexity", **result, "file": file, **_settings(flags, model)}
    _print(out, flags["json"], f"{file}: {out['n']} tokens, {out['words']} words, {out['bytes']} bytes  "
                               f"perplexity {out['perplexity']:.3f}  bits/byte {out['bits_per_byte']:.4f}  "
                               f"word perplexity {out['word_perplexity']:.3f}")


def _common_flags(backend, device, batch_size, stride, limit, json, progress, download):
    """Every shared flag checked before any file is read or model loaded."""
    cli.check_backend(backend)
    return {"backend": backend, "device": cli.check_device(device),
            "batch_size": cli.check_int("batch_size", batch_size, 1),
            "stride": cli.check_int("stride", stride, 1, allow_none=True),
            "limit": cli.check_int("limit", limit, 1, allow_none=True),
            "json": cli.check_flag("json", json), "progress": cli.check_flag("progress", progress),
            "download": cli.check_flag("download", download)}


def _path(flag, value):
    if not isinstance(value, str) or not value:
        raise cli.UsageError(f"--{flag} must be a path, got {value!r}")
    return value


def _lambada_file(data_dir, download):
    """DATA_DIR/lambada_test.jsonl, downloaded with the project's downloader when missing."""
    import os

    from gpt2_common.constants import LAMBADA_FILE

    path = os.path.join(_path("data_dir", data_dir), LAMBADA_FILE)
    if os.path.isfile(path):
        return path
    if not download:
        raise cli.UsageError(f"{path} is missing: run without --nodownload to fetch it, or give --data FILE")
    from gpt2_common.download import download_lambada

    return download_lambada(data_dir)


def _load(flags, model_name, models_dir, model_dir):
    """The model, after its folder and the stride are checked."""
    from gpt2_common import research
    from gpt2_common.hparams import load_hparams
    from gpt2_common.interface import load_model

    path, name = cli.resolve_model_dir(model_name, models_dir, model_dir)
    cli.ensure_model_files(path, name, flags["download"])
    research.check_stride(flags["stride"], load_hparams(path).n_ctx)  # before the weights load
    return load_model(flags["backend"], path, device=flags["device"])


def _settings(flags, model):
    return {"backend": flags["backend"], "model_dir": model.model_dir, "n_ctx": int(model.hparams.n_ctx),
            "batch_size": flags["batch_size"], "limit": flags["limit"]}


def _print(out, as_json, line):
    cli.setup_text_streams()
    print(_json.dumps(out) if as_json else line, flush=True)


def main():
    """Console-script entry point."""
    cli.run({"lambada": lambada, "perplexity": perplexity}, name="gpt2_eval")


if __name__ == "__main__":
    main()
