"""Named activations against outside references (issue 21), fp32 CPU, both backends, with and
without left padding, max differences printed:

* Hugging Face ``GPT2LMHeadModel`` (eager attention) on the same weights: ``output_hidden_states``
  holds ``blocks.{l}.hook_resid_pre`` for every layer, ``blocks.{l}.hook_resid_post`` for all but
  the last (HF's last entry is after ``ln_f``: ``ln_final.hook_normalized``; the last block's output
  is read with a forward hook), ``output_attentions`` holds ``blocks.{l}.attn.hook_pattern``.
  Activation gradients of the loss against autograd through the same model (``retain_grad``).
* TransformerLens's ``TransformerBridge.run_with_cache`` (booted offline from the Hugging Face
  folder ``gpt2_convert`` writes): every name of :func:`gpt2_common.hooks.hook_names`; see
  :func:`tl_name` for the two whose TransformerLens meaning differs.

Tiny and mid random models; the 124M shape is ``slow`` (activations only). Compared at real (unpadded) positions only.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import need

from gpt2_common.interface import pad_left

TOL = 1e-5  # relative (max|ours - ref| / max|ref|) per activation; measured <= 1.8e-06 (README)
GRAD_TOL = 1e-4  # relative, activation gradients
LENGTHS = {"tiny": (12, 7, 1), "mid": (24, 13, 5), "124M": (32, 20, 5)}  # rows' real lengths
SHAPES = ["tiny", "mid", pytest.param("124M", marks=pytest.mark.slow)]
BACKENDS = ["tf", "torch"]
_HEAD_MAJOR = ("hook_attn_scores", "hook_pattern")  # [B, H, T, S]; everything else [B, T, ...]


# ------------------------------------------------------------------------------ comparing
def real(name: str, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``a`` at the real query positions of ``mask [B, T]`` (rows of ``[N, ...]``)."""
    a = np.asarray(a)
    if name.endswith(_HEAD_MAJOR):
        a = a.transpose(0, 2, 1, 3)  # [B, T, H, S]
    return a[mask.astype(bool)]


def compare(label: str, name: str, ours: np.ndarray, ref: np.ndarray, mask: np.ndarray,
            tol: float = TOL) -> float:
    """Relative max difference of activation ``name`` at real positions (attention scores only where
    a key is real and not in the future: masked scores hold different fill values); printed and
    checked against ``tol``."""
    assert np.shape(ours) == np.shape(ref), f"{label} {name}: shapes {np.shape(ours)} vs {np.shape(ref)}"
    a, b = real(name, ours, mask).astype(np.float64), real(name, ref, mask).astype(np.float64)
    if name.endswith("hook_attn_scores"):
        T = mask.shape[1]
        keys = mask.astype(bool)[:, None, :] & np.tri(T, dtype=bool)[None]  # [B, T(query), S]
        keep = np.broadcast_to(keys[mask.astype(bool)][:, None, :], a.shape)
        a, b = a[keep], b[keep]
    diff, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
    rel = diff / max(scale, 1e-30)
    print(f"{label} {name}: max|diff| {diff:.2e}, relative {rel:.2e}")
    assert rel <= tol, f"{label} {name}: relative max difference {rel:.2e} > {tol:.0e}"
    return rel


