"""Research tools (issue #6): token scoring, the log-probability detector, the TF-IDF baseline, and
the ``score`` / ``detect`` CLIs (scripts/score.py, scripts/detect.py).

Scores are checked against a direct computation from ``model.logits`` on a tiny random checkpoint
(n_ctx 64), both for one pass and for the sliding window over a text longer than the context.
The CLIs run as subprocesses on the torch backend.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt2_common import research
from gpt2_common.research import ResearchError
from conftest import need

ROOT = Path(__file__).resolve().parents[1]
EOT = 50256
OFFLINE = "http://127.0.0.1:1"  # refused at once: the tests never touch the network


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, by hand, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def manual_scores(model, seq, n_ctx, stride):
    """Per-token (logprob, rank, left context) of ``seq[1:]``, computed window by window as the
    Hugging Face perplexity recipe does, one forward pass per window (no batching)."""
    lps, ranks, ctx = {}, {}, {}
    prev_end = 1
    for begin in range(0, len(seq), stride):
        end = min(begin + n_ctx, len(seq))
        logits = model.logits(np.array([seq[begin:end]], dtype=np.int64))[0]
        lsm = log_softmax64(logits)
        for p in range(prev_end, end):
            row = logits[p - 1 - begin]
            assert p not in lps, "a token was scored twice"
            lps[p] = lsm[p - 1 - begin, seq[p]]
            ranks[p] = int((row > row[seq[p]]).sum()) + 1
            ctx[p] = p - begin
        prev_end = end
        if end == len(seq):
            break
    assert sorted(lps) == list(range(1, len(seq))), "every token is scored exactly once"
    order = range(1, len(seq))
    return (np.array([lps[p] for p in order]), np.array([ranks[p] for p in order]),
            np.array([ctx[p] for p in order]))


def write_jsonl(path: Path, texts, extra=True) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            rec = {"id": i, "ended": True, "length": len(t.split()), "text": t} if extra else {"text": t}
            f.write(json.dumps(rec) + "\n")
    return path


def run_script(script, *args, stdin=None, timeout=180):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="2", GPT2_MODELS_URL=OFFLINE, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *map(str, args)],
                          input=stdin, capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=timeout)


def assert_user_error(p, *needles):
    """Exit status 2, one stderr line starting with 'error:', no traceback."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


WORDS_A = ("river mountain forest valley meadow stream canyon glacier lake island desert prairie "
           "volcano hill cliff beach marsh tundra savanna lagoon").split()
WORDS_B = ("market stock bond investor dividend portfolio equity hedge broker merger futures "
           "currency inflation yield asset capital revenue profit ledger auditor").split()


def corpus(words, n, seed, length=30):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=length)) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# pure functions (no model)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length,n_ctx,stride", [(2, 64, 32), (64, 64, 32), (65, 64, 32), (200, 64, 32),
                                                 (200, 64, 1), (200, 64, 63), (1000, 16, 5)])
def test_window_plan_tiles_every_position_once(length, n_ctx, stride):
    plan = research.window_plan(length, n_ctx, stride)
    scored = [p for _, end, first in plan for p in range(first, end)]
    assert scored == list(range(1, length))
    for begin, end, first in plan:
        assert end - begin <= n_ctx and begin < first < end
        assert first == 1 or first - begin >= n_ctx - stride  # context past the first window
    assert (len(plan) == 1) == (length <= n_ctx)


def test_check_stride():
    assert research.check_stride(None, 64) == 32
    assert research.check_stride(63, 64) == 63
    for bad in (0, 64, 100, -1, 2.5, True, "8"):
        with pytest.raises(ResearchError, match="stride"):
            research.check_stride(bad, 64)


