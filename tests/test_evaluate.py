"""Zero-shot evaluation (issue 16): gpt2_common.evaluate and scripts/eval.py (gpt2_eval).

The metrics are checked three ways on the tiny random checkpoint (n_ctx 64): against a direct
computation from ``model.logits``, between the two backends (<= 1e-4 relative), and against Hugging
Face ``transformers.GPT2LMHeadModel`` given the same weights. Half of the LAMBADA passages are built
so that their last word is the model's greedy choice, so accuracy is 50%, not a trivial 0%.
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
from conftest import need

from gpt2_common import evaluate
from gpt2_common.research import ResearchError
from test_download import Server
from test_research import EOT, assert_user_error, run_script

WORDS = ("river mountain forest valley meadow stream canyon glacier lake island desert prairie volcano "
         "market stock bond investor dividend portfolio equity broker merger currency yield").split()
REL = 1e-4


@pytest.fixture(scope="module")
def passages(tiny_torch):
    """8 passages (< 64 tokens): 4 ending in the model's greedy next word, 4 in a random word."""
    enc, rng = tiny_torch.encoder, np.random.default_rng(5)
    greedy, other = [], []
    while len(greedy) < 4 or len(other) < 4:
        context = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 20))))
        ids = enc.encode(context)
        best = int(np.argmax(tiny_torch.logits(np.array([ids]))[0, -1]))
        word = enc.decode([best])
        if len(greedy) < 4 and re.fullmatch(r" [A-Za-z]{2,}", word) and enc.encode(context + word) == ids + [best]:
            greedy.append(context + word)
        elif len(other) < 4:
            other.append(context + " " + str(rng.choice(WORDS)))
    return greedy + other


DOCS = ["The river ran through the valley , and the glacier @-@ fed lake was cold . " * 6,
        "Short second document about the market.", "   "]


def hf_model(tiny_model_dir, hp):
    torch = need("torch")
    transformers = need("transformers")
    from gpt2_common.weights import huggingface_state, load_weights

    config, state = huggingface_state(load_weights(str(tiny_model_dir), hp), hp)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    return model


