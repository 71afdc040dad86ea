"""The command line of every console script (setup.cfg), checked before the command runs.

A misspelled flag or an argument too many is one line naming it (and the flag meant), exit 2, with
nothing written; ``-h`` and ``--help`` print the whole help on stdout. Each script is started
the way its console script starts it (its ``main()``, with ``sys.argv`` set); most cases run in one
child process (fire imports IPython: ~3 s a start on this machine), a few as real subprocesses.
"""
from __future__ import annotations

import configparser
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2_common import cli

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = "http://127.0.0.1:1"


def console_scripts():
    """``{console script: scripts/<module>.py}`` from setup.cfg's entry points."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (s.strip() for s in line.split("="))
        module, func = target.split(":")
        assert module.startswith("gpt2_scripts.") and func == "main"
        out[name] = ROOT / "scripts" / f"{module.split('.', 1)[1]}.py"
    return out


SCRIPTS = console_scripts()

# Runs each (script, argv) through the script's main() as its console script would, in cwd, and
# prints [{"code", "stdout", "stderr"}] as JSON on the real stdout.
HARNESS = r"""
import contextlib, io, json, runpy, sys
cases = json.loads(sys.argv[1])
results = []
for script, name, argv in cases:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [name, *argv]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def run_cases(cases, cwd, stdin=""):
    """``[(console script, argv)]`` -> ``[{"code", "stdout", "stderr"}]``, one child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "scripts")]),
               TF_CPP_MIN_LOG_LEVEL="2", GPT2_MODELS_URL=OFFLINE, GPT2_DATASET_URL=OFFLINE)
    payload = json.dumps([(str(SCRIPTS[name]), name, [str(a) for a in argv]) for name, argv in cases])
    p = subprocess.run([sys.executable, "-c", HARNESS, payload], cwd=cwd, env=env, input=stdin,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def lines(text):
    """The lines of ``text`` that are not TensorFlow's start-up log."""
    return [ln for ln in text.splitlines() if not re.match(r"(WARNING: All log messages|I0000 )", ln)]


def test_every_console_script_is_covered():
    assert set(SCRIPTS) == {"download_model", "download_dataset", "interactive_conditional_samples",
                            "generate_unconditional_samples", "gpt2_benchmark", "gpt2_score", "gpt2_detect",
                            "gpt2_convert", "gpt2_eval", "gpt2_encode", "gpt2_train", "gpt2_inspect",
                            "gpt2_serve"}


