"""gpt2_inspect (issue 21's view): its --json numbers are the API's (run_with_cache's patterns,
logit_lens, heads.head_scores) on both backends, the page renders in headless Chromium with those
numbers (switching heads redraws the heat map, hovering reads a weight, no JS errors, no outside
requests), and bad input is one line, exit 2, before the model loads, with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2_common import gltr
from gpt2_common.constants import EOT_TOKEN
from test_gltr import chromium_page
from test_research import assert_user_error, run_script

# characters split over byte-level tokens (東, 😀), a newline, and a repeat for the attention to find
TEXT = "café 東京 😀 The cat sat on the mat.\nThe cat sat on the"
REPEAT = ("--repeat_length", 12, "--repeat_count", 4)


@pytest.fixture(scope="module")
def inspected(tiny_model_dir, tmp_path_factory):
    """One run: ``(folder with page.html and view.json, the JSON, stdout)``."""
    d = tmp_path_factory.mktemp("inspect")
    p = run_script("inspect_model", TEXT, "--model_dir", tiny_model_dir, "--html", d / "page.html",
                   "--json", d / "view.json", *REPEAT)
    assert p.returncode == 0, p.stderr
    return d, json.loads((d / "view.json").read_text(encoding="utf-8")), p.stdout


def test_json_is_the_apis_numbers_on_both_backends(inspected, tiny_torch, tiny_model_dir):
    from gpt2_common.interp import heads, lens

    _, v, out = inspected
    enc = tiny_torch.encoder
    tokens = [EOT_TOKEN] + enc.encode(TEXT)
    assert v["tokens"] == tokens
    assert v["about"]["backend"] == "torch" and v["about"]["model"] == str(tiny_model_dir)
    assert "\\xe6" in "".join(v["token_labels"]) and "\ufffd" not in "".join(v["token_labels"])
    assert "\u21b5" in v["token_labels"]  # the newline token
    L, H, T = 2, 2, len(tokens)
    _, cache = tiny_torch.run_with_cache(np.array([tokens]), names=[heads.pattern_name(l) for l in range(L)])
    diff = 0.0
    for l in range(L):
        for h in range(H):
            for q in range(T):
                row = np.array(v["attention"][l][h][q])
                assert row.shape == (q + 1,)
                diff = max(diff, np.abs(row - cache[heads.pattern_name(l)][0, h, q, :q + 1]).max())
    print(f"attention: max |json - run_with_cache| {diff:.2e}")
    assert diff <= 1e-6  # rounded to 6 decimals
    ll = lens.logit_lens(tiny_torch, tokens, k=5)
    jl = v["logit_lens"]
    assert jl["stages"] == ll.stages and jl["top_ids"] == ll.top_ids.tolist()
    assert jl["target_rank"] == ll.target_rank.tolist() and jl["target"] == ll.targets.tolist()
    np.testing.assert_allclose(jl["top_probs"], ll.top_probs, rtol=1e-5)
    np.testing.assert_allclose(jl["target_prob"], ll.target_prob, rtol=1e-5, atol=1e-12)
    s = heads.head_scores(tiny_torch, length=12, vocab=50257, count=4, seed=0)
    for k in heads.SCORES:
        np.testing.assert_allclose(v["head_scores"][k], getattr(s, k), atol=1e-6)
        assert [x[:2] for x in v["head_scores"]["top"][k]] == [list(lh) for lh, _ in heads.top_heads(getattr(s, k), 3)]
    assert "induction" in out and f"wrote {inspected[0] / 'page.html'}" in out
    # the TensorFlow backend, the text as --tokens, JSON on stdout: the same numbers
    ids = ",".join(map(str, tokens[1:]))
    p = run_script("inspect_model", "--tokens", ids, "--model_dir", tiny_model_dir, "--backend", "tf", "--json", *REPEAT)
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)
    assert t["about"]["backend"] == "tf" and t["tokens"] == v["tokens"]
    tl = t["logit_lens"]  # ranks deep in a random model's vocabulary may differ by float noise: not compared
    assert [[c[0] for c in st] for st in tl["top_ids"]] == [[c[0] for c in st] for st in jl["top_ids"]]
    np.testing.assert_allclose(tl["target_prob"], jl["target_prob"], rtol=1e-4, atol=1e-12)
    worst = max(abs(a - b) for l in range(L) for h in range(H) for q in range(T)
                for a, b in zip(t["attention"][l][h][q], v["attention"][l][h][q]))
    worst_scores = max(np.abs(np.array(t["head_scores"][k]) - v["head_scores"][k]).max() for k in heads.SCORES)
    print(f"tf vs torch: attention max diff {worst:.2e}, head scores {worst_scores:.2e}")
    assert worst <= 2e-6 and worst_scores <= 2e-6


def test_page_in_a_browser(inspected, tiny_model_dir):
    """Headless Chromium: no JS error, no request leaves the file, the model and backend are named;
    every head draws its own heat map, and choosing it by the selects or a thumbnail switches it;
    hovered weights, logit-lens cells and head scores are the --json numbers."""
    d, v, _ = inspected
    L, H, T = v["n_layer"], v["n_head"], len(v["tokens"])
    page, close = chromium_page({"width": 1200, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(f"pageerror {e}"))
    page.on("console", lambda m: errors.append(f"console {m.text}") if m.type in ("error", "warning") else None)
    page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith("file:") else None)
    try:
        page.goto((d / "page.html").as_uri())
        assert page.evaluate("document.body.dataset.ready") == "1"
        made = page.inner_text("#made-by")
        assert "torch" in made and str(tiny_model_dir) in made
        heatmap = lambda: page.evaluate(  # noqa: E731
            "(() => { const c = document.getElementById('heatmap');"
            " return [+c.dataset.layer, +c.dataset.head, c.toDataURL()]; })()")
        assert heatmap()[:2] == v["head_scores"]["top"]["induction"][0][:2]
        assert len(page.query_selector_all("#thumbs canvas")) == L * H
        geo = page.evaluate("(() => { const c = document.getElementById('heatmap'), r = c.getBoundingClientRect();"
                            " return [r.x, r.y, +c.dataset.x0, +c.dataset.y0, +c.dataset.cell]; })()")
        drawn = {}
        for l in range(L):
            for h in range(H):
                page.select_option("#layer", str(l))
                page.select_option("#head", str(h))
                layer, head, drawn[l, h] = heatmap()
                assert (layer, head) == (l, h)
                for q, k in ((T - 1, 0), (T - 1, T - 1), (T // 2, T // 3), (3, 2)):
                    x, y, x0, y0, cell = geo
                    page.mouse.move(x + x0 + (k + 0.5) * cell, y + y0 + (q + 0.5) * cell)
                    ds = page.evaluate("Object.assign({}, document.getElementById('readout').dataset)")
                    assert (int(ds["layer"]), int(ds["head"]), int(ds["query"]), int(ds["key"])) == (l, h, q, k)
                    value = v["attention"][l][h][q][k]
                    assert float(ds["value"]) == value
                    shown = float(page.inner_text("#readout").split()[-1])
                    assert abs(shown - value) <= 5.1e-5, (shown, value)
        assert len(set(drawn.values())) == L * H  # each head its own picture
        page.click('#thumbs canvas[data-layer="0"][data-head="1"]')
        assert heatmap()[:2] == [0, 1] and heatmap()[2] == drawn[0, 1]
        page.click('#thumbs canvas[data-layer="1"][data-head="0"]')
        assert heatmap()[:2] == [1, 0] and heatmap()[2] == drawn[1, 0]

        jl = v["logit_lens"]
        cells = page.eval_on_selector_all("#lens tbody td", "tds => tds.map(td => [+td.dataset.stage, +td.dataset.pos,"
                                          " +td.dataset.rank, +td.dataset.top, td.dataset.prob, td.className,"
                                          " td.querySelector('.tok').textContent, td.querySelector('.num').textContent])")
        assert len(cells) == len(jl["stages"]) * T
        for s, t, rank, top, prob, cls, tok, num in cells:
            assert rank == jl["target_rank"][s][t] and top == jl["top_ids"][s][t][0]
            assert float(prob) == jl["top_probs"][s][t][0] and tok == jl["top_labels"][s][t][0]
            assert abs(float(num.split()[0]) - float(prob)) <= 5e-4 * max(1.0, float(prob) * 100)
            assert cls == (f"b{int(gltr.buckets([rank])[0])}" if rank > 0 else "none")
            assert (f"#{rank}" in num) == (rank > 0)
        header = page.eval_on_selector_all("#lens thead tr:nth-child(2) th .tok", "e => e.map(x => x.textContent)")
        assert header == v["token_labels"]

        for key in ("induction", "previous", "duplicate"):
            got = page.eval_on_selector_all(f"#scores-{key} td", "tds => tds.map(td => [+td.dataset.layer,"
                                            " +td.dataset.head, td.dataset.value, td.textContent, td.classList.contains('top')])")
            top = {tuple(x[:2]) for x in v["head_scores"]["top"][key]}
            assert len(got) == L * H
            for l, h, value, text, is_top in got:
                assert float(value) == v["head_scores"][key][l][h]
                assert abs(float(text) - float(value)) <= 5.1e-4
                assert is_top == ((l, h) in top)
        page.click("#scores-previous td[data-layer='0'][data-head='0']")
        assert heatmap()[:2] == [0, 0]
        assert errors == []
    finally:
        close()


@pytest.mark.parametrize("args, needles", [
    (["--html", "{tmp}/no/such/folder/p.html"], ["--html", "does not exist"]),
    (["--json", "{tmp}"], ["--json", "is a folder"]),
    (["--text", ""], ["empty text"]),
    (["--file", "{tmp}/empty.txt"], ["empty text"]),
    (["--text", "word " * 80], ["context is 64"]),
    (["--layer", 2, "--head", 0], ["outside the model's 2 layers x 2 heads"]),
    (["--layer", 0, "--head", 2], ["outside the model's 2 layers x 2 heads"]),
    (["--layer", 1], ["--layer and --head together"]),
    (["--repeat_length", 40], ["at most 32"]),
    (["--tokens", "1,60000"], ["token id 60000 is outside the model's vocabulary of 50257"]),
    (["--tokens", "1,x"], ["--tokens must be token ids"]),  # fire: (1, 'x')
    (["--tokens", "5 x"], ["--tokens must be token ids"]),  # fire: '5 x'
    (["--tokens", "1,2", "--text", "hi"], ["not more than one"]),
])
def test_bad_input_is_one_line_before_loading(args, needles, tiny_model_dir, tmp_path):
    """Each error is one line, exit 2, nothing written; the output locations are checked first
    (a missing model folder is not what the --html / --json errors report)."""
    (tmp_path / "empty.txt").write_text("")
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    if not {"--text", "--file", "--tokens"} & set(args):
        args = ["--text", "hello"] + args
    writes_first = needles[0] in ("--html", "--json")
    model = tmp_path / "no-model" if writes_first else tiny_model_dir
    page = tmp_path / "p.html"
    p = run_script("inspect_model", *args, "--model_dir", model,
                   *(["--html", page] if "--html" not in args else []))
    assert_user_error(p, *needles)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["empty.txt"]  # nothing written
