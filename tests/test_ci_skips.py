"""Under CI=true a missing dependency or vocabulary fails the run; locally it skips with a reason.

A tiny generated test file is run with pytest in a subprocess, with the project's conftest loaded
as a plugin, a GPT2_VOCAB_DIR that holds nothing and a module that does not exist."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
from conftest import need, unavailable

def test_vocabulary(vocab_dir):
    pass

def test_dependency():
    need("gpt2_no_such_module")

def test_gpu():
    unavailable("no CUDA GPU on this machine", ci_may_skip=True)
'''


@pytest.mark.parametrize("ci", [None, "true"])
def test_missing_vocabulary_and_dependency(tmp_path, ci):
    (tmp_path / "test_generated.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONPATH")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
               GPT2_VOCAB_DIR=str(tmp_path / "no-vocabulary-here"))
    if ci:
        env["CI"] = ci
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                        "-q", "-rA", "test_generated.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    out = p.stdout
    vocab = f"GPT2_VOCAB_DIR={tmp_path / 'no-vocabulary-here'} has no GPT-2 encoder.json and vocab.bpe"
    module = "gpt2_no_such_module cannot be imported (ModuleNotFoundError: No module named 'gpt2_no_such_module')"
    assert vocab in out and module in out, out
    if ci:
        assert p.returncode == 1, out
        assert "1 failed, 1 skipped, 1 error" in out, out  # the fixture's failure is an error
        because = "(CI=true: a missing dependency or vocabulary is a failure, not a skip)"
        assert out.count(because) == 4, out  # each in its report and in the summary
    else:
        assert p.returncode == 0, out
        assert "3 skipped" in out and "failed" not in out, out
