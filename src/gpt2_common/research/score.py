"""Scoring: the log-probability and rank of every token of a text under GPT-2 (issue #6).

Scoring (backend-neutral: everything goes through ``model.logits``)::

    from gpt2_common import load_model
    from gpt2_common.research import score_text

    model = load_model("torch", "models/124M")
    r = score_text(model, "The quick brown fox jumps over the lazy dog.")
    r.logprobs, r.ranks            # per token: log p(token | prefix) (natural log), rank (1 = argmax)
    r.total_nll, r.mean_nll, r.perplexity

Every token of the text is scored given the tokens before it. The first token has no prefix, so by
default ``<|endoftext|>`` is prepended as context (as the gpt-2-output-dataset study did); with
``prepend_eot=False`` the first token is context only and is not scored. Texts longer than the
model's context ``n_ctx`` are scored with a sliding window (the Hugging Face perplexity recipe):
windows of ``n_ctx`` tokens start every ``stride`` tokens (default ``n_ctx // 2``); each window scores
only the tokens the previous one did not reach, so every token is scored exactly once, with as much
left context as its window allows (at least ``n_ctx - stride`` tokens once the first window is
passed). A text that fits in ``n_ctx`` is a single forward pass. The log-softmax is taken in float64
from the model's float32 logits. A token's rank is ``1 + the number of vocabulary entries with a
strictly greater logit`` (so ties share the better rank).

User errors (empty text, bad stride, bad token ids) raise :class:`ResearchError` with a one-line
message. No deep-learning framework is imported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..constants import EOT_TOKEN

#: Upper bound on ``batch * length * n_vocab`` logits per forward pass (2**27 float32 = 512 MiB).
MAX_BATCH_LOGITS = 2**27
#: Rows of float64 log-softmax computed at once (bounds the float64 temporaries).
_ROW_CHUNK = 256
#: Every forward pass holds at least this many positions (extra rows of <|endoftext|>, ignored), so
#: that a text's numbers do not depend on what it was batched with (issue 14): a row's products are
#: summed in another order when few rows are multiplied, by the torch backend's decode path (16 rows
#: or fewer) and by the BLAS itself (MKL here: 1-3 rows differ from 4 and more, in plain ``x @ w``
#: too), so a reduction independent of the row count cannot come from the model's matmul alone.
MIN_FORWARD_POSITIONS = 17


class ResearchError(ValueError):
    """A user error in scoring or detection input: reported as one line."""


@dataclass
class ScoreResult:
    """Per-token scores of one text.

    ``tokens[i]`` was scored given ``context + tokens[:i]``: ``logprobs[i]`` is its natural-log
    probability (float64), ``ranks[i]`` its rank among all ``n_vocab`` tokens (1 = the model's top
    choice). ``context`` holds the tokens that were given but not scored (``[<|endoftext|>]`` by
    default, or the text's first token when ``<|endoftext|>`` is not prepended).
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    ranks: np.ndarray
    context: List[int] = field(default_factory=list)
    n_ctx: int = 0
    stride: int = 0
    #: With ``top_k``: the model's ``top_k`` most likely tokens at each position ``[N, top_k]``
    #: (best first) and their log-probabilities (the GLTR view, :mod:`gpt2_common.gltr`).
    top_tokens: Optional[np.ndarray] = None
    top_logprobs: Optional[np.ndarray] = None

    @property
    def n_tokens(self) -> int:
        """Number of scored tokens."""
        return int(self.tokens.shape[0])

    @property
    def total_nll(self) -> float:
        """Sum of ``-logprobs`` (nats)."""
        return float(-self.logprobs.sum())

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per scored token (nats)."""
        return self.total_nll / self.n_tokens if self.n_tokens else float("nan")

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability per scored token (``-mean_nll``); the detection score."""
        return -self.mean_nll

    @property
    def perplexity(self) -> float:
        """``exp(mean_nll)``."""
        if not self.n_tokens:
            return float("nan")
        try:
            return math.exp(self.mean_nll)
        except OverflowError:
            return float("inf")

    def summary(self) -> Dict[str, Any]:
        """The totals: ``n_tokens, total_nll, mean_nll, perplexity``."""
        return {"n_tokens": self.n_tokens, "total_nll": self.total_nll, "mean_nll": self.mean_nll,
                "perplexity": self.perplexity}

    def to_dict(self, encoder: Any = None) -> Dict[str, Any]:
        """A JSON-ready dict: per-token ``tokens``, ``token_strings`` (with an ``encoder``),
        ``logprobs``, ``ranks``, plus ``context``, ``n_ctx``, ``stride`` and :meth:`summary`."""
        d: Dict[str, Any] = {"tokens": [int(t) for t in self.tokens]}
        if encoder is not None:
            d["token_strings"] = token_strings(encoder, self.tokens)
        d["logprobs"] = [float(x) for x in self.logprobs]
        d["ranks"] = [int(r) for r in self.ranks]
        d["context"] = [int(t) for t in self.context]
        d.update(n_ctx=self.n_ctx, stride=self.stride)
        d.update(self.summary())
        return d


def token_strings(encoder: Any, tokens: Sequence[int]) -> List[str]:
    """Each token decoded on its own (a token holding part of a UTF-8 character shows U+FFFD)."""
    return [encoder.decode([int(t)]) for t in tokens]


def check_stride(stride: Any, n_ctx: int) -> int:
    """``stride`` (``None``: ``n_ctx // 2``) as an int in ``[1, n_ctx - 1]``, else ResearchError.

    A stride of ``n_ctx`` or more would leave the first token of each later window without context.
    """
    if stride is None:
        return max(1, n_ctx // 2)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride < n_ctx:
        raise ResearchError(f"stride must be an integer in [1, {n_ctx - 1}] (n_ctx={n_ctx}), got {stride!r}")
    return int(stride)


def window_plan(length: int, n_ctx: int, stride: int) -> List[Tuple[int, int, int]]:
    """Sliding windows over a sequence of ``length`` tokens whose positions ``1..length-1`` are scored.

    Returns ``[(begin, end, first), ...]``: the window feeds ``seq[begin:end]`` (at most ``n_ctx``
    tokens) and scores positions ``first..end-1``, each from the logits one position earlier. Windows
    start every ``stride`` tokens (the Hugging Face recipe); each scores from where the previous
    one ended, so the scored ranges tile ``1..length-1`` exactly. ``stride`` must be in
    ``[1, n_ctx - 1]`` so that ``first > begin``.
    """
    if not 1 <= stride < n_ctx:
        raise ResearchError(f"stride must be in [1, {n_ctx - 1}], got {stride}")
    plan: List[Tuple[int, int, int]] = []
    prev_end, begin = 1, 0
    while prev_end < length:
        end = min(begin + n_ctx, length)
        plan.append((begin, end, prev_end))
        prev_end = end
        begin += stride
    return plan


def _check_token_list(tokens: Any, n_vocab: int) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ResearchError(f"tokens must be a flat list of token ids, got shape {arr.shape} ({arr.dtype})")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_vocab):
        bad = arr[(arr < 0) | (arr >= n_vocab)][0]
        raise ResearchError(f"token id {bad} is outside [0, {n_vocab})")
    return arr


def _score_rows(logits: np.ndarray, targets: np.ndarray, top_k: int = 0) -> Tuple[np.ndarray, ...]:
    """Log-probability (float64) and rank of ``targets[i]`` under ``logits[i]`` (float32 ``[N, V]``);
    with ``top_k``, also the ``top_k`` best token ids and their log-probabilities per row."""
    lps = np.empty(len(targets), dtype=np.float64)
    ranks = np.empty(len(targets), dtype=np.int64)
    top_ids = np.empty((len(targets), top_k), dtype=np.int64)
    top_lps = np.empty((len(targets), top_k), dtype=np.float64)
    idx = np.arange(len(targets))
    for a in range(0, len(targets), _ROW_CHUNK):
        rows, tgt = logits[a:a + _ROW_CHUNK], targets[a:a + _ROW_CHUNK]
        x = rows.astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
        chosen = rows[idx[:len(tgt)], tgt]
        lps[a:a + len(tgt)] = chosen.astype(np.float64) - lse
        ranks[a:a + len(tgt)] = (rows > chosen[:, None]).sum(axis=1) + 1
        if top_k:
            best = np.argpartition(-rows, top_k - 1, axis=1)[:, :top_k]
            best_logits = np.take_along_axis(rows, best, axis=1)
            order = np.argsort(-best_logits, axis=1, kind="stable")
            top_ids[a:a + len(tgt)] = np.take_along_axis(best, order, axis=1)
            top_lps[a:a + len(tgt)] = np.take_along_axis(best_logits, order, axis=1) - lse[:, None]
    return (lps, ranks, top_ids, top_lps) if top_k else (lps, ranks)


def score_many(model: Any, token_lists: Sequence[Sequence[int]], stride: Optional[int] = None,
               prepend_eot: bool = True, max_tokens: Optional[int] = None, pad: bool = False,
               max_batch_logits: int = MAX_BATCH_LOGITS, top_k: int = 0,
               progress: Optional[Callable[[int], Any]] = None) -> List[ScoreResult]:
    """Score several token lists at once (see :func:`score_tokens`); windows are batched.

    ``max_tokens`` keeps only each list's first ``max_tokens`` tokens. Windows of equal length share
    a forward pass; with ``pad=True`` windows of different lengths are also batched, right-padded
    with ``<|endoftext|>`` (causal attention keeps the real positions unaffected, up to float noise
    from the different shapes) -- faster for many short documents. A forward pass holds at most
    ``max_batch_logits`` logits (but always at least one window). ``top_k``: also keep the model's
    ``top_k`` best tokens per position (``ScoreResult.top_tokens``/``top_logprobs``). ``progress``:
    called with the number of windows after each forward pass (for a progress bar; the windows of
    a text are :func:`window_plan`'s).
    """
    hp = model.hparams
    n_ctx, n_vocab = int(hp.n_ctx), int(hp.n_vocab)
    stride = check_stride(stride, n_ctx)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer))
                                   or max_tokens < 1):
        raise ResearchError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    eot = min(EOT_TOKEN, n_vocab - 1)

    seqs: List[np.ndarray] = []
    for i, toks in enumerate(token_lists):
        arr = _check_token_list(toks, n_vocab)
        if max_tokens is not None:
            arr = arr[:max_tokens]
        if prepend_eot:
            arr = np.concatenate([np.array([eot], np.int64), arr])
        if len(arr) < 2:
            what = "no tokens" if len(arr) == 0 or prepend_eot else "only one token"
            raise ResearchError(f"text {i + 1} has {what} to score" +
                                ("" if prepend_eot else " (without <|endoftext|> the first token is context only)"))
        seqs.append(arr)

    # Every window of every sequence: (seq index, begin, end, first scored position).
    windows = [(s, b, e, f) for s, seq in enumerate(seqs) for (b, e, f) in window_plan(len(seq), n_ctx, stride)]
    lps = [np.empty(len(seq) - 1, np.float64) for seq in seqs]
    ranks = [np.empty(len(seq) - 1, np.int64) for seq in seqs]
    top_k = min(int(top_k), n_vocab)
    tops = [(np.empty((len(seq) - 1, top_k), np.int64), np.empty((len(seq) - 1, top_k), np.float64))
            for seq in seqs] if top_k else None

    order = sorted(range(len(windows)), key=lambda w: -(windows[w][2] - windows[w][1]))
    i = 0
    while i < len(order):
        T = windows[order[i]][2] - windows[order[i]][1]  # the longest window left
        limit = max(1, max_batch_logits // (T * n_vocab))
        j = i + 1
        while j < len(order) and j - i < limit and (pad or windows[order[j]][2] - windows[order[j]][1] == T):
            j += 1
        batch = [windows[w] for w in order[i:j]]
        x = np.full((max(len(batch), -(-MIN_FORWARD_POSITIONS // T)), T), eot, dtype=np.int32)
        for r, (s, b, e, _) in enumerate(batch):
            x[r, :e - b] = seqs[s][b:e]
        logits = model.logits(x)
        for r, (s, b, e, f) in enumerate(batch):
            # Position p of the sequence is predicted by the logits at p - 1 (window row p - 1 - b).
            rows = logits[r, f - 1 - b:e - 1 - b]
            got = _score_rows(rows, seqs[s][f:e], top_k)
            lps[s][f - 1:e - 1], ranks[s][f - 1:e - 1] = got[:2]
            if tops:
                tops[s][0][f - 1:e - 1], tops[s][1][f - 1:e - 1] = got[2:]
        if progress is not None:
            progress(len(batch))
        i = j
    return [ScoreResult(tokens=seq[1:].copy(), logprobs=lps[s], ranks=ranks[s], context=[int(seq[0])],
                        n_ctx=n_ctx, stride=stride, top_tokens=tops[s][0] if tops else None,
                        top_logprobs=tops[s][1] if tops else None) for s, seq in enumerate(seqs)]


def score_tokens(model: Any, tokens: Sequence[int], stride: Optional[int] = None,
                 prepend_eot: bool = True, max_tokens: Optional[int] = None, top_k: int = 0) -> ScoreResult:
    """Log-probability and rank of every token of ``tokens`` given its prefix, under ``model``.

    ``model``: anything with ``.hparams`` (``n_ctx``, ``n_vocab``) and ``.logits(tokens [B, T]) ->
    float32 [B, T, n_vocab]`` (see :func:`gpt2_common.load_model`). ``stride``: the sliding-window
    step for sequences longer than ``n_ctx`` (default ``n_ctx // 2``; must be in ``[1, n_ctx - 1]``).
    ``prepend_eot``: score the first token too, given ``<|endoftext|>`` (default); otherwise the
    first token is context only. ``max_tokens``: score only the first ``max_tokens`` tokens.
    ``top_k``: also keep the model's ``top_k`` best tokens at each position.
    """
    return score_many(model, [tokens], stride=stride, prepend_eot=prepend_eot, max_tokens=max_tokens,
                      top_k=top_k)[0]


def score_text(model: Any, text: str, stride: Optional[int] = None, prepend_eot: bool = True,
               max_tokens: Optional[int] = None, encoder: Any = None, top_k: int = 0) -> ScoreResult:
    """:func:`score_tokens` on ``text`` encoded with ``encoder`` (default: ``model.encoder``)."""
    if not isinstance(text, str):
        raise ResearchError(f"text must be a string, got {type(text).__name__}")
    if not text:
        raise ResearchError("empty text: nothing to score")
    tokens = (encoder or model.encoder).encode(text)
    return score_tokens(model, tokens, stride=stride, prepend_eot=prepend_eot, max_tokens=max_tokens,
                        top_k=top_k)


def score_documents(model: Any, texts: Sequence[str], max_tokens: Optional[int] = 256,
                    stride: Optional[int] = None, prepend_eot: bool = True,
                    batch_docs: int = 64) -> Iterator[Tuple[int, ScoreResult]]:
    """Yield ``(index, ScoreResult)`` for each text with something to score, over its first
    ``max_tokens`` tokens; ``batch_docs`` documents at a time share padded forward passes."""
    enc = model.encoder
    for a in range(0, len(texts), batch_docs):
        chunk = [enc.encode(t) for t in texts[a:a + batch_docs]]
        keep = [k for k, toks in enumerate(chunk) if len(toks) >= (1 if prepend_eot else 2)]
        results = score_many(model, [chunk[k] for k in keep], stride=stride, prepend_eot=prepend_eot,
                             max_tokens=max_tokens, pad=True)
        for k, r in zip(keep, results):
            yield a + k, r
