"""Research tools: score text under GPT-2 and study GPT-2's outputs (issue #6).

* :mod:`.score` -- per-token log-probabilities and ranks (``score_text``, ``score_tokens``,
  ``score_many``, ``score_documents``), sliding windows over long texts, :class:`ResearchError`.
* :mod:`.corpus` -- a ``.jsonl`` corpus scored in batches, sharded over ``torchrun`` ranks,
  resumable (``score_corpus``, ``score_to_file``).
* :mod:`.data` -- text files and the gpt-2-output-dataset's ``.jsonl`` files.
* :mod:`.detect` -- the zero-shot log-probability detector and the TF-IDF baseline.

Usage::

    from gpt2_common import load_model, research

    model = load_model("torch", "models/124M")
    r = research.score_text(model, "The quick brown fox jumps over the lazy dog.")
    r.logprobs, r.ranks            # per token: log p(token | prefix) (natural log), rank (1 = argmax)
    r.total_nll, r.mean_nll, r.perplexity

Every name is re-exported here. No deep-learning framework is imported.
"""
from __future__ import annotations

from .corpus import (BATCH_DOCS, dist_env, done_lines, merge, part_path, plan,  # noqa: F401
                     score_corpus, score_to_file)
from .data import (SPLITS, iter_jsonl, labelled, read_jsonl, read_text, require_both_classes,  # noqa: F401
                   source_name, split_paths)
from .detect import (TFIDF_C_GRID, best_threshold, logprob_detection, mean_logprobs,  # noqa: F401
                     require_sklearn, tfidf_baseline, threshold_accuracy)
from .score import (MAX_BATCH_LOGITS, ResearchError, ScoreResult, check_stride,  # noqa: F401
                    score_documents, score_many, score_text, score_tokens, token_strings, window_plan)

__all__ = ["BATCH_DOCS", "dist_env", "done_lines", "merge", "part_path", "plan", "score_corpus",
           "score_to_file",
           "SPLITS", "iter_jsonl", "labelled", "require_both_classes", "read_jsonl", "read_text",
           "source_name", "split_paths",
           "TFIDF_C_GRID", "best_threshold", "logprob_detection", "mean_logprobs", "require_sklearn",
           "tfidf_baseline",
           "threshold_accuracy", "MAX_BATCH_LOGITS", "ResearchError", "ScoreResult", "check_stride",
           "score_documents", "score_many", "score_text", "score_tokens", "token_strings", "window_plan"]