def hf_logprobs(model, ids):
    """log-softmax (float64) of HF's logits for one sequence."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, -1).numpy()


# ------------------------------------------------------------------------------------------------

def test_split_and_examples(tiny_torch):
    assert evaluate.split_passage("a b c") == ("a b", " c")
    assert evaluate.split_passage("word") == ("", " word")
    assert evaluate.split_passage("ends in space ") is None and evaluate.split_passage("  ") is None
    enc = tiny_torch.encoder
    examples, skipped = evaluate.lambada_examples(["the lake froze", "alone", ""], enc)
    assert skipped == 1
    (toks, k), (toks2, k2) = examples
    assert toks == enc.encode("the lake froze") and toks[-k:] == enc.encode("the lake froze")[len(enc.encode("the lake")):]
    assert toks2[0] == EOT and toks2[1:] == enc.encode(" alone")  # empty context: <|endoftext|>
    last, _ = evaluate.lambada_examples(["the lake froze"], enc, target="last_token")
    assert last[0] == (enc.encode("the lake froze"), 1)
    with pytest.raises(ResearchError, match="unknown target"):
        evaluate.lambada_examples(["a b"], enc, target="nope")


def test_two_spaces_before_the_last_word_split_as_the_harness_does(tiny_torch):
    """lm-evaluation-harness: doc_to_text ``" ".join(text.split(" ")[:-1])``, doc_to_target
    ``" " + text.split(" ")[-1]``, then ``_encode_pair`` moves the context's trailing spaces into
    the target: the space token is predicted, not given."""
    enc = tiny_torch.encoder
    for text in ("the lake  froze", "she said:\n  yes", "the lake froze   early"):
        words = text.split(" ")
        context, target = " ".join(words[:-1]), " " + words[-1]
        assert evaluate.split_passage(text) == (context, target)
        n = len(context) - len(context.rstrip())
        context, target = context[:-n], context[-n:] + target  # _encode_pair
        (toks, k), = evaluate.lambada_examples([text], enc)[0]
        assert toks[:-k] == enc.encode(context) and toks[-k:] == enc.encode(context + target)[len(enc.encode(context)):]
        assert k >= 2 and enc.decode(toks[-k:]) == target


def test_lambada_matches_direct_computation_and_hf(tiny_torch, passages, tiny_model_dir):
    got = evaluate.lambada(tiny_torch, passages + ["blank at the end "], batch_size=3, progress=False)
    assert got["n"] == 8 and got["skipped"] == 1
    assert got["accuracy"] == 50.0  # the 4 greedy passages, and only they
    hf = hf_model(tiny_model_dir, tiny_torch.hparams)
    enc, lls, hits = tiny_torch.encoder, [], []
    for text in passages:
        context, word = text.rsplit(" ", 1)
        ctx = enc.encode(context)
        target = enc.encode(context + " " + word)[len(ctx):]
        lp = hf_logprobs(hf, ctx + target)
        rows = range(len(ctx) - 1, len(ctx) + len(target) - 1)
        lls.append(sum(lp[r, t] for r, t in zip(rows, target)))
        hits.append(all(int(np.argmax(lp[r])) == t for r, t in zip(rows, target)))
    assert got["accuracy"] == pytest.approx(100.0 * np.mean(hits))
    assert got["perplexity"] == pytest.approx(math.exp(-np.mean(lls)), rel=REL)
    last = evaluate.lambada(tiny_torch, passages, target="last_token", progress=False)
    lls = [hf_logprobs(hf, enc.encode(t))[-2, enc.encode(t)[-1]] for t in passages]
    assert last["perplexity"] == pytest.approx(math.exp(-np.mean(lls)), rel=REL)


def hf_sliding_ll(hf, ids, n_ctx, stride):
    """Sum of log P over ``ids[1:]``, with the Hugging Face recipe's windows, one pass per window."""
    total, prev_end = 0.0, 1
    for begin in range(0, len(ids), stride):
        end = min(begin + n_ctx, len(ids))
        lp = hf_logprobs(hf, ids[begin:end])
        total += sum(lp[p - 1 - begin, ids[p]] for p in range(prev_end, end))
        prev_end = end
        if end == len(ids):
            break
    return total


@pytest.mark.parametrize("stride", [None, 20])
def test_perplexity_matches_hf(tiny_torch, tiny_model_dir, stride):
    got = evaluate.perplexity(tiny_torch, DOCS, stride=stride, progress=False)
    hf = hf_model(tiny_model_dir, tiny_torch.hparams)
    kept = DOCS[:2]
    ids = [[EOT] + tiny_torch.encoder.encode(d) for d in kept]
    assert len(ids[0]) > 64  # windows are exercised
    ll = sum(hf_sliding_ll(hf, i, 64, stride or 32) for i in ids)
    n = sum(len(i) - 1 for i in ids)
    words = sum(len(re.split(r"\s+", d)) for d in kept)
    n_bytes = sum(len(d.encode("utf-8")) for d in kept)
    assert (got["n"], got["documents"], got["skipped"], got["words"], got["bytes"]) == (n, 2, 1, words, n_bytes)
    assert got["perplexity"] == pytest.approx(math.exp(-ll / n), rel=REL)
    assert got["bits_per_byte"] == pytest.approx(-ll / n_bytes / math.log(2), rel=REL)
    assert got["word_perplexity"] == pytest.approx(math.exp(-ll / words), rel=REL)


def test_wikitext_detokenizer_scores_clean_text_but_counts_original(tiny_torch):
    raw = " = Valley = \n The glacier @-@ fed lake ( 1 @,@ 200 m ) is n't warm , it 's \" cold \" . \n"
    clean = evaluate.wikitext_detokenize(raw)
    assert clean == " = Valley =\nThe glacier-fed lake (1,200 m) isn't warm, it's \"cold\".\n"
    a = evaluate.perplexity(tiny_torch, [raw], detokenizer="wikitext", progress=False)
    b = evaluate.perplexity(tiny_torch, [clean], progress=False)
    assert a["n"] == b["n"] == len(tiny_torch.encoder.encode(clean))
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-9)
    assert a["words"] == evaluate.count_words(raw) and a["bytes"] == len(raw.encode())