# ------------------------------------------------------------------------------ references
def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids as the toolkit counts them: real tokens only, so left padding shifts nothing."""
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None)


def torch_inputs(tokens: np.ndarray, mask: np.ndarray):
    torch = need("torch")
    return dict(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                attention_mask=torch.from_numpy(mask.astype(np.int64)),
                position_ids=torch.from_numpy(positions(mask).astype(np.int64)))


def hf_reference(hf, tokens: np.ndarray, mask: np.ndarray) -> dict:
    """Our names -> Hugging Face's residual streams, final LayerNorm output and attention patterns."""
    torch = need("torch")
    L = hf.config.n_layer
    last = {}
    handle = hf.transformer.h[L - 1].register_forward_hook(
        lambda mod, args, out: last.setdefault("out", out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            out = hf(**torch_inputs(tokens, mask), output_hidden_states=True, output_attentions=True)
    finally:
        handle.remove()
    hs, att = [h.numpy() for h in out.hidden_states], [a.numpy() for a in out.attentions]
    assert len(hs) == L + 1 and len(att) == L
    ref = {"logits": out.logits.numpy(), "ln_final.hook_normalized": hs[L],
           f"blocks.{L - 1}.hook_resid_post": last["out"].numpy()}
    for l in range(L):
        ref[f"blocks.{l}.hook_resid_pre"] = hs[l]
        ref[f"blocks.{l}.attn.hook_pattern"] = att[l]
        if l + 1 < L:
            ref[f"blocks.{l}.hook_resid_post"] = hs[l + 1]
    return ref


def hf_loss(logits, ids, mask):
    """The mean next-token cross-entropy over the positions whose token and next token are real
    (torch tensors; the logits at t predict token t + 1)."""
    torch = need("torch")
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                           reduction="none").reshape(ids.shape[0], -1)
    valid = (mask[:, :-1] * mask[:, 1:]).to(ce.dtype)
    return (ce * valid).sum() / valid.sum()


def hf_gradients(hf, tokens: np.ndarray, mask: np.ndarray, metric=hf_loss) -> tuple:
    """``(value, {name: gradient})`` by autograd through Hugging Face: ``metric(logits, ids, mask)``
    differentiated with respect to every ``hook_resid_pre`` (``hidden_states``) and
    ``hook_resid_post`` (each block's output), with ``retain_grad``."""
    torch = need("torch")
    L = hf.config.n_layer
    outs = {}

    def keep(l):
        def hook(mod, args, out):
            t = out[0] if isinstance(out, tuple) else out
            t.retain_grad()
            outs[l] = t
        return hook

    handles = [hf.transformer.h[l].register_forward_hook(keep(l)) for l in range(L)]
    try:
        inp = torch_inputs(tokens, mask)
        out = hf(**inp, output_hidden_states=True)
        for h in out.hidden_states[:L]:
            h.retain_grad()
        value = metric(out.logits, inp["input_ids"], inp["attention_mask"])
        value.backward()
    finally:
        for h in handles:
            h.remove()
    grads = {}
    for l in range(L):
        grads[f"blocks.{l}.hook_resid_pre"] = out.hidden_states[l].grad.numpy()
        grads[f"blocks.{l}.hook_resid_post"] = outs[l].grad.numpy()
    hf.zero_grad(set_to_none=True)
    return value.item(), grads


def tl_name(name: str) -> str:
    """TransformerLens's name for what our ``name`` holds. Every name means the same there except
    ``*.hook_normalized``: ours is the LayerNorm's output after its gain and bias, TransformerLens's
    ``hook_normalized`` is before them (``(x - mean) / scale``; in HookedTransformer the gain and
    bias are folded into the next weights), so ours matches its ``*.hook_out``. (Its
    ``hook_attn_scores`` fills masked scores with float32's minimum where we add -1e10: compared
    where not masked.)"""
    return name[:-len("hook_normalized")] + "hook_out" if name.endswith("hook_normalized") else name


def tl_reference(bridge, tokens: np.ndarray, mask: np.ndarray, names) -> tuple:
    """``(logits, {our name: TransformerLens activation}, {ln name: TL's hook_normalized})``."""
    torch = need("torch")
    want = {tl_name(n) for n in names} | {n for n in names if n.endswith("hook_normalized")}
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(**{("input" if k == "input_ids" else k): v
                                                 for k, v in torch_inputs(tokens, mask).items()},
                                              names_filter=lambda n: n in want)
    missing = sorted(tl_name(n) for n in names if tl_name(n) not in cache)
    assert not missing, f"TransformerLens has no {missing[:5]}"
    ref = {n: cache[tl_name(n)].numpy() for n in names}
    pre_affine = {n: cache[n].numpy() for n in names if n.endswith("hook_normalized")}
    return logits.numpy(), ref, pre_affine


def ln_params(hf, name: str) -> tuple:
    """``(gain, bias)`` of the LayerNorm ``name`` (``blocks.{l}.ln1.hook_normalized``, ...)."""
    parts = name.split(".")
    ln = hf.transformer.ln_f if parts[0] == "ln_final" else \
        getattr(hf.transformer.h[int(parts[1])], {"ln1": "ln_1", "ln2": "ln_2"}[parts[2]])
    return ln.weight.detach().numpy(), ln.bias.detach().numpy()


# ------------------------------------------------------------------------------ fixtures
@contextlib.contextmanager
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def folders(make_model_dir, tmp_path_factory):
    """shape -> (original folder, the Hugging Face folder gpt2_convert writes from it)."""
    from gpt2_common.convert import convert_model

    made = {}

    def get(shape):
        if shape not in made:
            orig = make_model_dir(shape)  # the parity suite's random weights
            hf_dir = tmp_path_factory.mktemp(f"hf-{shape}") / "hf"
            convert_model(orig, hf_dir)
            made[shape] = (orig, hf_dir)
        return made[shape]

    return get


def gpt2_tokenizer(vocab_dir, hf_dir):
    """GPT-2's tokenizer, from the real ``encoder.json``/``vocab.bpe``, saved into ``hf_dir`` (its
    ``tokenizer.json``) and loaded from there: the bridge wants one it can reload by path."""
    transformers = need("transformers")
    import inspect

    files = (str(vocab_dir / "encoder.json"), str(vocab_dir / "vocab.bpe"))
    new = "vocab" in inspect.signature(transformers.GPT2TokenizerFast.__init__).parameters  # transformers 5
    transformers.GPT2TokenizerFast(**dict(zip(("vocab", "merges") if new else ("vocab_file", "merges_file"),
                                              files))).save_pretrained(str(hf_dir))
    with offline():
        tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    assert tok("Hello world")["input_ids"] == [15496, 995]
    return tok


def hf_model(hf_dir):
    transformers = need("transformers")
    with offline():
        return transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir), attn_implementation="eager").eval()


