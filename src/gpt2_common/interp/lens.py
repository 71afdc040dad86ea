"""Reading the residual stream in vocabulary space: the logit lens and direct logit attribution
(framework-free, on ``run_with_cache`` and the model's weights).

Both apply the final LayerNorm and the tied unembedding (``logits = ln_f(x) @ wte^T``) to what the
residual stream holds part-way. The logit lens normalises each layer's residual with its own
statistics (nostalgebraist 2020); direct logit attribution splits the final residual into the
outputs of the embeddings, each head, each attention bias and each MLP, and, with the final
LayerNorm's scale held at the value the whole residual gave it (the usual linearisation), writes
a logit (or a difference of two) as the sum of one term per component.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from ..hooks import HookError

LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon (as in the model files)


def _tokens_1d(model: Any, tokens: Any) -> np.ndarray:
    t = np.asarray(tokens)
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
        raise HookError(f"give one text's tokens as a 1-D integer list, got shape {list(t.shape)}")
    return t.astype(np.int64)


def _ln_final(model: Any) -> tuple:
    w = model.weights(["model/ln_f/g", "model/ln_f/b", "model/wte"])
    return w["model/ln_f/g"], w["model/ln_f/b"], w["model/wte"]


def _normalize(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    u = x.mean(-1, keepdims=True)
    return (x - u) / np.sqrt(((x - u) ** 2).mean(-1, keepdims=True) + LN_EPS) * g + b


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


@dataclass
class LogitLens:
    """The logit lens of one text. ``stages``: ``embed`` (block 0's input) and ``block l`` (block l's
    output), S of them; the last is the model's own prediction. Per stage and position:
    ``top_ids``/``top_probs`` ``[S, T, k]``; for the target token (by default the next token;
    ``targets[t] = -1`` where there is none) ``target_rank`` (1 = the top token; 0 where no target),
    ``target_prob`` and ``target_logprob`` ``[S, T]``."""

    stages: List[str]
    tokens: np.ndarray
    targets: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    target_rank: np.ndarray
    target_prob: np.ndarray
    target_logprob: np.ndarray


def logit_lens(model: Any, tokens: Sequence[int], targets: Optional[Sequence[int]] = None, k: int = 5) -> LogitLens:
    """Each layer's residual stream through ``ln_final`` and the unembedding, for one text's tokens.

    ``targets``: a token id per position to follow (default: the next token of the text)."""
    t = _tokens_1d(model, tokens)
    T, L = len(t), model.hparams.n_layer
    if targets is None:
        tgt = np.concatenate([t[1:], [-1]])
    else:
        tgt = np.asarray(targets, np.int64)
        if tgt.shape != (T,) or tgt.max() >= model.hparams.n_vocab or tgt.min() < -1:
            raise HookError(f"targets must be {T} token ids (or -1 for none)")
    if not isinstance(k, int) or not 1 <= k <= model.hparams.n_vocab:
        raise HookError(f"k must be an integer in [1, {model.hparams.n_vocab}], got {k!r}")
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
    _, cache = model.run_with_cache(t[None], names=names)
    g, b, wte = _ln_final(model)
    S = len(names)
    out = dict(top_ids=np.zeros((S, T, k), np.int64), top_probs=np.zeros((S, T, k), np.float32),
               target_rank=np.zeros((S, T), np.int64), target_prob=np.zeros((S, T), np.float32),
               target_logprob=np.zeros((S, T), np.float32))
    has = tgt >= 0
    for s, name in enumerate(names):  # one stage at a time: [T, V] each
        logits = _normalize(cache[name][0], g, b) @ wte.T
        lp = _log_softmax(logits)
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        out["top_ids"][s] = top
        out["top_probs"][s] = np.exp(np.take_along_axis(lp, top, -1))
        if has.any():
            at = np.take_along_axis(logits, np.where(has, tgt, 0)[:, None], -1)
            out["target_rank"][s] = np.where(has, (logits > at).sum(-1) + 1, 0)
            tl = np.take_along_axis(lp, np.where(has, tgt, 0)[:, None], -1)[:, 0]
            out["target_logprob"][s] = np.where(has, tl, 0.0)
            out["target_prob"][s] = np.where(has, np.exp(tl), 0.0)
    return LogitLens(["embed"] + [f"block {l}" for l in range(L)], t, tgt, **out)


@dataclass
class Attribution:
    """Direct logit attribution at one position: ``heads [L, H]``, ``mlps [L]``, ``attn_biases [L]``
    (each layer's output-projection bias), ``embed`` (token + position embeddings) and ``ln_bias``
    (ln_final's bias) sum to ``total``, which equals the model's logit (difference) ``logit``."""

    token: int
    against: Optional[int]
    position: int
    embed: float
    heads: np.ndarray
    attn_biases: np.ndarray
    mlps: np.ndarray
    ln_bias: float
    total: float
    logit: float

    def top(self, n: int = 5) -> List[tuple]:
        """The ``n`` components with the largest absolute contribution: ``(name, value)``."""
        items = [("embed", self.embed), ("ln_final bias", self.ln_bias)]
        items += [(f"L{l}H{h}", float(v)) for (l, h), v in np.ndenumerate(self.heads)]
        items += [(f"L{l} MLP", float(v)) for l, v in enumerate(self.mlps)]
        items += [(f"L{l} attn bias", float(v)) for l, v in enumerate(self.attn_biases)]
        return sorted(items, key=lambda x: -abs(x[1]))[:n]


def direct_logit_attribution(model: Any, tokens: Sequence[int], position: int = -1, token: Optional[int] = None,
                             against: Optional[int] = None) -> Attribution:
    """How much each head, MLP layer and the embeddings write directly into the logit of ``token``
    (default: the model's top prediction) at ``position`` of one text, or into the logit difference
    ``token - against``."""
    t = _tokens_1d(model, tokens)
    T, hp = len(t), model.hparams
    if not -T <= position < T:
        raise HookError(f"position {position} is outside the text's {T} tokens")
    pos = position % T
    L, H, D = hp.n_layer, hp.n_head, hp.head_dim
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"] + \
        [f"blocks.{l}.{n}" for l in range(L) for n in ("attn.hook_z", "hook_mlp_out")]
    logits, c = model.run_with_cache(t[None], names=names)
    g, b, wte = _ln_final(model)
    if token is None:
        token = int(np.argmax(logits[0, pos]))
    for tok in (token, against):
        if tok is not None and not 0 <= tok < hp.n_vocab:
            raise HookError(f"token id {tok} is outside [0, {hp.n_vocab})")
    direction = wte[token] - (wte[against] if against is not None else 0.0)  # [E]
    scale = float(c["ln_final.hook_scale"][0, pos, 0])

    def project(x: np.ndarray) -> np.ndarray:  # ln_final's linear part, frozen scale: [..., E] -> [...]
        x = x.astype(np.float64)
        return ((x - x.mean(-1, keepdims=True)) / scale * g) @ direction

    w = model.weights([f"model/h{l}/attn/c_proj/{p}" for l in range(L) for p in ("w", "b")])
    heads = np.zeros((L, H))
    biases = np.zeros(L)
    mlps = np.zeros(L)
    for l in range(L):
        wo = w[f"model/h{l}/attn/c_proj/w"][0].reshape(H, D, hp.n_embd)  # [H, D, E]
        z = c[f"blocks.{l}.attn.hook_z"][0, pos]  # [H, D]
        heads[l] = project(np.einsum("hd,hde->he", z, wo))
        biases[l] = project(w[f"model/h{l}/attn/c_proj/b"])
        mlps[l] = project(c[f"blocks.{l}.hook_mlp_out"][0, pos])
    embed = float(project(c["hook_embed"][0, pos] + c["hook_pos_embed"][0, pos]))
    ln_bias = float(b @ direction)
    total = embed + heads.sum() + biases.sum() + mlps.sum() + ln_bias
    logit = float(logits[0, pos, token] - (logits[0, pos, against] if against is not None else 0.0))
    return Attribution(int(token), against, pos, embed, heads, biases, mlps, ln_bias, float(total), logit)
