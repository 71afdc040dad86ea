"""The backend-neutral interface that scripts, tests and benchmarks use.

    model = load_model("torch", "models/124M")          # or "tf"
    model.logits(tokens)                                  # np.float32 [B, T, n_vocab]
    model.generate(context, length=20, top_k=40, seed=1)  # np.int64 [B, <=length] new token ids
    logits, cache = model.run_with_cache(tokens)          # + every named activation (gpt2_common.hooks)
    model.run_with_hooks(tokens, hooks={name: fn})        # fn(array, name) -> edited array or None

Each backend supplies two compiled steps, ``prefill(tokens, mask) -> (last_logits, past)`` and
``decode(tokens, past, mask) -> (last_logits, past)``; :func:`decode_loop` drives them the same way
for both, and :class:`~gpt2_common.sampling.Sampler` chooses every token, so the backends differ only
in the arithmetic of their forward pass.
"""
from __future__ import annotations

import abc
import difflib
import functools
import inspect
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .constants import BACKENDS, DTYPES, EOT_TOKEN
from .hooks import Names, NumpyHook, merge_hooks, numpy_hooks, select_names
from .hparams import HParams
from .registry import backend_class
from .sampling import Sampler, SamplingError, Seed, validate_args

Context = Union[None, Sequence[int], Sequence[Sequence[int]], np.ndarray]

DECODE_ROWS = 16
"""Rows of every batch-invariant decoding step (:meth:`GPT2Model.decode_rows`): the matrix products
of a step always have this many rows, real or padding, because a CPU GEMM's summation order (MKL's,
oneDNN's, XLA's) changes with the row count: 1 row against 4, and for the LM head's 50,257 outputs
also between 4 and 16 rows in MKL's default mode. With a fixed count a row's logits are the same
bits whatever else is in the batch. More rows than this run as several steps of this many.

A backend may use fewer rows where it has checked, on the machine, that its products give each row
the same bits for every row count from :data:`MIN_DECODE_ROWS` to this (PyTorch on the CPU, fp32:
see ``TorchGPT2._step_rows``); one prompt then costs a 4-row step rather than a 16-row one.
TensorFlow's steps always have this many rows (its LayerNorm reductions, too, depend on the count)."""
MIN_DECODE_ROWS = 4
"""The fewest rows of a batch-invariant step (1 row sums in another order than 4 in MKL and oneDNN)."""
StepFn = Callable[..., Tuple[np.ndarray, Any]]


class ModelError(ValueError):
    """Bad arguments to a model: unknown backend or device, tokens out of range, too long input."""


def load_model(backend: str, model_dir: Union[str, "os.PathLike[str]"], device: Optional[str] = None,
               dtype: str = "float32", trainable: bool = False, **options: Any) -> "GPT2Model":
    """Load the checkpoint in ``model_dir`` with backend ``"tf"`` or ``"torch"``.

    ``device``: ``None`` (the backend's default: the GPU if there is one), ``"cpu"``, ``"cuda"``
    / ``"cuda:N"`` / ``"gpu"``. ``dtype``: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
    ``trainable``: build the weights as trainable variables / parameters (for ``gpt2_common.train``;
    on ``"tf"``, in a process where TensorFlow has not run yet, also its memory allocator set up
    for training: ``gpt2_common.train.allocator``).
    ``options``: the backend's own, e.g. ``xla=False`` for ``"tf"`` (its XLA decode path).
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if trainable and backend == "tf":  # before TensorFlow is imported, where it is not yet
        from .train.allocator import prepare_tensorflow_training
        prepare_tensorflow_training()
    cls = backend_class(backend)
    unknown = [k for k in options if k not in inspect.signature(cls.__init__).parameters]
    if unknown:
        raise ModelError(f"the {backend} backend takes no option {unknown[0]!r}")
    return cls(os.fspath(model_dir), device=device, dtype=dtype, trainable=trainable, **options)


def pad_left(contexts: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists to one length: ``(tokens [B, T] int32, mask [B, T] int32)``."""
    T = max(len(c) for c in contexts)
    tokens = np.zeros((len(contexts), T), dtype=np.int32)
    mask = np.zeros((len(contexts), T), dtype=np.int32)
    for r, c in enumerate(contexts):
        if len(c):
            tokens[r, T - len(c):] = c
            mask[r, T - len(c):] = 1
    return tokens, mask


