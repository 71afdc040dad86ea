"""Zero-shot evaluation the way the GPT-2 paper and lm-evaluation-harness measure it (issue 16).

    from gpt2_common import load_model
    from gpt2_common.evaluate import lambada, perplexity, read_lambada

    model = load_model("torch", "models/124M")
    lambada(model, read_lambada("data/lambada_test.jsonl"))      # {"n", "accuracy", "perplexity", ...}
    perplexity(model, [open("wiki.test.raw").read()], detokenizer="wikitext")

LAMBADA (lm-evaluation-harness's ``lambada_openai``): a passage's context is the passage minus its
last space-separated word, its target ``" " + last word``; trailing spaces of the context move to
the front of the target (the harness's ``_encode_pair``). The target tokens are the encoding of
``context + target`` past the encoding of ``context`` (the harness's split; an empty context is
replaced by ``<|endoftext|>``). ``accuracy``: the share (percent) of passages whose every target
token is the model's top choice (greedy decoding reproduces the word); ``perplexity``:
``exp(-mean over passages of log P(target | context))``. ``target="last_token"`` predicts only the
passage's final BPE token (the variant OpenAI's own evaluation used). A passage with no word to
predict (blank, or ending in a space) is skipped and counted in ``skipped``.

Perplexity of a text (the harness's ``wikitext`` metrics): every document is scored token by token
with :func:`gpt2_common.research.score_many` -- the sliding windows of ``gpt2_score`` (``stride``),
after ``<|endoftext|>`` -- and the log-likelihoods are summed over documents. ``perplexity`` is per
token; ``word_perplexity = exp(-LL / words)`` and ``bits_per_byte = -LL / bytes / ln 2``, where words
(``len(re.split(r"\\s+", doc))``) and UTF-8 bytes are counted on the document *before* an optional
detokenizer (as the harness does), while the model scores the detokenized text.

Both tasks batch windows of several passages into one forward pass (right-padded with
``<|endoftext|>``; causal attention keeps real positions unaffected) and report progress with tqdm.
User errors raise :class:`gpt2_common.research.ResearchError` (one line).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .constants import EOT_TOKEN
from .research import ResearchError, iter_jsonl, read_text, score_many, window_plan

TARGETS = ("word", "last_token")
DETOKENIZERS = ("none", "wikitext")


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def read_lambada(path: str, limit: Optional[int] = None) -> List[str]:
    """The passages (``text`` field) of a LAMBADA ``.jsonl`` file; ResearchError if it has none."""
    texts = [record["text"] for _, record in iter_jsonl(path, limit)]
    if not texts:
        raise ResearchError(f"{path}: no passages")
    return texts


def read_documents(path: str, limit: Optional[int] = None) -> List[str]:
    """Documents of a text file (the whole file is one) or a ``.jsonl`` file (one per line)."""
    if path.endswith(".jsonl"):
        docs = [record["text"] for _, record in iter_jsonl(path, limit)]
    else:
        docs = [read_text(path)]
    if not any(d.strip() for d in docs):
        raise ResearchError(f"{path}: no text to evaluate")
    return docs


def split_passage(text: str) -> Optional[Tuple[str, str]]:
    """``(context, target)`` as the harness's ``lambada_openai`` splits a passage
    (``" ".join(text.split(" ")[:-1])``, ``" " + text.split(" ")[-1]``), or None if no word is
    left to predict."""
    words = text.split(" ")
    if not words[-1].strip():
        return None
    return " ".join(words[:-1]), " " + words[-1]


def lambada_examples(texts: Sequence[str], encoder: Any, target: str = "word",
                     n_vocab: int = EOT_TOKEN + 1) -> Tuple[List[Tuple[List[int], int]], int]:
    """``([(tokens, n_target), ...], skipped)``: each passage's context + target tokens and how
    many trailing tokens are the target; ``skipped`` counts passages with no word to predict."""
    if target not in TARGETS:
        raise ResearchError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    eot = min(EOT_TOKEN, n_vocab - 1)
    out, skipped = [], 0
    for text in texts:
        split = split_passage(text)
        if split is None:
            skipped += 1
            continue
        context, word = split
        # the harness's _encode_pair: trailing spaces of the context go to the target (a passage
        # with two spaces before its last word has a space token to predict, not to condition on)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, word = context[:-n_spaces], context[-n_spaces:] + word
        whole = encoder.encode(context + word)
        if target == "last_token":
            ctx, n_target = whole[:-1], 1
        else:
            ctx = encoder.encode(context)
            n_target = max(1, len(whole) - len(ctx))
        out.append(((list(ctx) if ctx else [eot]) + whole[len(whole) - n_target:], n_target))
    return out, skipped


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="window", disable=not enabled, leave=False)


def _windows(lengths: Sequence[int], n_ctx: int, stride: int) -> int:
    """How many forward-pass windows :func:`score_many` runs for sequences of these lengths."""
    return sum(len(window_plan(n, n_ctx, stride)) for n in lengths)


def lambada(model: Any, texts: Sequence[str], target: str = "word", batch_size: int = 16,
            stride: Optional[int] = None, progress: bool = True) -> Dict[str, Any]:
    """LAMBADA accuracy (percent) and perplexity of ``model`` on ``texts`` (see the module doc).

    ``batch_size`` passages share a forward pass. A passage longer than ``n_ctx`` tokens is scored
    with ``gpt2_score``'s sliding windows (``stride``); the released models' 1024 tokens hold every
    LAMBADA passage. Returns ``{"n", "skipped", "accuracy", "perplexity", "target"}``.
    """
    from .research import check_stride

    hp = model.hparams
    stride = check_stride(stride, int(hp.n_ctx))
    examples, skipped = lambada_examples(texts, model.encoder, target, int(hp.n_vocab))
    if not examples:
        raise ResearchError(f"no passage has a word to predict ({skipped} skipped)")
    lls, greedy = _lambada_scores(model, examples, batch_size, stride, progress)
    return {"n": len(examples), "skipped": skipped, "accuracy": float(greedy.mean() * 100.0),
            "perplexity": _exp(-lls.mean()), "target": target, "stride": stride}


def _lambada_scores(model: Any, examples: Sequence[Tuple[List[int], int]], batch_size: int, stride: int,
                    progress: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Per passage: log P(target | context) and whether every target token ranked first."""
    n_ctx = int(model.hparams.n_ctx)
    lls, greedy = np.empty(len(examples)), np.empty(len(examples), dtype=bool)
    total = _windows([len(t) for t, _ in examples], n_ctx, stride)
    with _progress_bar(total, "LAMBADA", progress) as bar:
        for a in range(0, len(examples), batch_size):
            chunk = examples[a:a + batch_size]
            results = score_many(model, [t for t, _ in chunk], stride=stride, prepend_eot=False, pad=True,
                                 progress=bar.update)
            for k, (r, (_, n_target)) in enumerate(zip(results, chunk)):
                lls[a + k] = float(r.logprobs[-n_target:].sum())
                greedy[a + k] = bool((r.ranks[-n_target:] == 1).all())
    return lls, greedy


