#!/usr/bin/env python3
"""Detect GPT-2 output: the gpt-2-output-dataset study's detectors on its .jsonl files.

    # zero-shot: threshold on each document's mean log-probability under GPT-2
    gpt2_detect --real_valid webtext.valid.jsonl --fake_valid small-117M.valid.jsonl \\
                --real_test webtext.test.jsonl --fake_test small-117M.test.jsonl --model_name 124M
    # the same files by the dataset's naming, 1000 documents per file
    gpt2_detect --data_dir data --source small-117M --limit 1000
    # the TF-IDF + logistic regression baseline (needs the `detect` extra: scikit-learn)
    gpt2_detect --method tfidf --data_dir data --source small-117M --output small-117M.json
    # GLTR: each document's rank-bucket fractions + logistic regression (model and scikit-learn)
    gpt2_detect --method gltr --data_dir data --source small-117M --limit 1000
"""
import json as _json

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402

METHODS = ("logprob", "tfidf", "gltr")
MODEL_METHODS = ("logprob", "gltr")  # the methods that load a GPT-2 model


def detect(method='logprob', real_valid=None, fake_valid=None, real_test=None, fake_test=None,
           real_train=None, fake_train=None, data_dir=None, source=None, real_source='webtext',
           limit=None, max_tokens=256, stride=None, prepend_eot=True, backend='torch', device=None,
           model_name=cli.DEFAULT_MODEL, models_dir='models', model_dir=None, output=None, download=True,
           dtype='float32'):
    """Train/calibrate a detector on real vs generated .jsonl files and print its accuracy as JSON.

    Labels: documents from the real files (WebText) are 0, from the generated ("fake") files 1.
    Accuracies are percentages. The JSON is printed on stdout (one line) and, with --output, also
    written to that file.

    --method logprob (default; zero-shot, loads a GPT-2 model): each document's score is its mean
    token log-probability over its first max_tokens tokens (after <|endoftext|>); the threshold and
    its direction are chosen to maximise accuracy on the validation files and then applied to the
    test files. Prints {"source", "method", "n_valid", "n_test", "threshold", "direction",
    "max_tokens", "valid_accuracy", "test_accuracy"}; direction "higher" means documents scoring
    above the threshold are called generated. Empty documents are left out of the counts.

    --method tfidf (the study's baseline.py; no GPT-2 model; needs scikit-learn, the `detect`
    extra): TF-IDF over unigrams and bigrams (min_df=5, max_features=2**21) fit on the train
    files, logistic regression with C chosen from 1/64 .. 64 (powers of 2) on the validation files.
    Prints exactly {"source", "n_train", "valid_accuracy", "test_accuracy"}.

    --method gltr (GLTR's view as features; loads a GPT-2 model; needs scikit-learn): each
    document's fractions of tokens ranked top 10 / top 100 / top 1000 / beyond over its first
    max_tokens tokens, logistic regression trained on the train files with C chosen from
    1/64 .. 64 on the validation files, as tfidf. Prints {"source", "method", "n_train", "n_valid",
    "n_test", "max_tokens", "C", "valid_accuracy", "test_accuracy"}.

    Files are given one by one (--real_valid ... --fake_train) or by the dataset's naming with
    --data_dir and --source: DATA_DIR/webtext.SPLIT.jsonl and DATA_DIR/SOURCE.SPLIT.jsonl (a file
    given explicitly wins).

    Args:
        method: "logprob" (default), "tfidf" or "gltr".
        real_valid: Real (WebText) validation .jsonl.
        fake_valid: Generated validation .jsonl.
        real_test: Real test .jsonl.
        fake_test: Generated test .jsonl.
        real_train: Real training .jsonl (tfidf and gltr).
        fake_train: Generated training .jsonl (tfidf and gltr).
        data_dir: Folder with the dataset's files, named as above.
        source: The generated files' name (e.g. small-117M, xl-1542M-k40); also the "source" in
            the JSON (default: taken from the generated test file's name).
        real_source: The real files' name in data_dir (default webtext).
        limit: Use only the first limit documents of each file.
        max_tokens: logprob, gltr: score each document's first max_tokens tokens (0: all of it).
        stride: logprob, gltr: sliding-window step for documents longer than the context (default n_ctx // 2).
        prepend_eot: logprob, gltr: score the first token given <|endoftext|> (default).
        backend: logprob, gltr: "torch" (default) or "tf".
        device: logprob, gltr: cpu, cuda or cuda:N (default: the GPU if there is one).
        model_name: logprob, gltr: 124M, 355M, 774M, 1558M (folder in models_dir), or another folder there.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        output: Also write the JSON to this file.
        download: Download a missing released model (--nodownload: just report it).
        dtype: logprob: compute dtype: float32 (default), bfloat16 or float16.
    """
    from gpt2_common import research

    if method not in METHODS:
        raise cli.UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    limit = cli.check_int("limit", limit, 1, allow_none=True)
    try:  # the output's folder and the method's libraries, before any file is read or model loaded
        if output is not None:
            from gpt2_common.gltr import check_output_path

            output = check_output_path(output, "--output")
        if method != "logprob":
            research.require_sklearn(f"--method {method}")
    except research.ResearchError as e:
        raise cli.UsageError(str(e)) from None
    if method in MODEL_METHODS:  # checked before any file is read or model loaded
        cli.check_backend(backend)
        device = cli.check_device(device)
        dtype = cli.check_dtype(dtype)
        max_tokens = cli.check_int("max_tokens", max_tokens, 0, allow_none=True) or None
        stride = cli.check_int("stride", stride, 1, allow_none=True)
        prepend_eot = cli.check_flag("prepend_eot", prepend_eot)
        download = cli.check_flag("download", download)
    splits = ("valid", "test") if method == "logprob" else ("train", "valid", "test")
    given = {"train": (real_train, fake_train), "valid": (real_valid, fake_valid), "test": (real_test, fake_test)}
    try:
        paths = _paths(splits, given, data_dir, source, real_source)
        if source is None:
            source = research.source_name(paths["test"][1])
        source = str(source)
        data = {s: tuple(research.read_jsonl(p, limit) for p in paths[s]) for s in splits}
        for s in splits:  # before any model loads
            research.require_both_classes(s, research.labelled(*data[s])[1])
        if method == "tfidf":
            result = research.tfidf_baseline(data["train"], data["valid"], data["test"], source=source)
        else:
            result = _with_model(method, research, data, source, max_tokens, stride, prepend_eot, backend,
                                 device, dtype, model_name, models_dir, model_dir, download)
    except research.ResearchError as e:
        raise cli.UsageError(str(e)) from None
    text = _json.dumps(result)
    if output is not None:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise cli.UsageError(f"cannot write {output}: {e.strerror or e}") from None
    print(text)