def test_best_threshold_and_direction():
    scores = np.array([-5.0, -4.0, -3.5, -1.0, -0.5, -2.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t, d, acc = research.best_threshold(scores, labels)
    assert d == "higher" and -3.5 < t < -2.0 and acc == 100.0
    assert research.threshold_accuracy(scores, labels, t, d) == 100.0
    t, d, acc = research.best_threshold(-scores, labels)  # generated scores lower: flipped
    assert d == "lower" and acc == 100.0
    assert research.threshold_accuracy(np.array([0.0, 1.0]), np.array([0, 0]), 0.5) == 50.0


def test_jsonl_reading_and_errors(tmp_path):
    good = write_jsonl(tmp_path / "small-117M.valid.jsonl", ["a", "b", "c"])
    assert research.read_jsonl(str(good)) == ["a", "b", "c"]
    assert research.read_jsonl(str(good), limit=2) == ["a", "b"]
    assert research.source_name(str(good)) == "small-117M"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ResearchError, match=r"bad.jsonl:2: not valid JSON"):
        research.read_jsonl(str(bad))
    bad.write_text('{"text": "ok"}\n\n{"id": 3}\n')
    with pytest.raises(ResearchError, match=r":3: expected a JSON object with a string 'text'"):
        research.read_jsonl(str(bad))
    with pytest.raises(ResearchError, match="file not found"):
        research.read_jsonl(str(tmp_path / "nope.jsonl"))


def test_tfidf_baseline_separates_vocabularies():
    need("sklearn")
    split = lambda s: (corpus(WORDS_A, 60, s), corpus(WORDS_B, 60, s + 100))  # noqa: E731
    result = research.tfidf_baseline(split(1), split(2), split(3), source="toy")
    assert list(result) == ["source", "n_train", "valid_accuracy", "test_accuracy"]
    assert result["source"] == "toy" and result["n_train"] == 120
    assert result["valid_accuracy"] == 100.0 and result["test_accuracy"] == 100.0


def test_tfidf_baseline_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    with pytest.raises(ResearchError, match=r"needs scikit-learn: pip install 'gpt2-toolkit\[detect\]'"):
        research.tfidf_baseline((["a"], ["b"]), (["a"], ["b"]), (["a"], ["b"]))


# ------------------------------------------------------------------------------------------------
# scoring on a tiny checkpoint
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(make_model_dir):
    return make_model_dir("tiny", vocab=True)


@pytest.fixture(scope="module")
def models(tiny_dir):
    need("torch")
    from gpt2_common import load_model

    return {"torch": load_model("torch", tiny_dir, device="cpu")}


@pytest.fixture(scope="module")
def tf_model(tiny_dir):
    need("tensorflow")
    from gpt2_common import load_model

    return load_model("tf", tiny_dir, device="cpu")


LONG_TEXT = ("GPT-2 is a large transformer-based language model with 1.5 billion parameters, trained on "
             "a dataset of 8 million web pages. GPT-2 is trained with a simple objective: predict the "
             "next word, given all of the previous words within some text. The diversity of the "
             "dataset causes this simple goal to contain naturally occurring demonstrations of many "
             "tasks across diverse domains. GPT-2 is a direct scale-up of GPT, with more than 10X the "
             "parameters and trained on more than 10X the amount of data.")


def test_single_pass_matches_direct_computation(models):
    model = models["torch"]
    tokens = model.encoder.encode("The quick brown fox jumps over the lazy dog, again and again.")
    r = research.score_tokens(model, tokens)
    assert r.context == [EOT] and r.tokens.tolist() == tokens
    assert r.logprobs.dtype == np.float64 and r.ranks.dtype == np.int64
    # The scorer gives every forward pass >= 17 positions (research.score.MIN_FORWARD_POSITIONS):
    # here a second, ignored row; torch multiplies 16 rows or fewer in another summation order.
    logits = model.logits(np.array([[EOT] + tokens] * 2))[0]
    lsm = log_softmax64(logits)
    expected = lsm[np.arange(len(tokens)), tokens]
    np.testing.assert_allclose(r.logprobs, expected, rtol=0, atol=1e-9)
    expected_ranks = [int((logits[i] > logits[i, t]).sum()) + 1 for i, t in enumerate(tokens)]
    assert r.ranks.tolist() == expected_ranks
    assert r.total_nll == pytest.approx(-expected.sum(), abs=1e-9)
    assert r.total_nll == pytest.approx(float(np.sum(-r.logprobs)), rel=1e-12)
    assert r.mean_nll == pytest.approx(r.total_nll / len(tokens), rel=1e-12)
    assert r.perplexity == pytest.approx(math.exp(r.mean_nll), rel=1e-12)
    # The model's own argmax has rank 1.
    top = int(np.argmax(logits[3]))
    assert research.score_tokens(model, tokens[:3] + [top]).ranks[3] == 1
    # Without <|endoftext|> the first token is context only.
    r2 = research.score_tokens(model, tokens, prepend_eot=False)
    assert r2.context == tokens[:1] and r2.n_tokens == len(tokens) - 1
    lsm2 = log_softmax64(model.logits(np.array([tokens] * 2))[0])
    np.testing.assert_allclose(r2.logprobs, lsm2[np.arange(len(tokens) - 1), tokens[1:]], atol=1e-9)
    # score_text is score_tokens on the encoded text.
    assert research.score_text(model, "The quick brown fox").tokens.tolist() == \
        model.encoder.encode("The quick brown fox")


@pytest.mark.parametrize("stride", [None, 20, 63])
def test_sliding_window_matches_manual_windows(models, stride):
    model = models["torch"]
    tokens = model.encoder.encode(LONG_TEXT)
    assert len(tokens) > 64
    r = research.score_tokens(model, tokens, stride=stride)
    s = 32 if stride is None else stride
    lps, ranks, ctx = manual_scores(model, [EOT] + tokens, 64, s)
    assert r.n_tokens == len(tokens) and r.stride == s
    np.testing.assert_allclose(r.logprobs, lps, rtol=0, atol=1e-5)
    assert r.ranks.tolist() == ranks.tolist()
    assert ctx[63:].min() >= 64 - s  # every token past the first window has >= n_ctx - stride context
    assert r.total_nll == pytest.approx(-lps.sum(), abs=1e-4)
    assert r.perplexity == pytest.approx(math.exp(r.total_nll / len(tokens)), rel=1e-12)


def test_short_text_is_one_pass_whatever_the_stride(models):
    model = models["torch"]
    tokens = model.encoder.encode("A short text that fits.")
    a = research.score_tokens(model, tokens, stride=5)
    b = research.score_tokens(model, tokens, stride=60)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)


