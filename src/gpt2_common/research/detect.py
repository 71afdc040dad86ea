"""Detection of GPT-2 text (the gpt-2-output-dataset study; labels: real/webtext = 0,
generated = 1):

* :func:`logprob_detection` -- the zero-shot log-probability method: a document's score is its mean
  token log-probability (over its first ``max_tokens`` tokens); the threshold (and which side is
  "generated") is chosen to maximise accuracy on the validation split and applied to the test split.
* :func:`tfidf_baseline` -- the study's ``baseline.py``: TF-IDF over unigrams and bigrams
  (``min_df=5``, ``max_features=2**21``) + logistic regression, ``C`` searched over ``2**k`` for
  ``k`` in -6..6 on the validation split. Needs scikit-learn (the ``detect`` extra), imported only
  there.

Accuracies are percentages (0-100), as in the study's ``baseline.py``.

User errors raise :class:`~gpt2_common.research.score.ResearchError` with a one-line message.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .data import labelled, require_both_classes
from .score import ResearchError, score_documents

TFIDF_C_GRID = tuple(2.0**k for k in range(-6, 7))  # 1/64 .. 64


def mean_logprobs(model: Any, texts: Sequence[str], max_tokens: Optional[int] = 256,
                  stride: Optional[int] = None, prepend_eot: bool = True,
                  batch_docs: int = 64) -> np.ndarray:
    """Each text's mean token log-probability over its first ``max_tokens`` tokens (``None``: all).

    Texts are encoded with ``model.encoder`` and scored in batches of ``batch_docs`` documents
    (windows right-padded into shared forward passes). An empty text (no tokens) scores NaN.
    """
    out = np.full(len(texts), np.nan, dtype=np.float64)
    for i, r in score_documents(model, texts, max_tokens, stride, prepend_eot, batch_docs):
        out[i] = r.mean_logprob
    return out


def threshold_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float,
                       direction: str = "higher") -> float:
    """Accuracy (percent) of predicting "generated" (1) for ``scores > threshold`` (``direction``
    ``"higher"``) or ``scores < threshold`` (``"lower"``)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    if len(scores) == 0:
        return float("nan")
    pred = scores > threshold if direction == "higher" else scores < threshold
    return float((pred.astype(np.int64) == labels).mean() * 100.0)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> Tuple[float, str, float]:
    """The threshold and direction maximising accuracy on ``(scores, labels)``.

    Candidates are the midpoints between consecutive distinct scores (and one unit beyond either
    end); both directions are tried ("higher": generated above the threshold; "lower": below).
    Ties go to the smaller threshold and to "higher". Returns ``(threshold, direction, accuracy %)``.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    if len(scores) == 0 or not np.isfinite(scores).all():
        raise ResearchError("need at least one finite score to choose a threshold")
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    # For each candidate t: how many of each class lie above it (scores sorted ascending).
    s = np.sort(scores)
    above = len(s) - np.searchsorted(s, cands, side="right")
    fake_sorted = np.sort(scores[labels == 1])
    fake_above = len(fake_sorted) - np.searchsorted(fake_sorted, cands, side="right")
    real_above = above - fake_above
    n_fake, n_real = len(fake_sorted), len(s) - len(fake_sorted)
    correct_higher = fake_above + (n_real - real_above)
    correct_lower = (n_fake - fake_above) + real_above
    best = (-1, 0.0, "higher")
    for direction, correct in (("higher", correct_higher), ("lower", correct_lower)):
        k = int(np.argmax(correct))
        if correct[k] > best[0]:
            best = (int(correct[k]), float(cands[k]), direction)
    return best[1], best[2], best[0] * 100.0 / len(s)


def logprob_detection(model: Any, real_valid: Sequence[str], fake_valid: Sequence[str],
                      real_test: Sequence[str], fake_test: Sequence[str], source: str = "",
                      max_tokens: Optional[int] = 256, stride: Optional[int] = None,
                      prepend_eot: bool = True) -> Dict[str, Any]:
    """The zero-shot log-probability detector: threshold on validation, accuracy on test.

    Documents with no tokens are left out (``n_valid``/``n_test`` count the documents used).
    Returns ``{"source", "method": "logprob", "n_valid", "n_test", "threshold", "direction",
    "max_tokens", "valid_accuracy", "test_accuracy"}`` (accuracies in percent; ``direction``
    ``"higher"`` means documents scoring above ``threshold`` are classified as generated).
    """
    def scored(real: Sequence[str], fake: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        texts, labels = labelled(real, fake)
        scores = mean_logprobs(model, texts, max_tokens=max_tokens, stride=stride, prepend_eot=prepend_eot)
        ok = np.isfinite(scores)
        return scores[ok], labels[ok]

    v_scores, v_labels = scored(real_valid, fake_valid)
    t_scores, t_labels = scored(real_test, fake_test)
    require_both_classes("valid", v_labels)  # documents with no tokens are left out first
    require_both_classes("test", t_labels)
    threshold, direction, valid_acc = best_threshold(v_scores, v_labels)
    return {"source": source, "method": "logprob", "n_valid": int(len(v_scores)), "n_test": int(len(t_scores)),
            "threshold": threshold, "direction": direction, "max_tokens": max_tokens,
            "valid_accuracy": valid_acc,
            "test_accuracy": threshold_accuracy(t_scores, t_labels, threshold, direction)}


# The TF-IDF + logistic regression baseline (scikit-learn, the `detect` extra)

def require_sklearn(what: str) -> None:
    """:class:`ResearchError` unless scikit-learn imports (``what`` needs it); the CLI asks before
    it reads data or loads a model."""
    try:
        import sklearn.linear_model  # noqa: F401
    except ImportError:
        raise ResearchError(f"{what} needs scikit-learn: pip install 'gpt2-toolkit[detect]'") from None


def _sklearn() -> Tuple[Any, Any]:
    require_sklearn("the tfidf baseline")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    return TfidfVectorizer, LogisticRegression


def tfidf_baseline(train: Tuple[Sequence[str], Sequence[str]], valid: Tuple[Sequence[str], Sequence[str]],
                   test: Tuple[Sequence[str], Sequence[str]], source: str = "",
                   min_df: int = 5, max_features: int = 2**21,
                   c_grid: Sequence[float] = TFIDF_C_GRID) -> Dict[str, Any]:
    """The study's ``baseline.py``: TF-IDF (1-2 grams) + logistic regression.

    Each split is ``(real texts, generated texts)``. The vectoriser is fit on the training texts;
    ``C`` is chosen by validation accuracy (first best wins, like ``GridSearchCV`` with a predefined
    split and ``refit=False``); the model trained with it on the training split is scored on
    validation and test. Returns exactly ``{"source", "n_train", "valid_accuracy",
    "test_accuracy"}`` (accuracies in percent).
    """
    TfidfVectorizer, LogisticRegression = _sklearn()
    train_texts, train_labels = labelled(*train)
    valid_texts, valid_labels = labelled(*valid)
    test_texts, test_labels = labelled(*test)
    for name, labels in (("train", train_labels), ("valid", valid_labels), ("test", test_labels)):
        require_both_classes(name, labels)
    vect = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, max_features=max_features)
    try:
        train_x = vect.fit_transform(train_texts)
    except ValueError as e:  # e.g. no term reaches min_df
        raise ResearchError(f"TF-IDF on the training split failed: {str(e).splitlines()[0]}") from None
    valid_x, test_x = vect.transform(valid_texts), vect.transform(test_texts)
    best: Tuple[float, Any] = (-1.0, None)
    for C in c_grid:
        clf = LogisticRegression(C=C, solver="liblinear").fit(train_x, train_labels)
        acc = clf.score(valid_x, valid_labels)
        if acc > best[0]:
            best = (acc, clf)
    clf = best[1]
    return {"source": source, "n_train": int(len(train_labels)),
            "valid_accuracy": float(clf.score(valid_x, valid_labels) * 100.0),
            "test_accuracy": float(clf.score(test_x, test_labels) * 100.0)}
