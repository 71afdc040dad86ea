"""The sampling CLIs (scripts/interactive_conditional_samples.py, scripts/generate_unconditional_samples.py)
and their shared plumbing in gpt2_common.cli.

The CLIs are driven as subprocesses on a tiny random model in the original layout. TensorFlow
starts slowly, so most runs use the torch backend; a few TF runs check that both backends print
the same text for the same seed.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpt2_common import cli

ROOT = Path(__file__).resolve().parents[1]
INTERACTIVE = "interactive_conditional_samples"
UNCONDITIONAL = "generate_unconditional_samples"
HEADER = re.compile(r"={40} SAMPLE (\d+) ={40}$", re.M)  # after "Model prompt >>> " when piped
OFFLINE = "http://127.0.0.1:1"  # refused at once: the tests never touch the network
# TensorFlow's C++ runtime logs these at start-up whatever TF_CPP_MIN_LOG_LEVEL says (absl writes to
# stderr before it is initialised); they are TensorFlow's, not the CLI's, so the checks skip them.
TF_STARTUP_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are "
                            r"written to STDERR|I0000 \S+ +\d+ port\.cc:\d+\] oneDNN custom operations .*)\n",
                            re.M)


def run_cli(script, *args, stdin=None, cwd=None, env=None, timeout=180):
    """Run a script as a user would; returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                    TF_CPP_MIN_LOG_LEVEL="2", GPT2_MODELS_URL=OFFLINE, PYTHONIOENCODING="utf-8")
    full_env.update(env or {})
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *map(str, args)],
                       input=None if stdin is None else stdin.encode("utf-8"), capture_output=True,
                       cwd=cwd, env=full_env, timeout=timeout)
    # bytes, decoded here: text mode would translate any "\r" the random model prints
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode("utf-8"),
                                       TF_STARTUP_LOG.sub("", p.stderr.decode("utf-8", errors="replace")))


def samples(stdout):
    """``[(number, text), ...]`` from the original output format."""
    parts = HEADER.split(stdout)
    out = []
    for i in range(1, len(parts), 2):
        text = parts[i + 1]
        text = text[1:] if text.startswith("\n") else text  # the header's newline
        text = text.split("\n" + "=" * 80 + "\n")[0]
        out.append((int(parts[i]), text[:-1] if text.endswith("\n") else text))
    return out