def _paths(splits, given, data_dir, source, real_source):
    """``{split: (real path, generated path)}`` from the explicit flags and --data_dir/--source."""
    from gpt2_common import research

    derived = {}
    if data_dir is not None:
        if not isinstance(data_dir, str) or not data_dir:
            raise cli.UsageError(f"--data_dir must be a path, got {data_dir!r}")
        if source is None:
            raise cli.UsageError("--data_dir needs --source (e.g. small-117M)")
        derived = research.split_paths(data_dir, str(source), splits, real=str(real_source))
    paths = {}
    for s in splits:
        pair = []
        for k, kind in enumerate(("real", "fake")):
            p = given[s][k] if given[s][k] is not None else derived.get(s, (None, None))[k]
            if p is None:
                raise cli.UsageError(f"missing --{kind}_{s} (or give --data_dir and --source)")
            if not isinstance(p, str) or not p:
                raise cli.UsageError(f"--{kind}_{s} must be a path, got {p!r}")
            pair.append(p)
        paths[s] = tuple(pair)
    return paths


def _with_model(method, research, data, source, max_tokens, stride, prepend_eot, backend, device, dtype,
                model_name, models_dir, model_dir, download):
    """Load the model (after every flag and file is checked) and run the log-probability or GLTR detector."""
    path, name = cli.resolve_model_dir(model_name, models_dir, model_dir)
    cli.ensure_model_files(path, name, download)
    from gpt2_common.hparams import load_hparams
    from gpt2_common.interface import load_model

    research.check_stride(stride, load_hparams(path).n_ctx)
    model = load_model(backend, path, device=device, dtype=dtype)
    if method == "gltr":
        from gpt2_common.gltr import gltr_detection

        return gltr_detection(model, data["train"], data["valid"], data["test"], source=source,
                              max_tokens=max_tokens, stride=stride, prepend_eot=prepend_eot)
    return research.logprob_detection(model, *data["valid"], *data["test"], source=source,
                                      max_tokens=max_tokens, stride=stride, prepend_eot=prepend_eot)


def main():
    """Console-script entry point."""
    cli.run(detect, name="gpt2_detect")


if __name__ == "__main__":
    main()