def decode_loop(prefill: StepFn, decode: StepFn, tokens: np.ndarray, mask: np.ndarray, length: int,
                sampler: Sampler, n_ctx: int, stop_token: Optional[int] = None,
                sliding_window: bool = False, callback: Optional[Callable[[int, np.ndarray], Any]] = None
                ) -> np.ndarray:
    """Generate ``length`` tokens after ``tokens`` ``[B, T]`` (left-padded, ``mask`` 1 = real).

    The KV cache grows by one position per step. When it would pass ``n_ctx`` and
    ``sliding_window`` is set, the last ``n_ctx // 2`` tokens are re-encoded and decoding goes on;
    otherwise that is an error. With ``stop_token``, a row that produced it is padded with it from
    then on, and the loop ends once every row has. ``callback(step, new_tokens [B])`` sees each step.
    Returns the new tokens ``[B, n]`` (int64), ``n <= length``.
    """
    B = tokens.shape[0]
    out = np.zeros((B, length), dtype=np.int64)
    if length == 0:
        return out
    history, hmask = tokens.astype(np.int32), mask.astype(np.int32)
    logits, past = prefill(history, hmask)
    done = np.zeros(B, dtype=bool)
    n = 0
    for n in range(1, length + 1):
        new = sampler(logits)
        if stop_token is not None:
            new = np.where(done, stop_token, new)
            done |= new == stop_token
        out[:, n - 1] = new
        if callback is not None:
            callback(n - 1, new)
        if n == length or (stop_token is not None and done.all()):
            break
        history = np.concatenate([history, new[:, None].astype(np.int32)], axis=1)
        hmask = np.concatenate([hmask, np.ones((B, 1), np.int32)], axis=1)
        if history.shape[1] > n_ctx:
            if not sliding_window:
                raise ModelError(f"context of {history.shape[1]} tokens exceeds n_ctx={n_ctx}")
            history, hmask = history[:, -(n_ctx // 2):], hmask[:, -(n_ctx // 2):]
            logits, past = prefill(history, hmask)
        else:
            logits, past = decode(history[:, -1:], past, hmask)
    return out[:, :n]


class GPT2Model(abc.ABC):
    """A loaded GPT-2; backends implement :meth:`_logits`, :meth:`_prefill` and :meth:`_decode`."""

    backend: str = ""

    def __init__(self, model_dir: str, hparams: HParams, device: str, dtype: str) -> None:
        self.model_dir, self.hparams, self.device, self.dtype = model_dir, hparams, device, dtype
        self._encoder = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_dir} device={self.device} dtype={self.dtype}>"

    @property
    def encoder(self):
        """The BPE encoder from the model directory (loaded on first use)."""
        if self._encoder is None:
            from .encoder import load_encoder

            self._encoder = load_encoder(self.model_dir)
        return self._encoder

    # ---- backend hooks: numpy in, numpy (and an opaque cache) out; ``hooks``: the model file's
    # hooks (name -> tensor function; see gpt2_common.hooks), built by :meth:`_model_hooks` ----
    @abc.abstractmethod
    def _logits(self, tokens: np.ndarray, mask: Optional[np.ndarray], hooks=None) -> np.ndarray: ...

    @abc.abstractmethod
    def _prefill(self, tokens: np.ndarray, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Any]: ...

    @abc.abstractmethod
    def _decode(self, tokens: np.ndarray, past: Any, mask: np.ndarray, hooks=None) -> Tuple[np.ndarray, Any]: ...

    @abc.abstractmethod
    def _decode_rows(self, tokens: np.ndarray, pasts: List[Any]) -> Tuple[np.ndarray, List[Any]]:
        """The backend's batch-invariant step: ``tokens`` ``[B]`` (``B <= DECODE_ROWS``), ``pasts``
        the rows' own caches (from :meth:`_prefill` of one row, or this method) -> ``(logits [B, V],
        new caches)``. See :meth:`decode_rows`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode_rows")

    def _to_numpy(self, x: Any) -> np.ndarray:
        """A framework tensor as a float32 numpy array."""

    @abc.abstractmethod
    def _from_numpy(self, a: np.ndarray, like: Any) -> Any:
        """A numpy array as a tensor of ``like``'s dtype and device."""

    @abc.abstractmethod
    def _weight_tensors(self) -> Dict[str, Any]:
        """The model's parameters / variables by checkpoint name."""

    @abc.abstractmethod
    def _activation_gradients(self, tokens: np.ndarray, mask: Optional[np.ndarray], names: List[str],
                              metric: Any) -> Tuple[float, Dict[str, np.ndarray]]: ...

    # ---- the public contract ----
    def check_tokens(self, tokens: np.ndarray, what: str = "tokens") -> None:
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.hparams.n_vocab):
            bad = tokens[(tokens < 0) | (tokens >= self.hparams.n_vocab)].flat[0]
            raise ModelError(f"{what}: token id {bad} is outside [0, {self.hparams.n_vocab})")

    def logits(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]],
               attention_mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Logits ``np.float32 [B, T, n_vocab]`` for int tokens ``[B, T]`` (no cache).

        ``attention_mask`` ``[B, T]`` marks real tokens (1) and left padding (0)."""
        return self._logits(*self._forward_input(tokens, attention_mask))

    # ---- batch-invariant decoding (gpt2_common.serve, and generate(batch_invariant=True)) ----
    def prefill_row(self, tokens: Sequence[int]) -> Tuple[np.ndarray, Any]:
        """Encode one prompt (a non-empty token list, at most ``n_ctx`` tokens): ``(logits [V]
        float32 of its last position, cache)``, the cache to pass to :meth:`decode_rows`."""
        arr = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        if arr.shape[1] == 0 or arr.shape[1] > self.hparams.n_ctx:
            raise ModelError(f"a prompt must have 1 to {self.hparams.n_ctx} tokens, got {arr.shape[1]}")
        self.check_tokens(arr, "prompt")
        logits, past = self._prefill(arr.astype(np.int32), np.ones(arr.shape, np.int32))
        return logits[0], past

    def decode_rows(self, tokens: Sequence[int], caches: Sequence[Any]) -> Tuple[np.ndarray, List[Any]]:
        """One decoding step for rows that each have their own cache (of any length): row ``r``
        feeds ``tokens[r]`` after the positions in ``caches[r]``. Returns ``(logits [B, V] float32,
        new caches)``; a cache passed in must not be used again (it may be updated in place).

        Batch-invariant: row ``r``'s logits are bit-identical whichever other rows share the step
        (the matrix products have a row count that does not change a row's sums, see
        :data:`DECODE_ROWS`; each row attends over its own keys alone), and :meth:`generate` of one prompt with ``batch_invariant`` decodes through
        it. A cache's length plus one must not pass ``n_ctx``."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) != len(caches):
            raise ModelError(f"{len(tokens)} tokens for {len(caches)} caches")
        self.check_tokens(tokens)
        logits, out = [], []
        for a in range(0, len(tokens), DECODE_ROWS):
            lg, new = self._decode_rows(tokens[a:a + DECODE_ROWS], list(caches[a:a + DECODE_ROWS]))
            logits.append(lg)
            out.extend(new)
        if not logits:
            return np.zeros((0, self.hparams.n_vocab), np.float32), []
        return np.concatenate(logits), out

    def _one_row_decode(self, tokens: np.ndarray, past: Any, mask: np.ndarray) -> Tuple[np.ndarray, Any]:
        """:func:`decode_loop`'s ``decode`` for one unpadded row, through :meth:`_decode_rows`."""
        logits, (past,) = self._decode_rows(tokens[:, -1].astype(np.int64), [past])
        return logits, past

    # ---- inside the model: named activations (gpt2_common.hooks) ----
    def _model_hooks(self, hooks: Optional[Dict[str, Union[NumpyHook, Sequence[NumpyHook]]]]):
        """The model file's hooks for numpy ``hooks`` (None for none: the plain forward)."""
        if hooks is None:
            return None
        return numpy_hooks(hooks, self.hparams.n_layer, self._to_numpy, self._from_numpy) or None

    def run_with_hooks(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]],
                       hooks: Dict[str, Union[NumpyHook, Sequence[NumpyHook]]],
                       attention_mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Logits ``np.float32 [B, T, n_vocab]`` of a forward in which ``hooks`` read or edit named
        activations: ``{name: fn}`` with ``fn(array, name)`` returning an edited array (same shape,
        a float dtype) or None to keep it; a list of functions runs in order. Names and shapes:
        :mod:`gpt2_common.hooks`. The same hook function runs unchanged on either backend."""
        tokens, mask = self._forward_input(tokens, attention_mask)
        return self._logits(tokens, mask, self._model_hooks(hooks))

    def run_with_cache(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]], names: Names = None,
                       attention_mask: Optional[np.ndarray] = None,
                       hooks: Optional[Dict[str, Union[NumpyHook, Sequence[NumpyHook]]]] = None
                       ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """``(logits, cache)``: the logits and a dict of named activations (float32 numpy arrays).

        ``names``: None for every name, a name or list of names, or a filter ``fn(name) -> bool``.
        With ``hooks`` (as :meth:`run_with_hooks`) the cache holds the activations after they ran.
        Caching an attention pattern or LayerNorm scale makes that layer compute it explicitly
        (results equal the fused kernels' to float rounding)."""
        tokens, mask = self._forward_input(tokens, attention_mask)
        cache: Dict[str, np.ndarray] = {}

        def keep(arr: np.ndarray, name: str) -> None:
            cache[name] = arr

        recorders = {n: [keep] for n in select_names(names, self.hparams.n_layer)}
        logits = self._logits(tokens, mask, self._model_hooks(merge_hooks(hooks or {}, recorders)))
        return logits, {n: cache[n] for n in recorders if n in cache}

    def activation_gradients(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]], names: Names,
                             metric: Any = "loss", attention_mask: Optional[np.ndarray] = None
                             ) -> Tuple[float, Dict[str, np.ndarray]]:
        """``(value, {name: d value / d activation})`` for a scalar ``metric`` of the logits
        (the base of attribution patching). ``metric``: ``"loss"`` (mean next-token cross-entropy
        over the real positions, as :meth:`loss`), or a :class:`gpt2_common.interp.metrics.Metric`
        factory such as ``logit_diff(position, good, bad)``. Gradients are float32, shaped as the
        activations; the weights are not changed."""
        from .interp.metrics import resolve_metric

        tokens, mask = self._forward_input(tokens, attention_mask)
        wanted = select_names(names, self.hparams.n_layer)
        return self._activation_gradients(tokens, mask, wanted, resolve_metric(metric, tokens, mask, self.hparams.n_vocab))

    def weights(self, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """The model's weights as float32 numpy arrays keyed and shaped as in the checkpoint
        (``model/wte`` ``[V, E]``, ``model/h0/attn/c_attn/w`` ``[1, E, 3E]``, ...): all, or ``names``."""
        from .weights import expected_shapes

        shapes, tensors = expected_shapes(self.hparams), self._weight_tensors()
        for n in names or ():
            if n not in tensors:
                close = difflib.get_close_matches(n, list(tensors), n=1)
                raise ModelError(f"no weight {n!r}" + (f"; did you mean {close[0]}?" if close else ""))
        return {n: self._to_numpy(tensors[n]).reshape(shapes[n]) for n in (names or sorted(tensors))}

    def _forward_input(self, tokens: Any, attention_mask: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Checked int32 tokens ``[B, T]`` and mask (or None) for a forward without a cache."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ModelError(f"tokens must be a non-empty integer array [B, T], got shape {tokens.shape}")
        if tokens.shape[1] > self.hparams.n_ctx:
            raise ModelError(f"{tokens.shape[1]} tokens exceed the context of {self.hparams.n_ctx}")
        self.check_tokens(tokens)
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask, dtype=np.int32)
            if attention_mask.shape != tokens.shape:
                raise ModelError(f"attention_mask shape {attention_mask.shape} != tokens shape {tokens.shape}")
        return tokens.astype(np.int32), attention_mask

    # ---- training contract (backends implement _loss and _gradients; see gpt2_common.train) ----
    def _training_tokens(self, tokens: Any) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] < 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ModelError(f"tokens must be an integer array [B, T] with T >= 2, got shape {tokens.shape}")
        if tokens.shape[1] > self.hparams.n_ctx + 1:  # T - 1 positions are fed to the model
            raise ModelError(f"{tokens.shape[1]} tokens exceed the context of {self.hparams.n_ctx} + 1")
        self.check_tokens(tokens)
        return tokens.astype(np.int32)

    def loss(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]]) -> float:
        """Mean next-token cross-entropy (natural log) over positions 1..T-1 of int ``tokens [B, T]``
        (the model reads positions 0..T-2, so T may be ``n_ctx + 1``), computed in fp32."""
        return self._loss(self._training_tokens(tokens))

    def gradients(self, tokens: Union[np.ndarray, Sequence[Sequence[int]]]) -> Tuple[float, Dict[str, np.ndarray]]:
        """``(loss, {checkpoint name: gradient})``: the gradient of :meth:`loss` with respect to
        every variable, keyed and shaped as in the checkpoint (``model/h0/attn/c_attn/w`` is
        ``[1, n_embd, 3 * n_embd]``). The weights are not changed."""
        return self._gradients(self._training_tokens(tokens))

    def _loss(self, tokens: np.ndarray) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement loss")

    def _gradients(self, tokens: np.ndarray) -> Tuple[float, Dict[str, np.ndarray]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement gradients")

    def generate(self, context: Context, length: int, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Seed = None, batch_size: int = 1,
                 top_p_mode: str = "original", stop_at_endoftext: bool = False,
                 sliding_window: bool = False, callback: Optional[Callable[[int, np.ndarray], Any]] = None,
                 hooks: Optional[Dict[str, Union[NumpyHook, Sequence[NumpyHook]]]] = None,
                 batch_invariant: bool = False) -> np.ndarray:
        """Sample ``length`` new tokens; returns ``np.int64 [B, n]`` (``n < length`` only when every
        row stopped at ``<|endoftext|>``).

        ``context``: one token list (repeated ``batch_size`` times), a list of token lists of any
        lengths (one row each; left-padded), or ``None``/``[]`` for unconditional samples (starts
        from ``<|endoftext|>`` as the original did). ``temperature=0`` is greedy. ``seed`` is an int
        or one int per row (see :mod:`gpt2_common.sampling`). A prompt plus ``length`` over
        ``n_ctx`` is an error unless ``sliding_window``. ``hooks`` (as :meth:`run_with_hooks`) run in
        the prompt's forward and in every decoding step (there an activation covers the step's one
        position per row: ``T = 1``), e.g. a steering vector added to the residual stream.

        ``batch_invariant`` (one prompt, no hooks): decode through :meth:`decode_rows`, the
        batch-invariant step ``gpt2_serve`` runs, so the tokens are the server's for the same
        prompt, seed and settings, bit for bit. Off by default: a one-row step is a matrix-vector
        product, the invariant one a product of at least 4 rows, which costs about twice as much
        per token on a CPU at 124M (and its logits differ from the plain step's in the last bits).
        """
        contexts = self._contexts(context, batch_size)
        validate_args(length, temperature, top_k, top_p, len(contexts), top_p_mode)
        longest = max(len(c) for c in contexts)
        # the last new token is never fed back, so prompt + length may reach n_ctx + 1
        if not sliding_window and longest + length - 1 > self.hparams.n_ctx:
            raise ModelError(
                f"prompt of {longest} tokens + length {length} exceeds the model's context of "
                f"{self.hparams.n_ctx} tokens (shorten them, or use a sliding window)")
        tokens, mask = pad_left(contexts)
        if tokens.shape[1] > self.hparams.n_ctx:  # sliding window: keep the prompt's end
            tokens, mask = tokens[:, -self.hparams.n_ctx:], mask[:, -self.hparams.n_ctx:]
        sampler = Sampler(len(contexts), seed, temperature, top_k, top_p, top_p_mode)
        stop = EOT_TOKEN if stop_at_endoftext else None
        if stop is not None and stop >= self.hparams.n_vocab:
            stop = self.hparams.n_vocab - 1
        model_hooks = self._model_hooks(hooks)
        prefill, decode = self._prefill, self._decode
        if batch_invariant:  # the server's step
            if model_hooks is not None or len(contexts) != 1:
                raise ModelError("batch_invariant decoding takes one prompt and no hooks")
            decode = self._one_row_decode
        if model_hooks is not None:
            prefill = functools.partial(self._prefill, hooks=model_hooks)
            decode = functools.partial(self._decode, hooks=model_hooks)
        return decode_loop(prefill, decode, tokens, mask, length, sampler,
                           self.hparams.n_ctx, stop, sliding_window, callback)

    def _contexts(self, context: Context, batch_size: int) -> List[List[int]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise SamplingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        start = min(EOT_TOKEN, self.hparams.n_vocab - 1)
        if context is None or (not isinstance(context, np.ndarray) and len(context) == 0):
            return [[start] for _ in range(batch_size)]
        arr = context if isinstance(context, np.ndarray) else None
        if arr is not None and arr.ndim == 1 or (arr is None and np.ndim(context[0]) == 0):
            rows = [list(map(int, context))] * batch_size
        else:
            rows = [list(map(int, c)) for c in context]
            if any(len(r) == 0 for r in rows):
                rows = [r if r else [start] for r in rows]
        for r in rows:
            self.check_tokens(np.asarray(r), "context")
        return rows


def sample_sequence(model: GPT2Model, *, length: int, start_token: Optional[int] = None,
                    batch_size: Optional[int] = None, context: Context = None, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: Seed = None, **options: Any) -> np.ndarray:
    """The original release's ``sample_sequence`` on a loaded model; returns context + new tokens.

    Exactly one of ``start_token`` (every row starts from it, ``batch_size`` rows) and ``context``
    (one token list, repeated ``batch_size`` times, or ``[B, T]`` rows) is given, as in the original.
    Unlike it: ``temperature=0`` is greedy, ``seed`` makes the draw reproducible (and identical across
    backends), and ``options`` pass on to :meth:`GPT2Model.generate` (``top_p_mode``,
    ``stop_at_endoftext``, ``sliding_window``, ``callback``). Prompts of different lengths come back
    left-padded with ``<|endoftext|>``: the result is ``np.int64 [B, T_max + n]``.
    """
    if (start_token is None) == (context is None):
        raise ModelError("specify exactly one of start_token and context")
    if start_token is not None:
        contexts: List[List[int]] = [[int(start_token)]] * (batch_size or 1)
    else:
        contexts = model._contexts(context, batch_size or 1)
        if batch_size is not None and len(contexts) != batch_size:
            raise ModelError(f"context has {len(contexts)} rows but batch_size is {batch_size}")
    new = model.generate(contexts, length, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed, **options)
    prompt, mask = pad_left(contexts)
    prompt[mask == 0] = EOT_TOKEN
    return np.concatenate([prompt.astype(np.int64), new], axis=1)