def test_batched_and_padded_scoring_agree(models):
    model = models["torch"]
    texts = [LONG_TEXT, "Hello world.", "Another, somewhat longer, sentence to score here."]
    token_lists = [model.encoder.encode(t) for t in texts]
    single = [research.score_tokens(model, t) for t in token_lists]
    for pad in (False, True):
        for got, want in zip(research.score_many(model, token_lists, pad=pad), single):
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
    few = research.score_many(model, token_lists, max_tokens=5)
    assert [r.n_tokens for r in few] == [5, min(5, len(token_lists[1])), 5]


def test_scoring_errors(models):
    model = models["torch"]
    with pytest.raises(ResearchError, match="empty text"):
        research.score_text(model, "")
    with pytest.raises(ResearchError, match="only one token"):
        research.score_tokens(model, [11], prepend_eot=False)
    with pytest.raises(ResearchError, match="stride"):
        research.score_tokens(model, [11, 12], stride=64)
    with pytest.raises(ResearchError, match="outside"):
        research.score_tokens(model, [11, 50257])


def test_backends_agree(models, tf_model):
    torch_model = models["torch"]
    for text in ("The quick brown fox jumps over the lazy dog.", LONG_TEXT):
        a = research.score_text(torch_model, text)
        b = research.score_text(tf_model, text)
        assert a.tokens.tolist() == b.tokens.tolist()
        np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=0, atol=1e-4)
        # A rank counts logits above the token's; deep in the vocabulary (rank ~40000 of 50257
        # under random weights) logits are packed closer than the 1e-5 backend noise, so a
        # neighbour may swap sides. Near the top they are far apart and ranks must agree exactly.
        top = a.ranks <= 1000
        assert a.ranks[top].tolist() == b.ranks[top].tolist()
        assert np.all(np.abs(a.ranks - b.ranks) <= np.maximum(1, a.ranks // 1000))
        assert np.mean(a.ranks == b.ranks) >= 0.9


# ------------------------------------------------------------------------------------------------
# the log-probability detector
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_corpora(models):
    """'Generated' texts: the tiny model's own samples at temperature 0.7; 'real' texts: decoded
    uniformly random tokens. Four splits of 12 documents each, 40 tokens per document."""
    model = models["torch"]
    rng = np.random.default_rng(0)
    out = {}
    for k, split in enumerate(("valid", "test")):
        rows = model.generate(None, 40, temperature=0.7, batch_size=12, seed=[100 * k + i for i in range(12)])
        fake = [model.encoder.decode(r.tolist()) for r in rows]
        real = [model.encoder.decode(rng.integers(0, EOT, size=40).tolist()) for _ in range(12)]
        out[split] = (real, fake)
    return out


def test_logprob_detection_separates_own_samples(models, toy_corpora):
    model = models["torch"]
    real, fake = toy_corpora["valid"]
    lp_real = research.mean_logprobs(model, real)
    lp_fake = research.mean_logprobs(model, fake)
    assert lp_fake.min() > lp_real.max()  # the model likes its own samples better
    expected = [research.score_text(model, t, max_tokens=256).mean_logprob for t in real[:3]]
    np.testing.assert_allclose(lp_real[:3], expected, atol=1e-5)
    result = research.logprob_detection(model, *toy_corpora["valid"], *toy_corpora["test"], source="toy")
    assert result["method"] == "logprob" and result["source"] == "toy"
    assert result["n_valid"] == result["n_test"] == 24
    assert result["direction"] == "higher" and lp_real.max() < result["threshold"] < lp_fake.min()
    assert result["valid_accuracy"] == 100.0 and result["test_accuracy"] >= 95.0


# ------------------------------------------------------------------------------------------------
# CLIs (torch backend, subprocesses)
# ------------------------------------------------------------------------------------------------

def test_score_cli_json_and_stdin(models, tiny_dir, tmp_path):
    model = models["torch"]
    text = "Hello world, this is a test."
    p = run_script("score", "--model_dir", tiny_dir, "--device", "cpu", "--json", "-", stdin=text)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    r = research.score_text(model, text)
    assert out["tokens"] == r.tokens.tolist() and out["ranks"] == r.ranks.tolist()
    assert "".join(out["token_strings"]) == text
    np.testing.assert_allclose(out["logprobs"], r.logprobs, atol=1e-6)
    assert out["n_tokens"] == len(out["tokens"])
    assert out["total_nll"] == pytest.approx(-sum(out["logprobs"]), abs=1e-6)
    assert out["perplexity"] == pytest.approx(math.exp(out["mean_nll"]), rel=1e-9)
    # A .jsonl file gives one result per line; plain output is a table plus a summary line.
    docs = write_jsonl(tmp_path / "docs.jsonl", [text, LONG_TEXT])
    p = run_script("score", "--model_dir", tiny_dir, "--device", "cpu", "--file", docs, "--json")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and [(d["line"], d["id"]) for d in lines] == [(1, 0), (2, 1)], p.stderr
    assert lines[0]["tokens"] == out["tokens"]
    p = run_script("score", text, "--model_dir", tiny_dir, "--device", "cpu")
    assert p.returncode == 0, p.stderr
    rows = p.stdout.splitlines()
    assert rows[0].split() == ["pos", "token", "logprob", "rank"] and len(rows) == r.n_tokens + 2
    assert rows[-1].startswith(f"tokens {r.n_tokens}  total NLL {r.total_nll:.4f}")


def test_score_cli_errors(tiny_dir, tmp_path):
    assert_user_error(run_script("score", "--model_dir", tiny_dir, "--file", tmp_path / "missing.txt"),
                      "file not found")
    assert_user_error(run_script("score", "--model_dir", tiny_dir, "-", stdin=""), "empty text")


def test_detect_cli(tiny_dir, toy_corpora, tmp_path):
    files = {}
    for split, (real, fake) in toy_corpora.items():
        files[f"--real_{split}"] = write_jsonl(tmp_path / f"webtext.{split}.jsonl", real)
        files[f"--fake_{split}"] = write_jsonl(tmp_path / f"tiny-k0.{split}.jsonl", fake)
    args = [a for kv in files.items() for a in kv]
    p = run_script("detect", *args, "--model_dir", tiny_dir, "--device", "cpu", "--limit", 10,
                   "--output", tmp_path / "out.json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out == json.loads((tmp_path / "out.json").read_text())
    assert {"source", "method", "n_valid", "n_test", "threshold", "valid_accuracy", "test_accuracy"} <= set(out)
    assert out["source"] == "tiny-k0" and out["method"] == "logprob"
    assert out["n_valid"] == out["n_test"] == 20 and out["valid_accuracy"] == 100.0
    # A broken line is a one-line error (before any model is loaded).
    with open(tmp_path / "tiny-k0.test.jsonl", "a") as f:
        f.write("{not json\n")
    assert_user_error(run_script("detect", "--data_dir", tmp_path, "--source", "tiny-k0",
                                 "--model_dir", tiny_dir), "tiny-k0.test.jsonl:13: not valid JSON")


def test_detect_refuses_a_split_with_one_class(models, toy_corpora, tmp_path):
    """A validation or test split without real or without generated documents is refused (an
    empty generated test file used to score "100% test accuracy"), by the library and by the CLI,
    before any model is looked for."""
    real, fake = toy_corpora["valid"]
    for valid, test, split in (((real, []), (real, fake), "valid"), ((real, fake), (real, []), "test"),
                               ((real, fake), ([], fake), "test")):
        with pytest.raises(ResearchError, match=f"the {split} split needs both real and generated"):
            research.logprob_detection(models["torch"], *valid, *test)
    for split in ("train", "valid", "test"):
        write_jsonl(tmp_path / f"webtext.{split}.jsonl", real)
        write_jsonl(tmp_path / f"tiny-k0.{split}.jsonl", fake)
    (tmp_path / "tiny-k0.test.jsonl").write_text("")
    for method in ("logprob", "tfidf", "gltr"):
        assert_user_error(run_script("detect", "--method", method, "--data_dir", tmp_path, "--source", "tiny-k0",
                                     "--model_dir", tmp_path / "no-model"),
                          "the test split needs both real and generated documents (it has no generated ones)")