def assert_user_error(p, *needles):
    """Exit status 2, exactly one stderr line starting 'error:', no traceback, nothing on stdout."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert [l for l in lines if l.startswith("error: ")] == [lines[-1]], p.stderr
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def model(make_model_dir):
    return make_model_dir("tiny", vocab=True)


@pytest.fixture(scope="module")
def encoder(vocab_dir):
    from gpt2_common.encoder import load_encoder

    return load_encoder(vocab_dir)


# ---------------------------------------------------------------------------- interactive

def test_interactive_two_prompts_piped(model, tmp_path):
    p = run_cli(INTERACTIVE, "--model_dir", model, "--seed", 3, "--length", 8,
                stdin="Hello world\n\nThe dog\n", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    out = p.stdout
    assert out.startswith("Model prompt >>> " + "=" * 40 + " SAMPLE 1 " + "=" * 40 + "\n")
    assert out.count("Model prompt >>> ") == 4  # two prompts, one empty line re-asked, then EOF
    assert out.count("Prompt should not be empty!\n") == 1
    assert out.count("\n" + "=" * 80 + "\n") == 2
    assert [n for n, _ in samples(out)] == [1, 1]
    assert out.endswith("=" * 80 + "\nModel prompt >>> \n")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_interactive_nsamples_not_divisible_by_batch(model, tmp_path):
    p = run_cli(INTERACTIVE, "--model_dir", model, "--seed", 5, "--length", 6, "--nsamples", 3,
                "--batch_size", 2, stdin="one\ntwo\n", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    got = samples(p.stdout)
    assert [n for n, _ in got] == [1, 2, 3, 1, 2, 3]
    assert len({t for _, t in got}) == 6  # every sample its own draw
    # the seed fixes each sample, whatever the batch size
    q = run_cli(INTERACTIVE, "--model_dir", model, "--seed", 5, "--length", 6, "--nsamples", 3,
                stdin="one\ntwo\n", cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    assert q.stdout == p.stdout


def test_interactive_same_seed_same_text_on_both_backends(model, tmp_path):
    args = ("--model_dir", model, "--seed", 11, "--length", 12, "--top_k", 40)
    stdin = "It was a dark and stormy night\nÜber 😀\n"
    torch_run = run_cli(INTERACTIVE, *args, stdin=stdin, cwd=tmp_path)
    tf_run = run_cli(INTERACTIVE, *args, "--backend", "tf", stdin=stdin, cwd=tmp_path)
    assert torch_run.returncode == 0 and tf_run.returncode == 0, (torch_run.stderr, tf_run.stderr)
    assert torch_run.stdout == tf_run.stdout
    assert len(samples(torch_run.stdout)) == 2
    other = run_cli(INTERACTIVE, *args[:3], 12, *args[4:], stdin=stdin, cwd=tmp_path)
    assert other.stdout != torch_run.stdout


def test_interactive_prompt_too_long_piped_exits_2(model, tmp_path):
    # n_ctx = 64, default length 32: a prompt of 40 tokens does not fit
    p = run_cli(INTERACTIVE, "--model_dir", model, "--seed", 1, stdin="ok\n" + " dog" * 40 + "\n",
                cwd=tmp_path)
    assert_user_error(p, "prompt of 40 tokens", "context of 64")
    assert len(samples(p.stdout)) == 1  # the first prompt was answered before
    assert p.stdout.endswith("=" * 80 + "\nModel prompt >>> ")


def test_interactive_stop_at_endoftext(tmp_path, vocab_dir):
    d = eot_model(tmp_path / "eot", vocab_dir)
    args = ("--model_dir", d, "--seed", 2, "--length", 30, "--nsamples", 4, "--batch_size", 2)
    plain = run_cli(INTERACTIVE, *args, stdin="Hi\n", cwd=tmp_path)
    stop = run_cli(INTERACTIVE, *args, "--stop_at_endoftext", stdin="Hi\n", cwd=tmp_path)
    assert plain.returncode == 0 and stop.returncode == 0, (plain.stderr, stop.stderr)
    full, cut = samples(plain.stdout), samples(stop.stdout)
    assert [n for n, _ in cut] == [1, 2, 3, 4]
    assert all("<|endoftext|>" in t for _, t in full)
    for (_, f), (_, c) in zip(full, cut):  # the same draws, cut before the first <|endoftext|>
        assert "<|endoftext|>" not in c and f.startswith(c) and f[len(c):].startswith("<|endoftext|>")


def eot_model(d, vocab_dir):
    """A tiny model whose every next-token distribution gives <|endoftext|> about 25%."""
    from gpt2_common.hparams import HParams
    from gpt2_common.weights import random_weights, save_model

    hp = HParams(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2)
    w = random_weights(hp, seed=1, scale=0.3)
    u = np.zeros(32, np.float32)
    u[0] = 1.0
    w["model/wte"][:, 0] = 0.0
    w["model/wte"][50256] = 9.5 * u  # logit 9.5 against ~50k others near 0: p(eot) ~ 0.25
    w["model/ln_f/g"][:] = 0.0       # the final hidden state is ln_f's bias...
    w["model/ln_f/b"][:] = u         # ... so the logits are wte @ u
    w["model/wte"][:50256, 0] = 0.3 * np.random.default_rng(0).standard_normal(50256)
    save_model(str(d), hp, w, vocab_dir=str(vocab_dir))
    return d


# ---------------------------------------------------------------------------- unconditional

def test_unconditional_numbering_across_batches(model, tmp_path):
    p = run_cli(UNCONDITIONAL, "--model_dir", model, "--seed", 7, "--length", 5, "--nsamples", 3,
                "--batch_size", 2, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    got = samples(p.stdout)
    assert [n for n, _ in got] == [1, 2, 3]
    assert p.stdout.startswith("=" * 40 + " SAMPLE 1 " + "=" * 40 + "\n")
    assert list(tmp_path.iterdir()) == []


def test_unconditional_forever_until_ctrl_c(model, tmp_path):
    """nsamples=0 generates until interrupted; Ctrl-C (SIGINT) ends it with status 130, no traceback,
    and the numbering runs on across batches."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="2", GPT2_MODELS_URL=OFFLINE, PYTHONIOENCODING="utf-8")
    # Ctrl-C as in a terminal: a shell without job control starts background jobs with SIGINT
    # ignored, and the test runner (so the command too) may inherit that
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / f"{UNCONDITIONAL}.py"), "--model_dir",
                             str(model), "--nsamples", "0", "--batch_size", "2", "--length", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    deadline = time.monotonic() + 120
    while seen.count(b" SAMPLE ") < 7 and time.monotonic() < deadline:
        seen += proc.stdout.read1(4096)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    numbers = [int(n) for n in re.findall(rb" SAMPLE (\d+) ", seen + out)]
    assert numbers[:7] == [1, 2, 3, 4, 5, 6, 7]
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and err.strip() == b""


