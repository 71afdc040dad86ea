"""Scoring a ``.jsonl`` corpus at scale: batched, sharded over ``torchrun`` ranks, resumable (issue 14).

:func:`score_corpus` scores every document of a ``.jsonl`` file with :func:`.score.score_many`
(``batch_docs`` documents at a time; their windows are sorted by length and windows of equal length
share a forward pass, so every number is exactly what scoring the document alone gives) and yields
one JSON-ready dict per document, in input order -- the lines ``gpt2_score --json`` prints.

With an output file (:func:`score_to_file`) the work is split and can be resumed:

* **Sharding.** Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ``i``-th document goes to rank
  ``i % WORLD_SIZE``. Each rank appends its results to its own part file ``OUTPUT.part<rank>``,
  one JSON line per document, flushed after every batch of documents.
* **Merge.** After a ``torch.distributed`` barrier (gloo), rank 0 alone writes ``OUTPUT``: every
  document's line in input order, written to a temporary file and renamed over ``OUTPUT``
  (atomic), then the part files are removed. Nothing half-written ever carries the final name.
* **Resume.** A re-run first reads ``OUTPUT`` (if any) and every ``OUTPUT.part*``: documents whose
  line number is recorded there are skipped (a part's last line cut short by a kill is ignored and
  trimmed), so an interrupted run loses at most the batch in flight. The world size may change
  between runs.

Only the standard library and NumPy are imported here; ``torch.distributed`` only under a launcher.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..safeio import open_nofollow
from .data import iter_jsonl
from .score import ResearchError, score_many

#: Documents read, tokenized and scored together (their windows sorted by length).
BATCH_DOCS = 64
#: How long a rank waits at the final barrier for the others (seconds).
BARRIER_TIMEOUT_S = 6 * 3600


def dist_env() -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (``torchrun`` sets
    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``); ``(0, 1, 0)`` without one."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ResearchError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


def plan(path: str, limit: Optional[int] = None) -> List[int]:
    """The line numbers of the documents of a ``.jsonl`` file (its first ``limit``), every line
    checked (valid JSON with a non-empty string ``text``) before anything is scored."""
    lines = []
    for number, record in iter_jsonl(path, limit):
        if not record["text"]:
            raise ResearchError(f"{path}:{number}: empty text: nothing to score")
        lines.append(number)
    if not lines:
        raise ResearchError(f"{path}: no documents")
    return lines


def score_corpus(model: Any, path: str, lines: Optional[Set[int]] = None, limit: Optional[int] = None,
                 batch_docs: int = BATCH_DOCS, stride: Optional[int] = None, prepend_eot: bool = True,
                 max_tokens: Optional[int] = None, pad: bool = False,
                 on_batch: Optional[Callable[[int, int], Any]] = None) -> Iterator[Dict[str, Any]]:
    """Yield ``{"line", "id" (if the record has one), **ScoreResult.to_dict(encoder)}`` for each
    document of ``path`` (only those whose line number is in ``lines``, when given), in input order.

    ``batch_docs`` documents at a time go through one :func:`score_many` call (windows sorted by
    length, equal lengths batched, no padding: the same numbers as one document at a time; with
    ``pad=True`` windows of different lengths are padded into one forward pass too -- faster for many
    short documents, the numbers then differ from one at a time by float noise, ~1e-6).
    ``on_batch(documents, tokens)`` is called after each batch (for a progress bar).
    """
    enc = model.encoder
    batch: List[Tuple[int, Dict[str, Any]]] = []

    def flush() -> Iterator[Dict[str, Any]]:
        tokens = [enc.encode(r["text"]) for _, r in batch]
        for (number, _), toks in zip(batch, tokens):
            if len(toks) < (1 if prepend_eot else 2):
                raise ResearchError(f"{path}:{number}: only one token to score (without <|endoftext|> "
                                    "the first token is context only)")
        results = score_many(model, tokens, stride=stride, prepend_eot=prepend_eot, max_tokens=max_tokens,
                             pad=pad)
        for (number, record), r in zip(batch, results):
            out: Dict[str, Any] = {"line": number}
            if "id" in record:
                out["id"] = record["id"]
            out.update(r.to_dict(enc))
            yield out
        if on_batch is not None:
            on_batch(len(batch), sum(r.n_tokens for r in results))
        batch.clear()

    for number, record in iter_jsonl(path, limit):
        if lines is None or number in lines:
            batch.append((number, record))
            if len(batch) >= batch_docs:
                yield from flush()
    if batch:
        yield from flush()


def part_path(output: str, rank: int) -> str:
    """Rank ``rank``'s part file of ``output``."""
    return f"{output}.part{rank}"


