"""Continuous batching, backend-neutral: one worker thread owns the model and runs every request.

    scheduler = Scheduler(model, max_batch=16, max_queue=64)
    scheduler.start()
    job = Job(prompt=[464, 2068], max_tokens=20, seed=1, on_event=print)
    scheduler.submit(job)        # events: Token(...), ..., Done(reason)
    scheduler.stop()             # finishes what is running, then returns

Between two decoding steps the worker admits waiting jobs (up to ``max_batch`` rows): each prompt
is prefilled alone (:meth:`GPT2Model.prefill_row`) and its row joins the running batch; a row
leaves as soon as it is done (its ``max_tokens``, ``<|endoftext|>``, a stop text, or the client
gone), so no row waits for the slowest. Each row keeps its own cache, length, sampler and stop
rules; a step feeds every row's last token through :meth:`GPT2Model.decode_rows`, whose logits
for a row do not depend on the other rows. Tokens are chosen by the shared
:class:`~gpt2_common.sampling.Sampler` rule (choice ``i`` of a request with seed ``s`` draws from
``default_rng([s, i])``, row ``i`` of ``generate(seed=s)``), so a request's tokens and
log-probabilities are the same bits alone, batched, streamed or not, and equal ``generate``'s.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np

from ..constants import EOT_TOKEN
from ..sampling import Sampler, row_generators


class QueueFull(RuntimeError):
    """The scheduler's queue holds ``max_queue`` jobs already: try again later."""


class ShuttingDown(RuntimeError):
    """The scheduler is stopping and takes no new jobs."""


@dataclass
class Token:
    """One new token of a job: its id, log-probability (natural log, the model's distribution
    before temperature and filtering) and, when asked, the ``top`` alternatives ``[(id, logprob)]``."""
    token: int
    logprob: float
    top: Optional[List[Tuple[int, float]]] = None


@dataclass
class PromptScores:
    """The prompt's own log-probabilities (for ``echo`` with ``logprobs``): ``logprobs[i]`` and
    ``top[i]`` are those of prompt token ``i + 1`` given the tokens before it."""
    logprobs: List[float]
    top: Optional[List[List[Tuple[int, float]]]] = None


@dataclass
class Done:
    """A job ended: ``reason`` is ``"length"`` (max_tokens or the context), ``"stop"``
    (``<|endoftext|>`` or a stop text), ``"cancelled"`` (the client went away) or ``"error"``
    (``message`` says why)."""
    reason: str
    message: str = ""