def test_unconditional_default_length_is_n_ctx_and_greedy_matches_tf(model, tmp_path, encoder):
    args = ("--model_dir", model, "--temperature", 0, "--nsamples", 3, "--batch_size", 2)
    torch_run = run_cli(UNCONDITIONAL, *args, cwd=tmp_path)
    tf_run = run_cli(UNCONDITIONAL, *args, "--backend", "tf", cwd=tmp_path)
    assert torch_run.returncode == 0 and tf_run.returncode == 0, (torch_run.stderr, tf_run.stderr)
    assert torch_run.stdout == tf_run.stdout
    got = samples(torch_run.stdout)
    assert [n for n, _ in got] == [1, 2, 3]
    assert len({t for _, t in got}) == 1  # greedy: all the same
    # length None = n_ctx (64) tokens, as the original's unconditional sampler
    from gpt2_common import load_model

    m = load_model("torch", model, device="cpu")
    assert got[0][1] == encoder.decode(m.generate(None, 64, temperature=0)[0])


# ---------------------------------------------------------------------------- streaming

def test_stream_decoder_holds_split_utf8():
    # byte tokens: "é" is C3 A9 and "😀" is F0 9F 98 80, split over tokens
    decode = lambda toks: bytes(toks).decode("utf-8", errors="replace")  # noqa: E731
    s = cli.StreamDecoder(decode)
    data = "aé😀b".encode()
    pieces = [s.push(b) for b in data]
    assert pieces == ["a", "", "é", "", "", "", "😀", "b"]
    assert s.finish() == "" and s.text == "aé😀b"
    s = cli.StreamDecoder(decode)  # an unfinished character at the end is released by finish()
    assert [s.push(b) for b in b"x\xf0\x9f"] == ["x", "", ""]
    assert s.finish() == "\ufffd" and s.text == decode(list(b"x\xf0\x9f"))