def _records(path: str, trim: bool = False) -> Iterator[Tuple[int, int, int]]:
    """``(line, offset, length)`` of each complete JSON line of a results file; a last line cut
    short (no newline, or not JSON) is skipped and, with ``trim``, cut off the file."""
    good = 0
    with open_nofollow(path, "rb") as f:
        for raw in iter(f.readline, b""):
            try:
                line = json.loads(raw)["line"] if raw.endswith(b"\n") else None
            except (ValueError, KeyError, TypeError):
                line = None
            if line is None:
                break
            yield int(line), good, len(raw)
            good += len(raw)
    if trim and os.path.getsize(path) != good:
        with open_nofollow(path, "r+b") as f:
            f.truncate(good)


def done_lines(output: str) -> Set[int]:
    """Line numbers already scored: recorded in ``output`` or any of its part files."""
    done: Set[int] = set()
    for p in [output] * os.path.isfile(output) + sorted(glob.glob(glob.escape(output) + ".part*")):
        done.update(line for line, _, _ in _records(p))
    return done


def merge(output: str, lines: List[int]) -> None:
    """Write ``output``: the result line of each of ``lines``, in that order, gathered from
    ``output`` and its part files (atomically: a temporary file renamed over ``output``); then
    remove the part files. ResearchError if a line has no result."""
    parts = sorted(glob.glob(glob.escape(output) + ".part*"))
    where: Dict[int, Tuple[str, int, int]] = {}
    for p in [output] * os.path.isfile(output) + parts:
        for line, offset, length in _records(p):
            where.setdefault(line, (p, offset, length))
    missing = [n for n in lines if n not in where]
    if missing:
        raise ResearchError(f"{output}: no result for {len(missing)} document(s) (first: line {missing[0]}); "
                            "run again to score them")
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(output) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(output)))
    handles: Dict[str, Any] = {}
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary new file, not mkstemp's 0600
        with os.fdopen(fd, "wb") as out:
            for n in lines:
                p, offset, length = where[n]
                f = handles.get(p) or handles.setdefault(p, open_nofollow(p, "rb"))
                f.seek(offset)
                out.write(f.read(length))
        for f in handles.values():
            f.close()
        os.replace(tmp, output)
    except BaseException:
        for f in handles.values():
            f.close()
        os.unlink(tmp)
        raise
    for p in parts:
        os.unlink(p)


class _Progress:
    """A tqdm bar in documents/s with tokens/s alongside (on stderr)."""

    def __init__(self, total: int, desc: str, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="doc", desc=desc, disable=disable, dynamic_ncols=True)
        self.tokens, self.start = 0, time.perf_counter()

    def __call__(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
        self.bar.update(docs)

    def close(self) -> None:
        self.bar.close()


def score_to_file(load: Callable[[int], Any], path: str, output: str, limit: Optional[int] = None,
                  batch_docs: int = BATCH_DOCS, progress: bool = True, **score_kw: Any) -> Dict[str, int]:
    """Score the ``.jsonl`` file ``path`` into ``output`` (JSON lines, input order), sharded over
    the ``torchrun`` ranks and resuming what earlier runs recorded (see the module docstring).

    ``load(local_rank)`` returns the model (called only if this rank has documents left).
    ``score_kw``: ``stride``, ``prepend_eot``, ``max_tokens``, ``pad`` for :func:`score_many`. Returns
    ``{"documents", "resumed", "scored"}`` for this rank (``documents``: of the whole file).
    """
    rank, world, local_rank = dist_env()
    lines = plan(path, limit)
    done = done_lines(output)
    mine = {n for i, n in enumerate(lines) if i % world == rank and n not in done}
    group = _init_group(world)
    try:
        if mine:
            model = load(local_rank)
            part = part_path(output, rank)
            if os.path.exists(part):
                for _ in _records(part, trim=True):
                    pass
            bar = _Progress(len(mine), f"rank {rank}/{world}" if world > 1 else "scoring",
                            disable=not progress or rank != 0)
            try:
                with open_nofollow(part, "a", encoding="utf-8") as f:
                    def write_batch(docs: int, tokens: int) -> None:
                        f.flush()
                        bar(docs, tokens)

                    for out in score_corpus(model, path, mine, limit, batch_docs, on_batch=write_batch, **score_kw):
                        f.write(json.dumps(out, ensure_ascii=False) + "\n")
            finally:
                bar.close()
        if group is not None:
            group.barrier()
        if rank == 0:
            merge(output, lines)
    finally:
        if group is not None:
            group.destroy_process_group()
    return {"documents": len(lines), "resumed": len(done & set(lines)), "scored": len(mine)}


def _init_group(world: int) -> Any:
    """``torch.distributed`` joined with the gloo backend (from the launcher's environment) when
    ``world > 1``; else None."""
    if world <= 1:
        return None
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=BARRIER_TIMEOUT_S))
    return dist