def inputs(shape: str, padded: bool, n_vocab: int) -> tuple:
    """``(tokens [3, T], mask [3, T])``: three rows of random tokens, left-padded to the longest
    (lengths ``LENGTHS[shape]``) or all full length."""
    rng = np.random.default_rng(7)
    lengths = LENGTHS[shape] if padded else (LENGTHS[shape][0],) * len(LENGTHS[shape])
    tokens, mask = pad_left([list(rng.integers(0, n_vocab, n)) for n in lengths])
    return tokens, mask


@pytest.fixture(scope="module")
def models():
    """(shape, backend, folder) -> our model, loaded once."""
    from gpt2_common import load_model

    loaded = {}

    def get(backend, folder):
        if (backend, folder) not in loaded:
            if backend == "tf":
                need("tensorflow")
            loaded[backend, folder] = load_model(backend, folder, device="cpu")
        return loaded[backend, folder]

    return get


@pytest.fixture(scope="module")
def references(folders, vocab_dir):
    """(shape, padded) -> (tokens, mask, HF reference, (TL logits, TL reference, TL pre-affine), HF
    model): each outside reference computed once and shared by both backends."""
    from gpt2_common.hooks import hook_names

    booted, done = {}, {}

    def get(shape, padded):
        if shape not in booted:
            need("transformer_lens")
            from transformer_lens.model_bridge import TransformerBridge

            _, hf_dir = folders(shape)
            tok = gpt2_tokenizer(vocab_dir, hf_dir)
            with offline():
                bridge = TransformerBridge.boot_transformers(str(hf_dir), hf_model=hf_model(hf_dir),
                                                             tokenizer=tok, device="cpu")
            booted[shape] = hf_model(hf_dir), bridge  # the bridge gets its own copy of the model
        if (shape, padded) not in done:
            hf, bridge = booted[shape]
            tokens, mask = inputs(shape, padded, hf.config.vocab_size)
            tl = tl_reference(bridge, tokens, mask, hook_names(hf.config.n_layer))
            done[shape, padded] = tokens, mask, hf_reference(hf, tokens, mask), tl, hf
        return done[shape, padded]

    return get


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_residual_streams_and_patterns_equal_hugging_face(folders, references, models, shape, backend, padded):
    """output_hidden_states (resid_pre of each layer, resid_post of each block, ln_f's output) and
    output_attentions (hook_pattern) of GPT2LMHeadModel, eager attention, equal our cache."""
    tokens, mask, ref, _, _ = references(shape, padded)
    model = models(backend, folders(shape)[0])
    names = [n for n in ref if n != "logits"]
    logits, cache = model.run_with_cache(tokens, names=names, attention_mask=mask if padded else None)
    assert sorted(cache) == sorted(names)
    label = f"[{shape}/{backend}/{'padded' if padded else 'unpadded'}] ours vs HF"
    compare(label, "logits", logits, ref["logits"], mask)
    for name in names:
        compare(label, name, cache[name], ref[name], mask)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_named_activation_equals_transformer_lens(folders, references, models, shape, backend, padded):
    """Every name of hook_names against TransformerBridge.run_with_cache on the same weights (see
    tl_name for the LayerNorm outputs' names); TransformerLens's pre-affine hook_normalized, times
    the gain plus the bias, equals ours too."""
    from gpt2_common.hooks import hook_names

    tokens, mask, _, (tl_logits, tl, pre_affine), hf = references(shape, padded)
    model = models(backend, folders(shape)[0])
    logits, cache = model.run_with_cache(tokens, attention_mask=mask if padded else None)
    names = hook_names(model.hparams.n_layer)
    assert sorted(cache) == sorted(names)
    label = f"[{shape}/{backend}/{'padded' if padded else 'unpadded'}] ours vs TransformerLens"
    compare(label, "logits", logits, tl_logits, mask)
    for name in names:
        compare(label, name, cache[name], tl[name], mask)
    for name, x in pre_affine.items():
        g, b = ln_params(hf, name)
        compare(label + " (its hook_normalized * g + b)", name, cache[name], x * g + b, mask)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ["tiny", "mid"])  # 124M: measured once, 1.5e-06 (see README)