def test_misspelled_flag_or_extra_argument_stops_every_command_before_it_writes(tmp_path, make_model_dir):
    """Each command line would write into the (empty) working folder if it ran; a misspelled flag
    (or a bare argument too many) must stop it first: one line, the flag meant, exit 2, nothing on disk."""
    model = make_model_dir("tiny", vocab=True)
    text = tmp_path / "in" / "a.txt"
    text.parent.mkdir()
    text.write_text("Some text to encode, score and train on.\n" * 20)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    typo = {  # console script: (a command line that writes into cwd, misspelled flag, the flag meant)
        "download_model": (["124M", "--models_dir", "."], "--retrie", "--retries"),
        "download_dataset": (["webtext", "valid", "--data_dir", "."], "--retrie", "--retries"),
        "interactive_conditional_samples": (["--model_dir", model, "--nsamples", 1], "--lenght", "--length"),
        "generate_unconditional_samples": (["--model_dir", model, "--nsamples", 1], "--lenght", "--length"),
        "gpt2_benchmark": (["--model_dir", model, "--backends", "torch", "--prefill", 8, "--plot", "b.png"],
                           "--decode_token", "--decode_tokens"),
        "gpt2_score": (["hello", "--model_dir", model, "--html", "g.html"], "--stide", "--stride"),
        "gpt2_detect": (["--real_test", text, "--fake_test", text, "--output", "d.json"], "--sourc", "--source"),
        "gpt2_convert": ([model, "out"], "--overwrit", "--overwrite"),
        "gpt2_eval": (["perplexity", "--file", text, "--model_dir", model, "--json"], "--strid", "--stride"),
        "gpt2_encode": ([text, "out.bin", "--model_dir", model], "--val_fractio", "--val_fraction"),
        "gpt2_train": (["--dataset", text, "--model_dir", model, "--steps", 1], "--learning_rat", "--learning_rate"),
        "gpt2_inspect": (["hello", "--model_dir", model, "--html", "page.html"], "--repeat_lenght",
                         "--repeat_length"),
        "gpt2_serve": (["--model_dir", model, "--port", 0], "--max_batc", "--max_batch"),
    }
    assert set(typo) == set(SCRIPTS)
    cases = [(name, [*argv, bad, "1"]) for name, (argv, bad, _) in typo.items()]
    cases += [(name, [*argv, f"{bad}=1"]) for name, (argv, bad, _) in typo.items() if name == "gpt2_train"]
    extra = {"download_model": ["124M", "extra"], "gpt2_encode": [text, "out.bin", "extra"],
             "gpt2_convert": [model, "out", "extra"], "gpt2_score": ["hello", "extra"],
             "gpt2_train": [text, "extra"], "gpt2_detect": ["extra"], "gpt2_eval": ["perplexity", text, "extra"],
             "gpt2_benchmark": ["extra"], "download_dataset": ["webtext", "valid", "extra"],
             "generate_unconditional_samples": ["124M", "extra"], "interactive_conditional_samples": ["124M", "extra"],
             "gpt2_inspect": ["hello", "extra"], "gpt2_serve": ["extra"]}
    cases += list(extra.items())
    results = run_cases(cases, cwd, stdin="hello\n")
    for (name, argv), r in zip(cases, results):
        err = lines(r["stderr"])
        print(name, *argv[-2:], "->", r["code"], err)
        assert r["code"] == 2 and len(err) == 1 and not r["stdout"], (name, argv, r)
        if name in extra and argv == extra[name]:
            assert err[0].startswith("error: unexpected argument 'extra'"), (name, err)
        else:
            bad, meant = typo[name][1:]
            assert err[0].startswith(f"error: unknown flag {bad} ") and f"did you mean {meant}?" in err[0], err
    assert sorted(os.listdir(cwd)) == []


