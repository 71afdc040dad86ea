"""Hugging Face interop: ``gpt2_convert`` both ways, HF folders loaded directly by both backends,
and every bad input (one line, exit 2, nothing written at DST).

Small random models only, except the slow 124M-shape peak-memory check.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import need

from gpt2_common.checkpoint import read_checkpoint, write_checkpoint
from gpt2_common.hparams import HParams
from gpt2_common.interface import load_model

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # |logits| of transformers vs either backend, fp32 CPU (measured ~4e-6)
TEXTS = ["Hello world, this is a test of the converter.", "  Spaces\tand\nnewlines; ÜñïçØdé 🤖 123"]


def convert_cli(capsys, monkeypatch, *args):
    """Run ``gpt2_convert`` in-process as the console script does; ``(exit code, stdout, stderr)``."""
    from scripts import convert

    monkeypatch.setattr(sys, "argv", ["gpt2_convert", *map(str, args)])
    code = 0
    try:
        convert.main()
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, monkeypatch, src, dst, *needles, extra=()):
    """gpt2_convert SRC DST exits 2 with one 'error:' line naming ``needles``, and leaves no DST
    and no temporary folder beside it."""
    before = set(os.listdir(Path(dst).parent)) if Path(dst).parent.exists() else set()
    code, out, err = convert_cli(capsys, monkeypatch, src, dst, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    after = set(os.listdir(Path(dst).parent)) if Path(dst).parent.exists() else set()
    assert after == before, f"left behind: {after - before}"
    return lines[0]


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"


def safetensors_arrays(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def orig(make_model_dir):
    return make_model_dir("tiny", seed=3, vocab=True)


@pytest.fixture(scope="module")
def hf_dir(orig, tmp_path_factory):
    from gpt2_common.convert import convert_model

    dst = tmp_path_factory.mktemp("conv") / "hf"
    convert_model(orig, dst)
    return dst


# ------------------------------------------------------------------------------- round trips
def test_original_to_hf_to_original_is_bit_exact(orig, hf_dir, tmp_path):
    from gpt2_common.convert import convert_model

    tokenizer = ["tokenizer.json"] if importlib.util.find_spec("tokenizers") else []
    assert sorted(os.listdir(hf_dir)) == sorted(["config.json", "merges.txt", "model.safetensors",
                                                 "tokenizer_config.json", "vocab.json"] + tokenizer)
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["activation_function"] == "gelu_new"
    assert (config["n_embd"], config["n_layer"], config["n_positions"]) == (32, 2, 64)
    st = safetensors_arrays(hf_dir)
    assert "lm_head.weight" not in st and st["h.0.attn.c_attn.weight"].shape == (32, 96)
    back = tmp_path / "back"
    assert convert_model(hf_dir, back)[:2] == ("hf", "original")
    assert_same_arrays(read_checkpoint(orig), read_checkpoint(back))
    for a, b in (("hparams.json", "hparams.json"), ("encoder.json", "encoder.json"), ("vocab.bpe", "vocab.bpe")):
        assert (orig / a).read_bytes() == (back / b).read_bytes()


def test_hf_to_original_to_hf_is_bit_exact(saved_by_transformers, tmp_path):
    from gpt2_common.convert import convert_model

    src = saved_by_transformers["safetensors"]
    convert_model(src, tmp_path / "orig")
    convert_model(tmp_path / "orig", tmp_path / "hf")
    from safetensors.numpy import load_file

    want = {k[len("transformer."):]: v for k, v in load_file(str(src / "model.safetensors")).items()}
    assert_same_arrays(want, safetensors_arrays(tmp_path / "hf"))


def test_training_run_folder_converts(orig, tmp_path):
    """A run folder: its `checkpoint` file names model-10 (no model.ckpt at all)."""
    from gpt2_common.convert import convert_model

    run = tmp_path / "run"
    weights = read_checkpoint(orig)
    write_checkpoint(run, {**weights, "model/step": np.int64(10)}, prefix="model-10")  # extra var: ignored
    shutil.copy(orig / "hparams.json", run)
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copy(orig / f, run)
    assert 'model_checkpoint_path: "model-10"' in (run / "checkpoint").read_text()
    convert_model(run, tmp_path / "hf")
    convert_model(tmp_path / "hf", tmp_path / "back")
    assert_same_arrays(weights, read_checkpoint(tmp_path / "back"))


# ------------------------------------------------------------------- tokenizer.json (transformers 5)
@pytest.fixture(scope="module")
def tokenizer_json_only(orig, hf_dir, tmp_path_factory):
    """``hf_dir`` with the vocabulary transformers' own GPT2TokenizerFast (built offline from the
    real vocabulary files) saves: in transformers 5, tokenizer.json and no vocab.json/merges.txt."""
    transformers = need("transformers")
    d = tmp_path_factory.mktemp("tokjson") / "hf"
    shutil.copytree(hf_dir, d, ignore=shutil.ignore_patterns("vocab.json", "merges.txt", "tokenizer*"))
    files = tmp_path_factory.mktemp("tokfiles")  # from_pretrained reads these in 4.x and 5.x alike
    shutil.copy(orig / "encoder.json", files / "vocab.json")
    shutil.copy(orig / "vocab.bpe", files / "merges.txt")
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(files), local_files_only=True)
    tok.save_pretrained(d)
    for f in ("vocab.json", "merges.txt"):
        (d / f).unlink(missing_ok=True)  # what transformers 5 writes (4.x also wrote these)
    assert "tokenizer.json" in os.listdir(d)
    return d, tok


def test_reads_tokenizer_json_only_folder(orig, tokenizer_json_only, tmp_path, capsys, monkeypatch):
    from gpt2_common.constants import VOCAB_SHA256
    from gpt2_common.encoder import load_encoder

    folder, tok = tokenizer_json_only
    ours, want = load_encoder(folder), load_encoder(orig)
    assert ours.encoder == want.encoder and ours.bpe_ranks == want.bpe_ranks
    for text in TEXTS + ["café 東京 😀"]:
        assert ours.encode(text) == want.encode(text) == tok.encode(text)
    code, out, err = convert_cli(capsys, monkeypatch, folder, tmp_path / "orig")
    assert code == 0, err
    import hashlib

    for f in ("encoder.json", "vocab.bpe"):  # written back byte for byte as released
        assert hashlib.sha256((tmp_path / "orig" / f).read_bytes()).hexdigest() == VOCAB_SHA256[f]


def test_writes_tokenizer_json(orig, hf_dir):
    tokenizers = need("tokenizers")
    from gpt2_common.encoder import load_encoder

    theirs, ours = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json")), load_encoder(orig)
    for text in TEXTS + ["café 東京 😀<|endoftext|> x"]:
        assert theirs.encode(text).ids == ours.encode(text, allow_endoftext=True)
        assert theirs.decode(ours.encode(text, allow_endoftext=True), skip_special_tokens=False) == text


@pytest.mark.parametrize("change, needle", [
    (lambda j: j["model"].update(type="WordPiece"), "a WordPiece tokenizer"),
    (lambda j: j.update(pre_tokenizer={"type": "Metaspace"}, normalizer={"type": "NFC"}),
     "normalizer NFC, pre-tokenizer Metaspace"),
    (lambda j: j["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
    (lambda j: j["added_tokens"].append({"id": 50257, "content": "<pad>"}), "'<pad>' (id 50257)"),
    (lambda j: j["model"]["merges"].append(["Ġ", "zzz"]), "not in its vocabulary"),
])
def test_refuses_tokenizer_json_not_gpt2_bpe(tokenizer_json_only, tmp_path, capsys, monkeypatch, change, needle):
    bad = copy_hf(tokenizer_json_only[0], tmp_path)
    data = json.loads((bad / "tokenizer.json").read_text(encoding="utf-8"))
    change(data)
    (bad / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "tokenizer.json", needle)


# ------------------------------------------------------------ transformers agrees with both backends
def test_transformers_loads_converted_folder_and_agrees(orig, hf_dir, monkeypatch):
    torch = need("torch")
    transformers = need("transformers")
    need("tensorflow")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    ours = load_model("torch", orig, device="cpu")
    for text in TEXTS:
        assert tok(text)["input_ids"] == ours.encoder.encode(text), text
    assert tok.model_max_length == 64 and tok.eos_token == "<|endoftext|>"
    tokens = np.random.default_rng(0).integers(0, 50257, size=(2, 40))
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens)).logits.numpy()
    for backend in ("tf", "torch"):
        for folder in (orig, hf_dir):  # the original folder, and the HF one loaded directly
            got = load_model(backend, folder, device="cpu").logits(tokens)
            diff = float(np.abs(got - ref).max())
            print(f"transformers vs {backend} on {folder.name}: max|diff| {diff:.2e}")
            assert diff <= TOL


@pytest.fixture(scope="module")
def saved_by_transformers(tmp_path_factory):
    """Folders written by transformers from one random GPT2LMHeadModel (every parameter, biases
    included, perturbed away from the init): save_pretrained (safetensors, and sharded), and the
    pytorch_model.bin layouts of older saves (torch.save of the state dict, with `transformer.`
    and lm_head; and without the prefix but with the attn.bias/masked_bias buffers)."""
    torch = need("torch")
    transformers = need("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_head=2, n_layer=2, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    base = tmp_path_factory.mktemp("by-transformers")
    model.save_pretrained(base / "safetensors")
    model.save_pretrained(base / "sharded", max_shard_size="2MB")
    state = model.state_dict()
    assert "lm_head.weight" in state
    for name, folder_state in (
            ("bin", state),
            ("bin-buffers", {**{k[len("transformer."):]: v for k, v in state.items() if k != "lm_head.weight"},
                             **{f"h.{i}.attn.{b}": t for i in range(2) for b, t in
                                (("bias", torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))),
                                 ("masked_bias", torch.tensor(-1e4)))}})):
        (base / name).mkdir()
        model.config.save_pretrained(base / name)
        torch.save(folder_state, base / name / "pytorch_model.bin")
    tokens = np.random.default_rng(1).integers(0, 50257, size=(2, 24))
    with torch.no_grad():
        ref = model(torch.from_numpy(tokens)).logits.numpy()
    return {"model": model, "tokens": tokens, "ref": ref,
            **{n: base / n for n in ("safetensors", "sharded", "bin", "bin-buffers")}}


@pytest.mark.parametrize("kind", ["safetensors", "sharded", "bin", "bin-buffers"])
def test_folder_saved_by_transformers_loads_in_both_backends(saved_by_transformers, kind, tmp_path):
    need("tensorflow")
    s = saved_by_transformers
    assert ("pytorch_model.bin" in os.listdir(s[kind])) == kind.startswith("bin")
    for backend in ("tf", "torch"):
        diff = float(np.abs(load_model(backend, s[kind], device="cpu").logits(s["tokens"]) - s["ref"]).max())
        print(f"[{kind}] transformers vs {backend}: max|diff| {diff:.2e}")
        assert diff <= TOL
    from gpt2_common.convert import convert_model
    from gpt2_common.hf import read_hf_model

    convert_model(s[kind], tmp_path / "orig")
    want = read_hf_model(s["safetensors"])[1]
    assert_same_arrays(want, read_checkpoint(tmp_path / "orig"))
    convert_model(s[kind], tmp_path / "hf", to="hf")  # e.g. a .bin folder rewritten as safetensors
    assert_same_arrays(want, read_hf_model(tmp_path / "hf")[1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_folder(saved_by_transformers, dtype, tmp_path):
    """bf16/fp16 weights: loaded widened to float32; converted keeping their dtype, bit-exact."""
    torch = need("torch")
    import copy

    model = copy.deepcopy(saved_by_transformers["model"]).to(getattr(torch, dtype))
    model.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        ref = model.float()(torch.from_numpy(saved_by_transformers["tokens"])).logits.numpy()
    got = load_model("torch", tmp_path / "hf", device="cpu").logits(saved_by_transformers["tokens"])
    assert float(np.abs(got - ref).max()) <= TOL
    from gpt2_common.convert import convert_model
    from gpt2_common.hf import read_hf_model

    convert_model(tmp_path / "hf", tmp_path / "orig")
    convert_model(tmp_path / "orig", tmp_path / "back")
    stored = read_hf_model(tmp_path / "hf", dtype=None)[1]
    assert stored["model/wte"].dtype.name == dtype
    assert_same_arrays(stored, read_checkpoint(tmp_path / "orig"))
    assert_same_arrays(stored, read_hf_model(tmp_path / "back", dtype=None)[1])


def test_hub_cache_snapshot(saved_by_transformers, orig, tmp_path):
    """A hub cache: models--org--name/{refs/main, snapshots/<commit>/* -> ../../blobs/*}."""
    repo = tmp_path / "models--someone--gpt2-tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    files = {"config.json": saved_by_transformers["safetensors"] / "config.json",
             "model.safetensors": saved_by_transformers["safetensors"] / "model.safetensors",
             "vocab.json": orig / "encoder.json", "merges.txt": orig / "vocab.bpe"}
    for i, (name, source) in enumerate(files.items()):
        shutil.copy(source, repo / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snap / name)
    for folder in (repo, snap):
        m = load_model("torch", folder, device="cpu")
        assert float(np.abs(m.logits(saved_by_transformers["tokens"]) - saved_by_transformers["ref"]).max()) <= TOL
        assert m.encoder.encode(TEXTS[0]) == load_model("torch", orig, device="cpu").encoder.encode(TEXTS[0])
    from gpt2_common.convert import convert_model

    convert_model(repo, tmp_path / "orig")
    assert (tmp_path / "orig" / "encoder.json").read_bytes() == (orig / "encoder.json").read_bytes()


def test_cli_model_dir_accepts_hf_folder(orig, hf_dir):
    """Real subprocesses: gpt2_score and generate_unconditional_samples with --model_dir on the HF
    folder print what they print on the original one."""
    need("torch")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), TF_CPP_MIN_LOG_LEVEL="2")
    for script, args in (("score.py", [TEXTS[0], "--json"]),
                         ("generate_unconditional_samples.py", ["--seed", "1", "--length", "8", "--nsamples", "2"])):
        outputs = []
        for folder in (orig, hf_dir):
            p = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args, "--model_dir", str(folder),
                                "--nodownload"], capture_output=True, text=True, env=env, timeout=120)
            assert p.returncode == 0, p.stderr
            outputs.append(p.stdout)
        assert outputs[0] == outputs[1] and outputs[0].strip(), script


def test_cli_transcript_and_overwrite(orig, tmp_path, capsys, monkeypatch):
    dst = tmp_path / "out"
    code, out, err = convert_cli(capsys, monkeypatch, orig, dst)
    assert code == 0 and err == "" and f"({'original'}) -> {dst} (hf)" in out
    assert_refused(capsys, monkeypatch, orig, dst, "exists and is not empty", "--overwrite")
    code, out, err = convert_cli(capsys, monkeypatch, dst, dst.parent / "again", "--to", "original")
    assert code == 0, err
    code, out, err = convert_cli(capsys, monkeypatch, dst.parent / "again", dst, "--overwrite")
    assert code == 0, err
    assert sorted(p for p in os.listdir(tmp_path)) == ["again", "out"]  # no temporary folders left


# ------------------------------------------------------------------------------ bad input
def copy_hf(hf_dir: Path, tmp_path: Path, name: str = "bad") -> Path:
    d = tmp_path / name
    shutil.copytree(hf_dir, d)
    return d


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def resave(folder: Path, change) -> None:
    from safetensors.numpy import save_file

    arrays = safetensors_arrays(folder)
    change(arrays)
    save_file(arrays, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_refuses_neither_layout(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    assert_refused(capsys, monkeypatch, tmp_path / "notes", tmp_path / "out", "neither", "Hugging Face")
    assert_refused(capsys, monkeypatch, tmp_path / "nowhere", tmp_path / "out", "no such folder")


def test_refuses_other_architecture(hf_dir, tmp_path, capsys, monkeypatch):
    bad = copy_hf(hf_dir, tmp_path)
    edit_config(bad, model_type="llama", architectures=["LlamaForCausalLM"])
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "LlamaForCausalLM", "'llama'", "not GPT-2")
    edit_config(bad, model_type="gpt2", architectures=["GPT2LMHeadModel"], activation_function="relu")
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "activation_function", "relu")
    with pytest.raises(Exception, match="LlamaForCausalLM"):  # loading directly says the same
        edit_config(bad, model_type="llama", architectures=["LlamaForCausalLM"], activation_function="gelu_new")
        load_model("torch", bad)


def test_refuses_missing_and_unexpected_tensors(hf_dir, tmp_path, capsys, monkeypatch):
    bad = copy_hf(hf_dir, tmp_path)
    resave(bad, lambda a: [a.pop(k) for k in ("h.1.ln_1.weight", "h.1.ln_1.bias", "ln_f.bias")])
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "missing tensors",
                   "h.1.ln_1.weight", "h.1.ln_1.bias", "ln_f.bias")
    bad = copy_hf(hf_dir, tmp_path, "bad2")
    resave(bad, lambda a: a.update({"score.weight": np.zeros((2, 32), np.float32)}))
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "unexpected tensors", "score.weight")
    bad = copy_hf(hf_dir, tmp_path, "bad3")
    resave(bad, lambda a: a.update({"lm_head.weight": a["wte.weight"] + 1}))
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "lm_head.weight", "untied")


def test_refuses_original_checkpoint_missing_variables(orig, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(orig, bad)
    weights = read_checkpoint(orig)
    write_checkpoint(bad, {k: v for k, v in weights.items() if not k.startswith("model/h1/")})
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "missing variables", "model/h1/",
                   "(12 in all)")


def test_refuses_shapes_that_disagree_with_config(hf_dir, tmp_path, capsys, monkeypatch):
    bad = copy_hf(hf_dir, tmp_path)
    edit_config(bad, n_positions=128)
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "wpe.weight", "(64, 32)", "(128, 32)")
    bad = copy_hf(hf_dir, tmp_path, "bad2")
    resave(bad, lambda a: a.update({"h.0.mlp.c_fc.weight": np.ascontiguousarray(a["h.0.mlp.c_fc.weight"].T)}))
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "h.0.mlp.c_fc.weight", "(128, 32)")


def test_refuses_truncated_or_corrupt_safetensors(hf_dir, tmp_path, capsys, monkeypatch):
    bad = copy_hf(hf_dir, tmp_path)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "model.safetensors", "truncated or corrupt")
    (bad / "model.safetensors").write_bytes(data[:8] + b"{not json" + data[17:])
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "model.safetensors", "truncated or corrupt")
    (bad / "model.safetensors").unlink()
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "no weights", "model.safetensors")


def test_refuses_pickle_that_weights_only_refuses(saved_by_transformers, tmp_path, capsys, monkeypatch):
    torch = need("torch")
    bad = tmp_path / "bad"
    shutil.copytree(saved_by_transformers["bin"], bad)
    state = torch.load(bad / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "extra": shutil.rmtree}, bad / "pytorch_model.bin")  # a callable: code
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "weights_only", "refuses",
                   "shutil.rmtree", "not loaded")
    (bad / "pytorch_model.bin").write_bytes((saved_by_transformers["bin"] / "pytorch_model.bin").read_bytes()[:500])
    assert_refused(capsys, monkeypatch, bad, tmp_path / "out", "pytorch_model.bin", "cannot read")


def test_refuses_bad_flags_and_dst(orig, tmp_path, capsys, monkeypatch):
    assert_refused(capsys, monkeypatch, orig, tmp_path / "out", "unknown layout", extra=("--to", "onnx"))
    assert_refused(capsys, monkeypatch, orig, orig, "the destination is the source")
    (tmp_path / "file").write_text("x")
    assert_refused(capsys, monkeypatch, orig, tmp_path / "file", "not a folder")
    # a broken vocabulary (none at all is fine): refused, and no DST or new parent folders
    bad = tmp_path / "badvocab"
    shutil.copytree(orig, bad)
    (bad / "encoder.json").write_text("{}")
    assert_refused(capsys, monkeypatch, bad, tmp_path / "new" / "deeper" / "out", str(bad / "encoder.json"))
    assert not (tmp_path / "new").exists()
    # a failure half-way through writing (a corrupt tensor): the temporary folder and the parent
    # folders this run created are gone again
    bad = tmp_path / "corrupt"
    shutil.copytree(orig, bad)
    data = bad / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert_refused(capsys, monkeypatch, bad, tmp_path / "new" / "deeper" / "out", "crc32c mismatch")
    assert not (tmp_path / "new").exists()


def test_missing_vocabulary_warns(orig, tmp_path, capsys, monkeypatch):
    src = tmp_path / "novocab"
    shutil.copytree(orig, src)
    (src / "encoder.json").unlink()
    (src / "vocab.bpe").unlink()
    code, out, err = convert_cli(capsys, monkeypatch, src, tmp_path / "out")
    assert code == 0 and err.startswith("warning: ") and "no vocabulary" in err
    assert "vocab.json" not in os.listdir(tmp_path / "out")


# ---------------------------------------------------------------------------- peak memory
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, holding
# the random weights) across exec, so the child's own peak would hide under it.
PEAK_SCRIPT = r"""
import sys, time
from gpt2_common.convert import convert_model
import safetensors.numpy, tqdm  # imported before the baseline
def peak():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) * 1024
src, dst = sys.argv[1:3]
base, t = peak(), time.perf_counter()
convert_model(src, dst)
print(peak() - base, time.perf_counter() - t)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from Linux's /proc")
def test_peak_memory_124m_shape(tmp_path):
    """Peak RSS added by a conversion of the 124M shape, both ways, in a fresh process."""
    from gpt2_common.weights import random_weights, save_model

    hp = HParams()
    weights = random_weights(hp, seed=0)
    nbytes = sum(a.nbytes for a in weights.values())
    save_model(str(tmp_path / "orig"), hp, weights)
    del weights
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    for src, dst in (("orig", "hf"), ("hf", "back")):
        p = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / src), str(tmp_path / dst)],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        peak, seconds = map(float, p.stdout.split())
        print(f"{src} -> {dst}: peak +{peak / 1e6:.0f} MB = {peak / nbytes:.2f}x of {nbytes / 1e6:.0f} MB "
              f"in {seconds:.1f} s")
        assert peak <= 1.2 * nbytes
    assert_same_arrays(read_checkpoint(tmp_path / "orig"), read_checkpoint(tmp_path / "back"))