def test_backends_agree(tiny_model_dir, tiny_torch, passages):
    need("tensorflow")
    from gpt2_common import load_model

    tf_model = load_model("tf", tiny_model_dir, device="cpu")
    long = " ".join(WORDS * 4)  # longer than n_ctx: scored with the sliding windows
    assert len(tiny_torch.encoder.encode(long)) > 64
    for target in evaluate.TARGETS:
        a = evaluate.lambada(tiny_torch, passages + [long], target=target, batch_size=5, progress=False)
        b = evaluate.lambada(tf_model, passages + [long], target=target, batch_size=5, progress=False)
        assert a["n"] == b["n"] == 9
        assert a["accuracy"] == b["accuracy"]
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=REL)
    a = evaluate.perplexity(tiny_torch, DOCS, stride=16, progress=False)
    b = evaluate.perplexity(tf_model, DOCS, stride=16, progress=False)
    for key in ("perplexity", "bits_per_byte", "word_perplexity"):
        assert a[key] == pytest.approx(b[key], rel=REL), key


# ------------------------------------------------------------------------------------------------
# the CLI
# ------------------------------------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_lambada_json_and_download(tiny_model_dir, passages, tmp_path, monkeypatch):
    server = Server()
    body = "".join(json.dumps({"text": t}) + "\n" for t in passages + [" "]).encode()
    server.files["/lambada_test.jsonl"] = body
    server.behave["/lambada_test.jsonl"] = ["drop"]  # resumed by the project's downloader
    monkeypatch.setenv("GPT2_LAMBADA_URL", server.url)
    try:
        p = run_script("eval", "lambada", "--data_dir", tmp_path / "data", "--model_dir", tiny_model_dir, "--json",
                       "--batch_size", "3", "--noprogress")
    finally:
        server.close()
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "data" / "lambada_test.jsonl").read_bytes() == body
    assert [r[1] for r in server.requests][1].startswith("bytes=")
    out = json.loads(p.stdout)
    assert out["task"] == "lambada" and out["n"] == 8 and out["skipped"] == 1 and out["accuracy"] == 50.0
    assert out["target"] == "word" and out["batch_size"] == 3 and out["stride"] == 32
    p = run_script("eval", "perplexity", "--file", write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]),
                   "--model_dir", tiny_model_dir, "--stride", "20")
    assert p.returncode == 0, p.stderr
    assert re.match(r".*d\.jsonl: \d+ tokens, \d+ words, \d+ bytes  perplexity [\d.]+  bits/byte [\d.]+  "
                    r"word perplexity [\d.]+$", p.stdout.strip()), p.stdout


def test_cli_bad_input(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_LAMBADA_URL", "http://127.0.0.1:1")  # refused at once
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"text": "a b"}, {"id": 2}])
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": " "}, {"text": "x "}])
    m = ("--model_dir", tiny_model_dir)
    cases = [
        (("lambada", "--data", tmp_path / "missing.jsonl", *m), "file not found"),
        (("lambada", "--data", empty, *m), "no passages"),
        (("lambada", "--data", no_text, *m), "no_text.jsonl:2: expected a JSON object with a string 'text'"),
        (("lambada", "--data", blank, *m), "no passage has a word to predict (2 skipped)"),
        (("lambada", "--data_dir", tmp_path / "nodata", "--nodownload", *m), "is missing"),
        (("lambada", "--data_dir", tmp_path / "nodata", *m), "cannot reach 127.0.0.1:1"),
        (("lambada", "--data", blank, "--target", "first", *m), "unknown target"),
        (("perplexity", "--file", empty, *m), "no text to evaluate"),
        (("perplexity", "--file", blank, "--stride", "64", *m), "stride must be an integer in [1, 63]"),
        (("perplexity", "--file", blank, "--detokenizer", "ptb", *m), "unknown detokenizer"),
    ]
    for args, needle in cases:
        assert_user_error(run_script("eval", *args, timeout=120), needle)
    assert sorted(os.listdir(tmp_path)) == ["blank.jsonl", "empty.jsonl", "no_text.jsonl"]  # nothing left