def test_misspelled_flag_in_a_real_process(tmp_path, make_model_dir):
    """The same through a real process start (the console script's main() is what it calls)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, str(SCRIPTS["gpt2_train"]), "--dataset", "x.bin", "--model_dir",
                        make_model_dir("tiny", vocab=True), "--learning-rat=0.5"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and lines(p.stderr) == [
        "error: unknown flag --learning-rat for gpt2_train: did you mean --learning_rate? (see gpt2_train --help)"]
    assert os.listdir(tmp_path) == []


def fn_of(name):
    """The function (or dict of subcommands) a console script hands to cli.run."""
    src = SCRIPTS[name].read_text()
    target = re.search(r"cli\.run\((\w+|\{[^}]*\}), name=", src).group(1)
    sys.path.insert(0, str(SCRIPTS[name].parent))
    try:
        import importlib
        mod = importlib.import_module(SCRIPTS[name].stem)
    finally:
        sys.path.pop(0)
    if target.startswith("{"):
        return {k: getattr(mod, v) for k, v in re.findall(r'"(\w+)": (\w+)', target)}
    return getattr(mod, target)


def test_check_command_reads_the_line_as_fire_does():
    def cmd(inputs, out, *, model_dir=None, hf=True, seed=0, learning_rate=1e-4):
        """A command."""

    ok = [["a", "b"], ["a", "--seed", "-1", "b"], ["--out=b", "a"], ["a", "b", "--nohf"], ["a", "b", "--hf"],
          ["a", "b", "--model-dir", "m"], ["a", "b", "-s", "3"], ["a", "b", "--", "--trace"], ["a"], []]
    for argv in ok:
        cli.check_command(cmd, argv, "cmd")
    bad = {("a", "b", "c"): "unexpected argument 'c': cmd takes 2 positional arguments (INPUTS, OUT)",
           ("--out", "b", "a", "c"): "unexpected argument 'c'",
           ("a", "b", "--nohf=1"): "--nohf is a switch's off form and takes no value",
           ("a", "b", "--nohf", "0"): "--nohf is a switch's off form and takes no value",
           ("a", "b", "--learning_rat", "1"): "did you mean --learning_rate?",
           ("a", "b", "--nohff"): "did you mean --nohf?",
           ("a", "b", "--zzz"): "unknown flag --zzz for cmd (see cmd --help)",
           ("a", "b", "-x"): "unknown flag -x",
           ("-m", "m", "a", "b", "-z"): "unknown flag -z"}
    for argv, message in bad.items():
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli.check_command(cmd, list(argv), "cmd")
    group = {"one": cmd, "two": cmd}
    cli.check_command(group, ["one", "a", "b", "--seed", "1"], "grp")
    for argv, message in {(): "give a command: one or two", ("three",): "unknown command 'three' for grp",
                          ("one", "a", "b", "--sed", "1"): "unknown flag --sed for grp one: did you mean --seed?"}.items():
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli.check_command(group, list(argv), "grp")


def documented_flags(fn):
    """``{parameter: its whole description}`` from the Args section of ``fn``'s docstring."""
    doc = inspect.getdoc(fn)
    section = doc.split("\nArgs:\n", 1)[1]
    out, current = {}, None
    for line in section.splitlines():
        m = re.match(r"^ {4}(\w+): (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2)
        elif line.startswith(" " * 8) and current:
            out[current] += " " + line.strip()
        elif line.strip():
            break
    return out


def test_help_on_stdout_whole_for_every_console_script(tmp_path):
    """-h and --help show help on stdout everywhere (-h was --hf for the benchmark and --html for
    gpt2_score), and no flag's description is cut short (fire's docstring parser drops the rest of
    a continuation line after a colon)."""
    commands = []
    for name in SCRIPTS:
        fn = fn_of(name)
        subs = list(fn.items()) if isinstance(fn, dict) else [(None, fn)]
        for sub, f in subs:
            commands.append((name, [sub] if sub else [], f))
    cases = [(name, [*pre, flag]) for name, pre, _ in commands for flag in ("-h", "--help")]
    cases += [("gpt2_eval", ["--help"]), ("gpt2_score", ["hello", "--model_dir", "m", "-h"])]
    results = run_cases(cases, tmp_path)
    for (name, argv), r in zip(cases, results):
        assert r["code"] == 0 and not lines(r["stderr"]), (name, argv, r["stderr"][-500:])
        assert r["stdout"].startswith("NAME\n"), (name, argv, r["stdout"][:200])
    for (name, pre, fn), r in zip(commands, results[::2]):
        shown = " ".join(r["stdout"].split())
        usage = " ".join([name, *pre])
        assert f"{usage} <flags>" in shown or f"{usage} " in shown, shown[:300]
        flags = documented_flags(fn)
        assert set(flags) == set(inspect.signature(fn).parameters), (name, pre)
        for flag, text in flags.items():
            assert " ".join(text.split()) in shown, (name, pre, flag, text)
    assert "lambada" in results[-2]["stdout"] and "perplexity" in results[-2]["stdout"]
    assert os.listdir(tmp_path) == []


def test_help_pipes_to_grep(tmp_path):
    """`gpt2_train --help | grep vocab` finds the vocabulary flag (help on stdout, not stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run(f"{sys.executable} {SCRIPTS['gpt2_train']} --help | grep -c vocab", shell=True,
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and int(p.stdout) >= 1, (p.stdout, p.stderr)


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """SIGTERM during the benchmark's random-weights set-up (a 475 MB gpt2-benchmark-* folder in
    the temp folder at 124M) ends it as Ctrl-C does: the folder is removed, exit status 143, one
    blank line and no traceback on stderr."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp))
    env.pop("GPT2_VOCAB_DIR", None)
    proc = subprocess.Popen([sys.executable, str(SCRIPTS["gpt2_benchmark"]), "--backends", "torch", "--nohf",
                             "--prefill", "8", "--decode_tokens", "2", "--batch_sizes", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp.glob("gpt2-benchmark-*/*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # until it has started writing the weights
        assert list(tmp.glob("gpt2-benchmark-*")), "the benchmark never made its temporary folder"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert b"Traceback" not in err
    assert list(tmp.iterdir()) == []


def test_one_rule_for_names_folders_empty_and_undecodable_input(tmp_path, make_model_dir, vocab_dir):
    """Issue 22's small inconsistencies, each one line and exit 2: a bad --run_name says "run
    name"; a --model_dir (or --vocab_dir, or gpt2_convert's SRC) that is a file says so; gpt2_encode
    refuses an empty corpus as gpt2_train does; input that is not UTF-8 is refused everywhere,
    naming the byte offset from the start of the file or stream."""
    model = make_model_dir("tiny", vocab=True)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "a\xff"}\n')  # 0xff at byte 28
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    f = tmp_path / "afile"
    cases = {
        ("gpt2_train", "--dataset", f, "--model_dir", model, "--run_name", "../x"):
            "error: invalid run name '../x': give a name such as run1 (use --checkpoint_dir for another parent folder)",
        ("gpt2_encode", tmp_path / "empty.txt", "o.bin", "--vocab_dir", vocab_dir):
            f"error: {tmp_path / 'empty.txt'}: empty: no text to encode",
        ("gpt2_encode", tmp_path / "bad.jsonl", "o.bin", "--vocab_dir", vocab_dir):
            f"error: {tmp_path / 'bad.jsonl'}: not UTF-8 text (byte 28: invalid start byte)",
        ("gpt2_score", "--file", tmp_path / "bad.jsonl", "--model_dir", model):
            f"error: {tmp_path / 'bad.jsonl'}: not UTF-8 text (byte 28: invalid start byte)",
        ("gpt2_encode", f, "o.bin", "--vocab_dir", f): f"error: --vocab_dir {f}: is a file, not a folder",
        ("gpt2_convert", f, "out"): f"error: {f}: is a file, not a folder",
    }
    for name in ("gpt2_score", "gpt2_train", "gpt2_encode", "gpt2_benchmark", "gpt2_eval",
                 "interactive_conditional_samples", "generate_unconditional_samples"):
        pre = {"gpt2_score": ["hello"], "gpt2_train": ["--dataset", f], "gpt2_encode": [f, "o.bin"],
               "gpt2_eval": ["perplexity", "--file", f]}.get(name, [])
        cases[(name, *pre, "--model_dir", f)] = f"error: --model_dir {f}: is a file, not a folder"
    results = run_cases([(k[0], k[1:]) for k in cases], cwd, stdin="hello\n")
    wrong = []
    for (key, want), r in zip(cases.items(), results):
        print(*key[:2], "->", r["code"], lines(r["stderr"]))
        if (r["code"], lines(r["stderr"])) != (2, [want]):
            wrong.append((key[0], r["code"], r["stderr"][-300:]))
    assert not wrong, wrong
    assert os.listdir(cwd) == []
    # stdin: the prompts of interactive_conditional_samples (answered up to the bad line) and gpt2_score
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2")
    for argv, data, want in [
            ([SCRIPTS["interactive_conditional_samples"], "--model_dir", model, "--length", 2, "--seed", 1],
             b"Hello\nab\xffcd\n", "error: stdin: not UTF-8 text (byte 8: invalid start byte)"),
            ([SCRIPTS["gpt2_score"], "-", "--model_dir", model], b"ab\xffcd",
             "error: stdin: not UTF-8 text (byte 2: invalid start byte)")]:
        p = subprocess.run([sys.executable, *map(str, argv)], input=data, cwd=cwd, env=env, capture_output=True,
                           timeout=300)
        assert (p.returncode, lines(p.stderr.decode())) == (2, [want]), p.stderr.decode()[-2000:]


def test_text_or_file_is_one_of_the_two():
    """gpt2_score and gpt2_inspect read a text argument or --file: both, neither, or a --file that
    is not a path is one line before anything loads."""
    cli.check_text_or_file("a text", None, "nothing")
    cli.check_text_or_file(None, "a.txt", "nothing")
    for text, file, message in [("a", "b.txt", "give either a text or --file, not both"),
                                (None, None, "nothing to do"), (None, True, "--file must be a path, got True"),
                                (None, "", "--file must be a path, got ''")]:
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli.check_text_or_file(text, file, "nothing to do")