def test_activation_gradients_equal_hugging_face_autograd(folders, references, models, shape, backend, padded):
    """activation_gradients(tokens, resid_pre/resid_post of every layer, metric) equals autograd
    through GPT2LMHeadModel (retain_grad on its hidden states and block outputs), for the loss and
    for a logit difference at the last position."""
    from gpt2_common.interp.metrics import logit_diff

    tokens, mask, _, _, hf = references(shape, padded)
    model = models(backend, folders(shape)[0])
    good, bad = 464, 3290
    metrics = {"loss": ("loss", hf_loss),
               "logit_diff": (logit_diff(-1, good, bad),
                              lambda logits, ids, m: (logits[:, -1, good] - logits[:, -1, bad]).mean())}
    for what, (ours_metric, hf_metric) in metrics.items():
        want_value, want = hf_gradients(hf, tokens, mask, hf_metric)
        value, grads = model.activation_gradients(tokens, list(want), metric=ours_metric,
                                                  attention_mask=mask if padded else None)
        label = f"[{shape}/{backend}/{'padded' if padded else 'unpadded'}] {what} gradients vs HF autograd"
        print(f"{label}: value ours {float(value):.7f}, HF {want_value:.7f}")
        assert abs(float(value) - want_value) <= 1e-5 * max(abs(want_value), 1.0)
        assert sorted(grads) == sorted(want)
        for name, g in want.items():
            compare(label, name, grads[name], g, mask, tol=GRAD_TOL)