@dataclass
class Job:
    """One sequence to generate (one choice of a request).

    ``prompt``: token ids (1..n_ctx). ``max_tokens``: new tokens at most (0: only ``score_prompt``).
    ``seed`` and ``row``: the sampler draws from ``default_rng([seed, row])``. ``logprobs``: how many
    top alternatives to report per token (None: none). ``score_prompt``: first send the prompt's
    :class:`PromptScores`. ``stop``: texts that end the job once the generated text contains one
    (checked with ``decode``). ``on_event(event)`` is called from the worker thread with each
    :class:`Token`, :class:`PromptScores` and finally one :class:`Done`; it must not block.
    """
    prompt: Sequence[int]
    max_tokens: int
    on_event: Callable[[Any], None]
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    row: int = 0
    logprobs: Optional[int] = None
    score_prompt: bool = False
    stop: Sequence[str] = ()
    stop_at_endoftext: bool = True
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Ask the worker to drop this job (its row is freed before the next step)."""
        self.cancelled.set()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of float logits ``[..., V]`` (numpy, deterministic)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def top_logprobs(lp: np.ndarray, n: int) -> List[Tuple[int, float]]:
    """The ``n`` most likely tokens of log-probabilities ``lp [V]``, best first (ties: lower id)."""
    n = min(n, lp.shape[-1])
    part = np.argpartition(-lp, n - 1)[:n]
    idx = sorted(part.tolist(), key=lambda i: (-lp[i], i))
    return [(int(i), float(lp[i])) for i in idx]


class _Row:
    """A running job: its cache, tokens so far and sampler."""

    def __init__(self, job: Job, cache: Any, sampler: Sampler) -> None:
        self.job, self.cache, self.sampler = job, cache, sampler
        self.tokens: List[int] = []
        self.length = len(job.prompt)  # positions in the cache once the last token is fed


def job_sampler(job: Job) -> Sampler:
    """One-row :class:`Sampler` drawing as row ``job.row`` of ``generate(seed=job.seed)``."""
    sampler = Sampler(1, 0, job.temperature, job.top_k, job.top_p)
    sampler.rngs = [row_generators(job.row + 1, job.seed)[job.row]]
    return sampler


class Scheduler:
    """Runs :class:`Job` s on ``model`` (a :class:`~gpt2_common.interface.GPT2Model`) in one worker
    thread with continuous batching (see the module docstring). ``max_batch``: rows decoded
    together; ``max_queue``: jobs waiting for a row before :meth:`submit` raises :class:`QueueFull`.
    ``metrics``: an object with ``observe_step(rows, seconds)`` and ``set_queue(n)`` (or None)."""

    def __init__(self, model: Any, max_batch: int = 16, max_queue: int = 64, metrics: Any = None,
                 decode: Optional[Callable[[List[int]], str]] = None) -> None:
        self.model, self.max_batch, self.max_queue, self.metrics = model, int(max_batch), int(max_queue), metrics
        self._decode_text = decode
        self._queue: Deque[Job] = collections.deque()
        self._rows: List[_Row] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.n_ctx, self.n_vocab = int(model.hparams.n_ctx), int(model.hparams.n_vocab)
        self.eot = min(EOT_TOKEN, self.n_vocab - 1)

    # ---- the handlers' side ----
    def start(self) -> "Scheduler":
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._loop, name="gpt2-scheduler", daemon=True)
        self._thread.start()
        return self

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` (all or none): :class:`QueueFull` if they do not fit the queue,
        :class:`ShuttingDown` once :meth:`stop` was called."""
        jobs = list(jobs)
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._queue)} jobs are waiting (max_queue={self.max_queue})")
            self._queue.extend(jobs)
            self._set_queue()
            self._cv.notify()

    @property
    def queued(self) -> int:
        """Jobs waiting for a row."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Rows being decoded."""
        return len(self._rows)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Take no new jobs, finish the queued and running ones, then end the worker."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the worker ----
    def _set_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue(len(self._queue))

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._rows and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self._queue and not self._rows:
                    return
                new = []
                while self._queue and len(self._rows) + len(new) < self.max_batch:
                    new.append(self._queue.popleft())
                self._set_queue()
            for job in new:
                self._guard(job, self._admit, job)
            self._rows = [r for r in self._rows if not self._finish_if_cancelled(r)]
            if self._rows:
                self._step()

    def _done(self, job: Job, done: Done) -> None:
        """Send ``job`` its last event (and count it)."""
        if self.metrics is not None:
            self.metrics.observe_done(done.reason)
        job.on_event(done)

    def _guard(self, job: Job, fn: Callable, *args: Any) -> Any:
        """Run ``fn``; a failure ends ``job`` with an error instead of the worker."""
        try:
            return fn(*args)
        except Exception as e:  # a bug or a model error: this job fails, the server goes on
            self._rows = [r for r in self._rows if r.job is not job]
            self._done(job, Done("error", f"{type(e).__name__}: {e}"))
            return None

    def _finish_if_cancelled(self, row: _Row) -> bool:
        if row.job.cancelled.is_set():
            self._done(row.job, Done("cancelled"))
            return True
        return False

    def _admit(self, job: Job) -> None:
        """Prefill ``job``'s prompt alone and add its row (or finish it at once)."""
        if job.cancelled.is_set():
            self._done(job, Done("cancelled"))
            return
        if job.score_prompt:
            job.on_event(self._prompt_scores(job))
        if job.max_tokens == 0:
            self._done(job, Done("length"))
            return
        logits, cache = self.model.prefill_row(job.prompt)
        row = _Row(job, cache, job_sampler(job))
        if not self._emit(row, logits):
            self._rows.append(row)

    def _prompt_scores(self, job: Job) -> PromptScores:
        from ..research.score import score_many

        if len(job.prompt) < 2:
            return PromptScores([], [] if job.logprobs else None)
        r = score_many(self.model, [list(job.prompt)], prepend_eot=False, top_k=job.logprobs or 0)[0]
        top = None
        if job.logprobs:
            top = [[(int(t), float(lp)) for t, lp in zip(tt, ll)] for tt, ll in zip(r.top_tokens, r.top_logprobs)]
        return PromptScores([float(x) for x in r.logprobs], top)

    def _step(self) -> None:
        """One decoding step of every running row; rows that are done leave."""
        t0 = time.perf_counter()
        rows = self._rows
        try:
            logits, caches = self.model.decode_rows([r.tokens[-1] for r in rows], [r.cache for r in rows])
        except Exception as e:  # every row of the step fails; the worker goes on
            self._rows = []
            for r in rows:
                self._done(r.job, Done("error", f"{type(e).__name__}: {e}"))
            return
        if self.metrics is not None:
            self.metrics.observe_step(len(rows), time.perf_counter() - t0)
        keep = []
        for r, lg, cache in zip(rows, logits, caches):
            r.cache = cache
            r.length += 1
            if self._guard(r.job, self._emit, r, lg) is False:  # None: it failed
                keep.append(r)
        self._rows = keep

    def _emit(self, row: _Row, logits: np.ndarray) -> bool:
        """Sample ``row``'s next token from ``logits [V]`` and send it; True when the row is done."""
        job = row.job
        token = int(row.sampler(logits[None])[0])
        if job.stop_at_endoftext and token == self.eot:
            self._done(job, Done("stop"))
            return True
        lp = log_softmax(logits)
        job.on_event(Token(token, float(lp[token]), top_logprobs(lp, job.logprobs) if job.logprobs else None))
        row.tokens.append(token)
        if job.stop and self._decode_text is not None:
            text = self._decode_text(row.tokens)
            if any(s in text for s in job.stop):
                self._done(job, Done("stop"))
                return True
        if len(row.tokens) >= job.max_tokens or row.length + 1 > self.n_ctx:
            self._done(job, Done("length"))
            return True
        return False
