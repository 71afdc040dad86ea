"""GLTR view (issue 16): rank buckets, the ``gpt2_score --html/--plot`` outputs and
``gpt2_detect --method gltr``, on the tiny random checkpoint.

The HTML page is parsed with ``html.parser`` and every token's bucket, rank and log-probability and
the histogram's counts are checked against ``gpt2_score --json`` of the same text. The detector must
tell the model's own samples (top-10 sampling: ranks stay low) from random word salad.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import need, unavailable

from gpt2_common import gltr, research
from test_research import ROOT, WORDS_A, WORDS_B, assert_user_error, log_softmax64, run_script

TEXT = "GPT-2 reads the river, the market and the glacier.\nThen it guesses: what comes next?"


def test_buckets():
    ranks = [1, 10, 11, 100, 101, 1000, 1001, 50000]
    assert gltr.buckets(ranks).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert gltr.bucket_counts(ranks).tolist() == [2, 2, 2, 2]
    assert gltr.bucket_counts([]).tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(gltr.bucket_fractions([1, 1, 5000]), [2 / 3, 0, 0, 1 / 3])
    assert gltr.BUCKET_NAMES == ("top 10", "top 100", "top 1000", "beyond 1000")


def test_top_k_alternatives(tiny_torch):
    tokens = tiny_torch.encoder.encode(TEXT)
    r = research.score_tokens(tiny_torch, tokens, top_k=5)
    assert r.top_tokens.shape == r.top_logprobs.shape == (len(tokens), 5)
    lsm = log_softmax64(tiny_torch.logits(np.array([[50256] + tokens]))[0])[:-1]
    order = np.argsort(-lsm, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(r.top_tokens, order)
    np.testing.assert_allclose(r.top_logprobs, np.take_along_axis(lsm, order, axis=1), atol=1e-9)
    assert ((r.top_tokens[:, 0] == r.tokens) == (r.ranks == 1)).all()
    assert research.score_tokens(tiny_torch, tokens).top_tokens is None


class Page(HTMLParser):
    """Collects the scored tokens (text and data-*), the counts table and the SVG bars."""

    def __init__(self):
        super().__init__()
        self.tokens, self.counts, self.bars, self.stack, self.external = [], {}, [], [], []
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "").split()
        self.external += [v for k, v in attrs if k in ("src", "href") or (k == "rel")]
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)
        if tag == "span" and "tok" in cls:
            self.tokens.append({"bucket": int(a["data-bucket"]), "rank": int(a["data-rank"]),
                                "logprob": float(a["data-logprob"]), "cls": cls, "text": "", "tip": ""})
        if tag == "tr" and "data-bucket" in a:
            self._row = int(a["data-bucket"])
        if tag == "rect":
            self.bars.append(int(a["data-count"]))
        self.stack.append((tag, cls))

    def handle_endtag(self, tag):
        self.stack.pop()

    def handle_data(self, data):
        if not self.stack:
            return
        tag, cls = self.stack[-1]
        if tag == "span" and "tok" in cls:
            self.tokens[-1]["text"] += data
        elif tag == "span" and "tip" in cls:
            self.tokens[-1]["tip"] += data
        elif tag == "td" and self._row is not None and "count" in cls:
            self.counts[self._row] = int(data)


def test_score_html_and_plot_match_the_scores(tiny_model_dir, tmp_path):
    page, png = tmp_path / "view.html", tmp_path / "hist.png"
    p = run_script("score", "--file", _write(tmp_path / "t.txt", TEXT), "--model_dir", tiny_model_dir, "--json",
                   "--html", page, "--plot", png)
    assert p.returncode == 0, p.stderr
    scores = json.loads(p.stdout)
    parsed = Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert not parsed.external, parsed.external  # self-contained
    assert [t["rank"] for t in parsed.tokens] == scores["ranks"]
    assert [t["bucket"] for t in parsed.tokens] == gltr.buckets(scores["ranks"]).tolist()
    assert all(f"b{t['bucket']}" in t["cls"] for t in parsed.tokens)
    np.testing.assert_allclose([t["logprob"] for t in parsed.tokens], scores["logprobs"], atol=1e-6)
    assert "".join(t["text"] for t in parsed.tokens) == TEXT
    expected = gltr.bucket_counts(scores["ranks"]).tolist()
    assert [parsed.counts[k] for k in range(4)] == expected == parsed.bars
    assert sum(expected) == scores["n_tokens"]
    for t in parsed.tokens:  # hover: the token, rank, probability, 5 alternatives
        token, rank = t["tip"].split("\n")[:2]
        assert token.startswith("token ") and " (id " in token, t["tip"]
        assert rank.startswith(f"rank {t['rank']}   p = ") and t["tip"].count("\n  ") == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (320, 500)


# a character split over byte-level tokens (東, 😀), newlines, and a line long enough to wrap
BROWSER_TEXT = ("café 東京 😀 and a long line of plain words that goes on until it wraps at the right "
                "edge of the page, so that the last tokens sit near that edge.\nSecond line.\n\nThird.")


def chromium_page(viewport):
    """A Playwright page in Debian's headless Chromium (``apt-get install chromium``; Playwright
    cannot download its own browser here), and a function to close it."""
    sync = need("playwright.sync_api")
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(exe):
        unavailable("no chromium executable (apt-get install chromium)")
    pw = sync.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=exe, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])

    def close():
        browser.close()
        pw.stop()

    return browser.new_page(viewport=viewport), close


def test_gltr_page_in_a_browser(tiny_model_dir, tmp_path):
    """Rendered by Chromium: the text reads back whole (no U+FFFD), every token has a box to hover
    (a continuation-only piece of a character, a newline), each hover box shows its token and stays
    inside the window, under the token, and the page names the model and backend."""
    page_path = tmp_path / "view.html"
    p = run_script("score", "--file", _write(tmp_path / "t.txt", BROWSER_TEXT), "--model_dir",
                   tiny_model_dir, "--json", "--html", page_path)
    assert p.returncode == 0, p.stderr
    n_tokens = json.loads(p.stdout)["n_tokens"]
    width = 640
    page, close = chromium_page({"width": width, "height": 900})
    try:
        page.goto(page_path.as_uri())
        assert page.inner_text("#text") == BROWSER_TEXT
        made_by = page.inner_text("#made-by")
        assert "torch" in made_by and str(tiny_model_dir) in made_by and "float32" in made_by
        tokens = page.query_selector_all("#text .tok")
        assert len(tokens) == n_tokens
        assert len(page.query_selector_all("#text .tok.part")) >= 2  # pieces of 東 and 😀
        assert len(page.query_selector_all("#text .tok .nl")) == BROWSER_TEXT.count("\n")
        for i, tok in enumerate(tokens):  # hover the widest of its boxes (a token may wrap)
            rects = tok.evaluate("e => Array.from(e.getClientRects(), r => [r.x, r.y, r.width, r.height])")
            x, y, w, h = max(rects, key=lambda r: r[2]) if rects else (0, 0, 0, 0)
            assert w >= 3 and h >= 5, (i, tok.inner_text(), rects)
            page.mouse.move(x + w / 2, y + h / 2)
            tip = tok.query_selector(".tip")
            box = tip.bounding_box()
            assert tip.is_visible() and box, i
            assert 0 <= box["x"] and box["x"] + box["width"] <= width, (i, box)
            assert y < box["y"] <= y + 3 * h, (i, (x, y, w, h), box)  # under the token's line
            assert tip.inner_text().startswith("token "), tip.inner_text()
            assert "\ufffd" not in tip.inner_text()
    finally:
        close()


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_score_html_bad_paths(tiny_model_dir, tmp_path):
    jsonl = _write(tmp_path / "d.jsonl", json.dumps({"text": "hello there"}) + "\n")
    cases = [(("hello", "--html", tmp_path / "missing" / "v.html"), "--html: folder"),
             (("hello", "--plot", tmp_path), "is a folder"),
             (("--file", jsonl, "--html", tmp_path / "v.html"), "not .jsonl")]
    for args, needle in cases:
        assert_user_error(run_script("score", *args, "--model_dir", tiny_model_dir, timeout=120), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


@pytest.fixture(scope="module")
def splits(tiny_torch):
    """train, valid, test: (real, generated) with 16 documents each: random word salad vs the
    model's own top-10 samples (sampled here straight from the logits, all splits in one batch)."""
    n, rng = 16, np.random.default_rng(1)
    x = np.full((3 * n, 1), 50256)
    for _ in range(24):
        top = np.argsort(-tiny_torch.logits(x)[:, -1], axis=1)[:, :10]
        x = np.concatenate([x, top[np.arange(3 * n), rng.integers(0, 10, 3 * n)][:, None]], axis=1)
    fake = [tiny_torch.encoder.decode(row[1:].tolist()) for row in x]
    real = [" ".join(rng.choice(WORDS_A + WORDS_B, size=20)) for _ in range(3 * n)]
    return [(real[k * n:(k + 1) * n], fake[k * n:(k + 1) * n]) for k in range(3)]