def perplexity(model: Any, docs: Sequence[str], stride: Optional[int] = None, detokenizer: str = "none",
               batch_size: int = 16, progress: bool = True) -> Dict[str, Any]:
    """Token perplexity, bits per byte and word perplexity of ``model`` on ``docs`` (module doc).

    Blank documents are skipped (counted in ``skipped``). Returns ``{"n" (scored tokens),
    "documents", "skipped", "words", "bytes", "perplexity", "bits_per_byte", "word_perplexity",
    "stride", "detokenizer"}``.
    """
    from .research import check_stride

    if detokenizer not in DETOKENIZERS:
        raise ResearchError(f"unknown detokenizer {detokenizer!r}: choose one of {', '.join(DETOKENIZERS)}")
    n_ctx = int(model.hparams.n_ctx)
    stride = check_stride(stride, n_ctx)
    kept = [d for d in docs if d.strip()]
    if not kept:
        raise ResearchError("no text to evaluate")
    clean: Callable[[str], str] = wikitext_detokenize if detokenizer == "wikitext" else (lambda d: d)
    token_lists = [model.encoder.encode(clean(d)) for d in kept]
    ll, n_tokens = 0.0, 0
    total = _windows([len(t) + 1 for t in token_lists], n_ctx, stride)
    with _progress_bar(total, "perplexity", progress) as bar:
        for a in range(0, len(token_lists), batch_size):
            for r in score_many(model, token_lists[a:a + batch_size], stride=stride, pad=True,
                                progress=bar.update):
                ll += float(r.logprobs.sum())
                n_tokens += r.n_tokens
    words = sum(count_words(d) for d in kept)
    n_bytes = sum(len(d.encode("utf-8")) for d in kept)
    return {"n": n_tokens, "documents": len(kept), "skipped": len(docs) - len(kept), "words": words,
            "bytes": n_bytes, "perplexity": _exp(-ll / n_tokens), "bits_per_byte": -ll / n_bytes / math.log(2),
            "word_perplexity": _exp(-ll / words), "stride": stride, "detokenizer": detokenizer}


def count_words(doc: str) -> int:
    """Words as the harness counts them: ``len(re.split(r"\\s+", doc))``."""
    return len(re.split(r"\s+", doc))


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


# ------------------------------------------------------------------------------------------------
# WikiText detokenizer (the paper scored WikiText with "invertible de-tokenizers")
# ------------------------------------------------------------------------------------------------

_WIKITEXT_RULES = [
    (re.compile(r" @([-,.])@ "), r"\1"),            # 1 @,@ 000 -> 1,000 ; well @-@ known -> well-known
    (re.compile(r" ([.,:;!?)\]}])"), r"\1"),         # no space before closing punctuation
    (re.compile(r"([(\[{]) "), r"\1"),              # nor after opening brackets
    (re.compile(r" (['’](?:s|re|ve|ll|d|m|t)\b)"), r"\1"),  # John 's -> John's
    (re.compile(r" (n't)\b"), r"\1"),               # do n't -> don't
    (re.compile(r"s ' "), "s' "),                   # plural possessive
    (re.compile(r'" ([^"\n]*?) "'), r'"\1"'),        # " quoted " -> "quoted"
    (re.compile(r"= = = = "), "==== "), (re.compile(r" = = = ="), " ===="),
    (re.compile(r"= = = "), "=== "), (re.compile(r" = = ="), " ==="),
    (re.compile(r"= = "), "== "), (re.compile(r" = ="), " =="),
    (re.compile(r" \n"), "\n"), (re.compile(r"\n "), "\n"),
]


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenisation (``@-@`` joins, spaces around punctuation, brackets, quotes,
    contractions and section marks) so that GPT-2 sees ordinary web-like text."""
    for pattern, repl in _WIKITEXT_RULES:
        text = pattern.sub(repl, text)
    return text
