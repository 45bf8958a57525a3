"""Classification metrics over subjects: accuracy, balanced accuracy, per-class precision /
recall / F1, confusion matrix, exact ROC AUC, expected calibration error.

Labels are integers ``0..num_classes-1``; scores/probabilities are ``(N,)`` for a binary problem
(probability of class 1) or ``(N, K)``. Undefined ratios (a class never predicted or never
present) are ``nan``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from voxelflow.errors import DataError, ShapeError
from voxelflow.metrics._arrays import to_numpy
from voxelflow.types import ArrayLike


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(values).ravel()
    if array.size and not np.all(np.equal(np.mod(array, 1), 0)):
        raise DataError(f"expected integer class labels for {name}, got non-integer values")
    return array.astype(np.int64)


def confusion_matrix(
    pred: ArrayLike, ref: ArrayLike, *, num_classes: int | None = None
) -> np.ndarray:
    """Counts ``M[i, j]`` of subjects with reference class ``i`` predicted as class ``j``.

    Shape:
        pred, ref: ``(N,)`` integer labels. Returns ``(K, K)``.
    """
    p, r = _labels(pred, "prediction"), _labels(ref, "reference")
    if p.shape != r.shape:
        raise ShapeError(f"expected as many predictions as references, got {p.size} and {r.size}")
    if p.size and min(p.min(), r.min()) < 0:
        raise DataError("expected class labels ≥ 0, got a negative label")
    k = num_classes or int(max(p.max(initial=0), r.max(initial=0)) + 1)
    return np.bincount(r * k + p, minlength=k * k).reshape(k, k)


def accuracy(pred: ArrayLike, ref: ArrayLike) -> float:
    """Fraction of correct predictions (``nan`` for no samples)."""
    p, r = _labels(pred, "prediction"), _labels(ref, "reference")
    return float(np.mean(p == r)) if p.size else float("nan")


def precision_recall_f1(
    pred: ArrayLike, ref: ArrayLike, *, num_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Per-class precision, recall and F1 (arrays of length K; ``nan`` where undefined)."""
    matrix = confusion_matrix(pred, ref, num_classes=num_classes).astype(np.float64)
    tp = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / matrix.sum(axis=0)
        rec = tp / matrix.sum(axis=1)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    f1 = np.where(np.isnan(prec) & np.isnan(rec), np.nan, f1)
    f1 = np.where(np.isnan(prec) ^ np.isnan(rec), 0.0, f1)
    return {"precision": prec, "recall": rec, "f1": f1}


def balanced_accuracy(pred: ArrayLike, ref: ArrayLike, *, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in the reference."""
    recall = precision_recall_f1(pred, ref, num_classes=num_classes)["recall"]
    return float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else float("nan")


def roc_auc(scores: ArrayLike, ref: ArrayLike) -> float:
    """Exact area under the ROC curve of a binary problem (Mann–Whitney U, ties count ½).

    Args:
        scores: ``(N,)`` score of the positive class (higher = more likely positive).
        ref: ``(N,)`` reference labels in {0, 1}.

    Returns:
        AUC in [0, 1]; ``nan`` when only one class is present.
    """
    s = to_numpy(scores).astype(np.float64).ravel()
    r = _labels(ref, "reference")
    if s.shape != r.shape:
        raise ShapeError(f"expected one score per reference label, got {s.size} and {r.size}")
    if np.any((r != 0) & (r != 1)):
        raise DataError("expected binary reference labels in {0, 1} for ROC AUC")
    positives, negatives = int(r.sum()), int(r.size - r.sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[r == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def expected_calibration_error(
    probabilities: ArrayLike, ref: ArrayLike, *, num_bins: int = 15
) -> float:
    """ECE: Σ_bins |B|/N · |accuracy(B) − confidence(B)| over equal-width confidence bins.

    Args:
        probabilities: ``(N, K)`` class probabilities, or ``(N,)`` probability of class 1.
        ref: ``(N,)`` reference labels.
        num_bins: equal-width bins on (0, 1]; a confidence c falls in bin ``(i/n, (i+1)/n]``.
    """
    probs = to_numpy(probabilities).astype(np.float64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], axis=1)
    r = _labels(ref, "reference")
    if probs.shape[0] != r.size:
        raise ShapeError(
            f"expected one probability row per label, got {probs.shape[0]} and {r.size}"
        )
    if r.size == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == r
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