def test_gltr_detector_separates(tiny_torch, splits):
    need("sklearn")
    train, valid, test = splits
    feats = gltr.gltr_features(tiny_torch, test[1], max_tokens=64)
    assert feats.shape == (16, 4) and np.allclose(feats.sum(axis=1), 1)
    result = gltr.gltr_detection(tiny_torch, train, valid, test, source="toy", max_tokens=64)
    assert list(result) == ["source", "method", "n_train", "n_valid", "n_test", "max_tokens", "C",
                            "valid_accuracy", "test_accuracy"]
    assert result["n_train"] == result["n_test"] == 32 and result["method"] == "gltr"
    assert result["test_accuracy"] >= 90.0 and result["valid_accuracy"] >= 90.0, result


def test_detect_cli_gltr(splits, tiny_model_dir, tmp_path):
    need("sklearn")
    for split, (real, fake) in zip(("train", "valid", "test"), splits):
        for name, texts in (("webtext", real[:12]), ("toy", fake[:12])):
            _write(tmp_path / f"{name}.{split}.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts))
    p = run_script("detect", "--method", "gltr", "--data_dir", tmp_path, "--source", "toy",
                   "--model_dir", tiny_model_dir, "--max_tokens", "64")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["method"] == "gltr" and out["source"] == "toy" and out["n_test"] == 24
    assert out["test_accuracy"] >= 90.0, out


def _run_without(modules, script, *args, tmp_path):
    """``run_script`` with ``modules`` made unimportable (``sys.modules[m] = None`` in a
    sitecustomize on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src"), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)


def test_outputs_and_optional_dependencies_checked_first(tmp_path):
    """--plot without matplotlib, gpt2_detect --output in a missing folder, and a detector without
    scikit-learn are refused before any model is looked for (the model folder does not exist)."""
    no_model = tmp_path / "no-model"
    p = _run_without(["matplotlib"], "score", "hello", "--model_dir", no_model, "--plot", tmp_path / "h.png",
                     "--html", tmp_path / "v.html", tmp_path=tmp_path)
    assert_user_error(p, "--plot needs matplotlib")
    for split in ("train", "valid", "test"):
        for name in ("webtext", "toy"):
            _write(tmp_path / f"{name}.{split}.jsonl", json.dumps({"text": f"{name} {split}"}) + "\n")
    common = ("--data_dir", tmp_path, "--source", "toy", "--model_dir", no_model)
    assert_user_error(run_script("detect", *common, "--output", tmp_path / "missing" / "out.json"),
                      "--output: folder", "does not exist")
    p = _run_without(["sklearn"], "detect", "--method", "gltr", *common, tmp_path=tmp_path)
    assert_user_error(p, "--method gltr needs scikit-learn")
    assert sorted(f.name for f in tmp_path.iterdir() if not f.name.endswith(".jsonl")) == ["site"]