def test_stream_decoder_with_gpt2_tokens(encoder):
    text = "Emoji 😀 and 漢字 and café."
    tokens = encoder.encode(text)
    partial = [encoder.decode(tokens[:i]) for i in range(1, len(tokens))]
    assert any(p.endswith("\ufffd") for p in partial)  # some token ends mid-character
    s = cli.StreamDecoder(encoder.decode)
    pieces = [s.push(t) for t in tokens] + [s.finish()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.chunks = []

    def write(self, s):
        self.chunks.append(s)
        return super().write(s)


class Spy:
    """A model wrapper that records how much had been printed at each generation step."""

    def __init__(self, model, out):
        self.model, self.out, self.seen = model, out, []
        self.hparams = model.hparams

    def generate(self, *a, callback=None, **kw):
        def cb(step, tokens):
            callback(step, tokens)
            self.seen.append(len(self.out.getvalue()))
        return self.model.generate(*a, callback=cb, **kw)


def test_print_samples_streams_first_row(model, encoder):
    from gpt2_common import load_model

    m = load_model("torch", model, device="cpu")
    out = Recorder()
    spy = Spy(m, out)
    ctx = encoder.encode("Streaming test")
    n = cli.print_samples(spy, encoder, ctx, nsamples=3, batch_size=2, length=10,
                          seeds=lambda first, k: cli.sample_seeds(4, 0, first, k), out=out)
    assert n == 3
    assert len(set(spy.seen)) > 3  # the output grew while the first batch was being generated
    assert spy.seen[0] >= len(cli.sample_header(1)) + 1
    got = samples(out.getvalue())
    assert [k for k, _ in got] == [1, 2, 3]
    # the streamed text is exactly what decoding the sample gives
    rows = m.generate(ctx, 10, batch_size=2, seed=cli.sample_seeds(4, 0, 0, 2))
    assert got[0][1] == encoder.decode(rows[0]) and got[1][1] == encoder.decode(rows[1])


# ---------------------------------------------------------------------------- helpers

def test_read_prompts_pipe():
    out = io.StringIO()
    got = list(cli.read_prompts(io.StringIO("a\n\n b \r\nlast"), out))
    assert got == ["a", " b ", "last"]
    assert out.getvalue() == "Model prompt >>> " * 2 + "Prompt should not be empty!\n" \
        + "Model prompt >>> " * 3 + "\n"


def test_resolve_model_dir(tmp_path):
    models = str(tmp_path)
    assert cli.resolve_model_dir("124M", models) == (os.path.join(models, "124M"), "124M")
    assert cli.resolve_model_dir("117M", models) == (os.path.join(models, "124M"), "124M")
    (tmp_path / "117M").mkdir()
    assert cli.resolve_model_dir("117M", models) == (os.path.join(models, "117M"), None)
    (tmp_path / "tuned").mkdir()
    assert cli.resolve_model_dir("tuned", models) == (os.path.join(models, "tuned"), None)
    assert cli.resolve_model_dir("x", models, model_dir="~/m") == (os.path.expanduser("~/m"), None)
    for bad in ("../x", "a/b", "a\\b", "..", ".", ""):
        with pytest.raises(cli.UsageError):
            cli.resolve_model_dir(bad, models)
    with pytest.raises(cli.UsageError, match="unknown model name 'nope'"):
        cli.resolve_model_dir("nope", models)


def test_seeds_and_context_rules():
    a = cli.sample_seeds(1, 0, 0, 4)
    assert a[2:] == cli.sample_seeds(1, 0, 2, 2) and len(set(a)) == 4
    assert cli.sample_seeds(1, 1, 0, 1) != a[:1]
    assert cli.fits_context(1, 64, 64) and cli.fits_context(33, 32, 64)
    assert not cli.fits_context(34, 32, 64) and not cli.fits_context(65, 0, 64)
    assert cli.default_length(64, None, False) == 32 and cli.default_length(64, None, True) == 64
    with pytest.raises(cli.UsageError):
        cli.default_length(64, 65, True)


# ---------------------------------------------------------------------------- bad input

BAD_FLAGS = [
    (("--backend", "jax"), "unknown backend 'jax'"),
    (("--device", "tpu"), "unknown device 'tpu'"),
    (("--model_name", "nope"), "unknown model name 'nope'"),
    (("--model_name", "../x"), "invalid model name '../x'"),
    (("--model_name", "a/b"), "invalid model name 'a/b'"),
    (("--length", -1), "length must be an integer >= 0"),
    (("--top_k", -1), "top_k must be an integer >= 0"),
    (("--temperature", -0.5), "temperature must be a number >= 0"),
    (("--top_p", 0), "top_p must be a number in (0, 1]"),
    (("--top_p", 1.5), "top_p must be a number in (0, 1]"),
    (("--batch_size", 0), "batch_size must be an integer >= 1"),
    (("--nsamples", -1), "nsamples must be an integer >= 0"),
    (("--seed", "abc"), "seed must be an integer"),
    (("--top_p_mode", "greedy"), "unknown top_p_mode"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[" ".join(map(str, a)) for a, _ in BAD_FLAGS])
def test_bad_flags_fail_fast(args, message, tmp_path):
    script = INTERACTIVE if args[0] != "--nsamples" else UNCONDITIONAL
    p = run_cli(script, "--models_dir", tmp_path / "models", *args, stdin="hi\n", cwd=tmp_path)
    assert_user_error(p, message)
    assert p.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_interactive_nsamples_zero(tmp_path):
    assert_user_error(run_cli(INTERACTIVE, "--nsamples", 0, cwd=tmp_path), "nsamples must be an integer >= 1")


def broken_copy(model, tmp_path, name):
    d = tmp_path / name
    shutil.copytree(model, d)
    return d


def test_bad_model_files(model, tmp_path):
    d = broken_copy(model, tmp_path, "no-hparams")
    (d / "hparams.json").unlink()
    assert_user_error(run_cli(UNCONDITIONAL, "--model_dir", d, "--nsamples", 1, cwd=tmp_path),
                      "hparams.json", str(d))
    d = broken_copy(model, tmp_path, "bad-hparams")
    (d / "hparams.json").write_text('{"n_vocab": 50257, "n_ctx": 64')
    assert_user_error(run_cli(UNCONDITIONAL, "--model_dir", d, "--nsamples", 1, cwd=tmp_path),
                      "hparams.json", "not valid JSON")
    d = broken_copy(model, tmp_path, "truncated")
    data = d / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    assert_user_error(run_cli(UNCONDITIONAL, "--model_dir", d, "--nsamples", 1, cwd=tmp_path))
    p = run_cli(INTERACTIVE, "--model_dir", model, "--length", 65, stdin="hi\n", cwd=tmp_path)
    assert_user_error(p, "length 65", "n_ctx=64")
    p = run_cli(INTERACTIVE, "--model_dir", model, "--device", "cuda:99", stdin="hi\n", cwd=tmp_path)
    assert_user_error(p, "cuda:99")


def test_bad_model_files_tf(model, tmp_path):
    d = broken_copy(model, tmp_path, "truncated")
    data = d / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    p = run_cli(INTERACTIVE, "--model_dir", d, "--backend", "tf", stdin="hi\n", cwd=tmp_path)
    assert_user_error(p)
    assert p.stdout == ""


def test_missing_model_offline(tmp_path):
    p = run_cli(UNCONDITIONAL, "--nsamples", 1, cwd=tmp_path)
    lines = p.stderr.strip().splitlines()
    assert lines[0] == f"model 124M not found in {os.path.join('models', '124M')}; downloading it ..."
    assert_user_error(subprocess.CompletedProcess(p.args, p.returncode, p.stdout, lines[-1]),
                      "place checkpoint, encoder.json, hparams.json, model.ckpt.* and vocab.bpe in "
                      + os.path.join("models", "124M"), "download_model 124M")
    assert len(lines) == 2 and p.stdout == ""
    assert list(tmp_path.iterdir()) == []  # the failed download left nothing behind
    # without the download offer, it is one line
    p = run_cli(INTERACTIVE, "--model_name", "355M", "--models_dir", tmp_path / "m", "--nodownload",
                cwd=tmp_path)
    assert_user_error(p, "model directory not found", os.path.join(str(tmp_path / "m"), "355M"))
    # a model_dir lacking files names them
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "hparams.json").write_text("{}")
    p = run_cli(INTERACTIVE, "--model_dir", tmp_path / "m", cwd=tmp_path)
    assert_user_error(p, "model files missing (checkpoint, encoder.json", str(tmp_path / "m"))


# -- every script from a checkout that is not installed; --dtype ----------------------------------

SCRIPT_ERRORS = {  # a flag error each script reports before loading anything
    "score": (["hi", "--dtype", "float64"],
              "error: unknown dtype 'float64': choose one of float32, bfloat16, float16"),
    "detect": (["--dtype", "float64"], "error: unknown dtype 'float64'"),
    INTERACTIVE: (["--dtype", "float64"], "error: unknown dtype 'float64'"),
    UNCONDITIONAL: (["--dtype", "float16x"], "error: unknown dtype 'float16x'"),
    "download_model": (["999M"], "error: unknown model '999M'"),
    "download_dataset": (["webtext", "dev"], "error: unknown split 'dev'"),
    "benchmark": (["--backends", "nope"], "error: unknown backend 'nope'"),
    "convert": (["no-such-folder", "out"], "error: no-such-folder: no such folder"),
    "eval": (["lambada", "--stride", "0"], "error: stride must be an integer >= 1, got 0"),
    "encode": (["in.txt", "out.bin", "--val_fraction", "2"], "error: val_fraction must be a number in [0, 1], got 2"),
    "train": (["--dataset", "x.bin", "--learning_rate", "0"], "error: learning_rate must be a number > 0, got 0"),
    "inspect_model": (["hi", "--top_k", "0"], "error: top_k must be an integer >= 1, got 0"),
    "serve": (["--port", "70000"], "error: --port must be at most 65535, got 70000"),
}


def test_every_script_runs_from_a_checkout_that_is_not_installed(model, tmp_path):
    """``python scripts/<name>.py`` from a copy of the checkout, run from another folder, with no
    PYTHONPATH and the toolkit's install hidden: ``-S`` skips ``site``, so no ``.pth`` file runs
    (an editable install is such a file), and the site-packages folders go on PYTHONPATH so the
    third-party packages still import. The copy's gpt2_common announces itself on stderr, which
    proves the script used the checkout it sits in (whatever else is installed)."""
    import site

    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    for d in ("src", "scripts"):
        shutil.copytree(ROOT / d, checkout / d, ignore=shutil.ignore_patterns("__pycache__"))
    marker = "gpt2_common from the copied checkout"
    with open(checkout / "src" / "gpt2_common" / "__init__.py", "a") as f:
        f.write(f"\nimport sys as _sys\n_sys.stderr.write({marker!r} + '\\n')\n")
    elsewhere.mkdir()
    sites = [d for d in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(d)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join(sites), TF_CPP_MIN_LOG_LEVEL="2", GPT2_MODELS_URL=OFFLINE)

    def run(script, *args):
        return subprocess.run([sys.executable, "-S", str(checkout / "scripts" / f"{script}.py"),
                               *map(str, args)], capture_output=True, text=True, cwd=elsewhere,
                              env=env, timeout=180)

    for script in sorted(p.stem for p in (ROOT / "scripts").glob("*.py") if not p.stem.startswith("_")):
        args, error = SCRIPT_ERRORS[script]  # a new script needs an entry here
        p = run(script, *args)
        assert p.returncode == 2 and p.stderr.splitlines()[0] == marker, (script, p.stderr)
        assert p.stderr.splitlines()[1:] == [p.stderr.splitlines()[-1]] and \
            p.stderr.splitlines()[-1].startswith(error), (script, p.stderr)
    p = run("score", "The dog", "--model_dir", model, "--json")  # and a whole run
    assert p.returncode == 0 and p.stderr == marker + "\n", p.stderr
    assert '"tokens": [464, 3290]' in p.stdout


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("script", ["score", "detect", INTERACTIVE, UNCONDITIONAL])
def test_dtype_flag_is_checked_and_reaches_load_model(script, model, tmp_path, monkeypatch):
    import gpt2_common.interface as interface

    seen = []

    class Loading(Exception):
        pass

    def fake_load_model(backend, model_dir, device=None, dtype="float32"):
        seen.append(dtype)
        raise Loading

    monkeypatch.setattr(interface, "load_model", fake_load_model)
    mod = _script(script)
    for f in ("real", "fake"):
        (tmp_path / f"{f}.jsonl").write_text('{"text": "Some text."}\n')
    real, fake = str(tmp_path / "real.jsonl"), str(tmp_path / "fake.jsonl")
    call = {
        "score": lambda **kw: mod.score("The dog", **kw),
        "detect": lambda **kw: mod.detect(real_valid=real, real_test=real, fake_valid=fake, fake_test=fake, **kw),
        INTERACTIVE: lambda **kw: mod.interact_model(**kw),
        UNCONDITIONAL: lambda **kw: mod.sample_model(**kw),
    }[script]
    for dtype in ("bfloat16", "float16", "float32"):
        with pytest.raises(Loading):
            call(model_dir=str(model), dtype=dtype)
    assert seen == ["bfloat16", "float16", "float32"]
    for bad in ("float64", "fp16", None, 16):
        with pytest.raises(cli.UsageError, match="unknown dtype"):
            call(model_dir=str(model), dtype=bad)
    assert len(seen) == 3  # checked before anything loads
