"""The README's snippets run as pasted: every Python block, and the offline recipe's data steps
(on a machine with no weights: the vocabulary comes from GPT2_VOCAB_DIR)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import need

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SCRIPT_OF = {"gpt2_encode": "encode", "gpt2_train": "train", "gpt2_convert": "convert"}


def blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```$", README, flags=re.S | re.M)


def run(cmd, cwd, vocab_dir, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2", GPT2_VOCAB_DIR=str(vocab_dir))
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    return p


def test_python_snippets_run_as_pasted(tmp_path, vocab_dir):
    """In order, in one empty folder: the random model (models/tiny-random) stands in for
    models/124M, and models/tiny-hf is its Hugging Face copy, as the README's transcripts made them."""
    need("torch"), need("tensorflow"), need("transformers")
    snippets = blocks("python")
    assert len(snippets) == 4 and "models/tiny-random" in snippets[0], [s[:60] for s in snippets]
    run([sys.executable, "-c", snippets[0]], tmp_path, vocab_dir)  # the random model
    os.symlink("tiny-random", tmp_path / "models" / "124M")
    run([sys.executable, "-c", "from gpt2_common.convert import convert_model; "
         "convert_model('models/tiny-random', 'models/tiny-hf', progress=False)"], tmp_path, vocab_dir)
    for code in snippets[1:]:
        print(run([sys.executable, "-c", code], tmp_path, vocab_dir).stdout)


def test_recipe_data_steps_run_offline_without_weights(tmp_path, vocab_dir):
    """The recipe's first two commands (corpus, gpt2_encode) in an empty folder with no models/;
    the training command takes the same vocabulary."""
    recipe = next(b for b in blocks("bash") if "pydoc_data" in b)
    commands = re.sub(r"\\\n\s*", "", recipe).strip().splitlines()
    assert "models/" not in commands[1] and "models/" not in commands[2], commands
    assert "--vocab_dir $GPT2_VOCAB_DIR" in commands[1] and "--vocab_dir $GPT2_VOCAB_DIR" in commands[2]
    script = "\n".join(["set -e", *commands[:2]])
    script = re.sub(r"^python ", f"{sys.executable} ", script, flags=re.M)
    for name, module in SCRIPT_OF.items():
        script = re.sub(rf"^{name} ", f"{sys.executable} {ROOT / 'scripts' / module}.py ", script, flags=re.M)
    out = run(["bash", "-c", script], tmp_path, vocab_dir).stdout
    print(out)
    assert re.search(r"data/topics.bin: \d+ documents, \d+ tokens", out)
    assert not (tmp_path / "models").exists()
