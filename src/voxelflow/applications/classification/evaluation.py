"""Scoring a classification (or image-level regression) inference run against the table.

:func:`evaluate_predictions` joins ``predictions.csv`` (``subject``, ``prediction``,
``prob_<class>`` ...) with the reference column of the dataset rows and writes into ``out_dir``:
``per_subject.csv``, ``summary.csv`` (metric, value), for classes ``confusion_matrix.csv`` and
``confusion_matrix.png``, for values ``scatter.png``. Class names are taken from the
``prob_<class>`` columns, in the order inference wrote them (the training order).

Example:
    >>> summary = evaluate_predictions(run / "predictions/predictions.csv", rows,
    ...                                out_dir=run / "evaluation", column="sex", kind="class")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.applications.classification.task import target_cell
from voxelflow.errors import DataError
from voxelflow.io.table import read_prediction_table

PROBABILITY_PREFIX = "prob_"


def _references(
    predicted: Sequence[dict[str, str]], rows: Sequence[Any], column: str, *, source: Path
) -> list[str]:
    """Reference cell of every predicted subject (one error lists all that have none)."""
    by_name = {row.name: target_cell(row, column) for row in rows}
    references = [by_name.get(item["subject"]) for item in predicted]
    missing = [item["subject"] for item, ref in zip(predicted, references) if ref is None]
    if missing:
        raise DataError(
            f"{str(source)!r}: expected a reference in column {column!r} of the dataset table for "
            f"every predicted subject, got none for {len(missing)}: {missing}"
        )
    return [str(ref) for ref in references]


def evaluate_predictions(
    predictions: Path, rows: Sequence[Any], *, out_dir: Path, column: str, kind: str
) -> dict[str, float]:
    """Score a prediction table; writes CSV files and a plot into ``out_dir``.

    Args:
        predictions: the ``predictions.csv`` written by inference.
        rows: dataset rows holding the reference column.
        out_dir: output folder (created).
        column: the reference column (``task.target_column``).
        kind: ``"class"`` or ``"value"``.

    Returns:
        The summary (also in ``summary.csv``).

    Raises:
        DataError: a subject without reference, a reference class not seen in training (named
            with its subject), or a prediction that is not a number (values).
    """
    predictions = Path(predictions)
    predicted = read_prediction_table(predictions, columns=["prediction"], require_rows=True)
    header = list(predicted[0])
    references = _references(predicted, rows, column, source=predictions)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "class":
        summary = _evaluate_classes(header, predicted, references, out_dir, column=column)
    else:
        summary = _evaluate_values(predicted, references, out_dir, column=column)
    _write_rows(out_dir / "summary.csv", [{"metric": k, "value": v} for k, v in summary.items()])
    return summary


def _class_indices(
    names: Sequence[str], subjects: Sequence[str], classes: Sequence[str], *, what: str, column: str
) -> np.ndarray:
    unknown = [(s, n) for s, n in zip(subjects, names) if n not in classes]
    if unknown:
        subject, name = unknown[0]
        raise DataError(
            f"subject {subject!r}: expected a {what} class of column {column!r} among the training "
            f"classes {list(classes)}, got {name!r} ({len(unknown)} subject(s) with unseen classes: "
            f"{[s for s, _ in unknown]})"
        )
    return np.array([list(classes).index(n) for n in names], dtype=np.int64)


def _evaluate_classes(
    header: Sequence[str],
    predicted: Sequence[dict[str, str]],
    references: Sequence[str],
    out_dir: Path,
    *,
    column: str,
) -> dict[str, float]:
    from voxelflow.metrics.classification import confusion_matrix

    classes = [c[len(PROBABILITY_PREFIX) :] for c in header if c.startswith(PROBABILITY_PREFIX)]
    if len(classes) < 2:
        raise DataError(
            f"expected prob_<class> columns for at least 2 classes in the prediction table, got {classes}"
        )
    subjects = [item["subject"] for item in predicted]
    ref = _class_indices(references, subjects, classes, what="reference", column=column)
    names = [item["prediction"] for item in predicted]
    pred = _class_indices(names, subjects, classes, what="predicted", column=column)
    probabilities = np.array(
        [[float(item[PROBABILITY_PREFIX + c]) for c in classes] for item in predicted]
    )
    summary = class_summary(pred, ref, probabilities, classes)
    _write_rows(
        out_dir / "per_subject.csv",
        [
            {
                "subject": s,
                "reference": classes[r],
                "prediction": classes[p],
                "correct": int(r == p),
                **{PROBABILITY_PREFIX + c: f"{q:.6g}" for c, q in zip(classes, probs)},
            }
            for s, r, p, probs in zip(subjects, ref, pred, probabilities)
        ],
    )
    matrix = confusion_matrix(pred, ref, num_classes=len(classes))
    _write_rows(
        out_dir / "confusion_matrix.csv",
        [{"reference": n, **dict(zip(classes, map(int, row)))} for n, row in zip(classes, matrix)],
    )
    title = f"{column}: accuracy {summary['accuracy']:.3f}"
    plot_confusion_matrix(matrix, classes, out_dir / "confusion_matrix.png", title=title)
    return summary


def class_summary(
    pred: np.ndarray, ref: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC, ECE (10 bins) and per-class precision/recall/F1.

    Shape:
        pred, ref ``(N,)`` class indices; probabilities ``(N, K)``.
    """
    from voxelflow.metrics.classification import (
        accuracy,
        balanced_accuracy,
        expected_calibration_error,
        precision_recall_f1,
    )

    summary = {
        "num_subjects": float(len(ref)),
        "accuracy": accuracy(pred, ref),
        "balanced_accuracy": balanced_accuracy(pred, ref, num_classes=len(classes)),
        "roc_auc": macro_roc_auc(probabilities, ref),
        "ece": expected_calibration_error(probabilities, ref, num_bins=10),
    }
    for metric, values in precision_recall_f1(pred, ref, num_classes=len(classes)).items():
        summary.update({f"{metric}/{name}": float(v) for name, v in zip(classes, values)})
    return summary


def macro_roc_auc(probabilities: np.ndarray, reference: np.ndarray) -> float:
    """ROC AUC of a binary problem (class 1's probability), or the one-vs-rest macro mean over
    the classes that have both positive and negative references (``nan`` if none has).

    Shape:
        probabilities ``(N, K)``, reference ``(N,)`` class indices.
    """
    from voxelflow.metrics.classification import roc_auc

    if probabilities.shape[1] == 2:
        return roc_auc(probabilities[:, 1], (reference == 1).astype(np.int64))
    scores = [
        roc_auc(probabilities[:, c], (reference == c).astype(np.int64))
        for c in range(probabilities.shape[1])
    ]
    finite = [s for s in scores if not math.isnan(s)]
    return float(np.mean(finite)) if finite else float("nan")


def _evaluate_values(
    predicted: Sequence[dict[str, str]], references: Sequence[str], out_dir: Path, *, column: str
) -> dict[str, float]:
    from voxelflow.metrics.regression import (
        mean_absolute_error,
        mean_error,
        root_mean_squared_error,
    )

    subjects = [item["subject"] for item in predicted]
    pred = _numbers([item["prediction"] for item in predicted], subjects, what="prediction")
    ref = _numbers(references, subjects, what=f"reference (column {column!r})")
    summary = {
        "num_subjects": float(len(ref)),
        "mae": mean_absolute_error(pred, ref),
        "rmse": root_mean_squared_error(pred, ref),
        "mean_error": mean_error(pred, ref),
        "pearson_r": pearson_r(pred, ref),
    }
    _write_rows(
        out_dir / "per_subject.csv",
        [
            {"subject": s, "reference": r, "prediction": p, "error": p - r}
            for s, r, p in zip(subjects, ref, pred)
        ],
    )
    plot_scatter(
        ref,
        pred,
        out_dir / "scatter.png",
        title=f"{column}: MAE {summary['mae']:.3g}, r {summary['pearson_r']:.3f}",
    )
    return summary


def _numbers(cells: Sequence[str], subjects: Sequence[str], *, what: str) -> np.ndarray:
    values = []
    for subject, cell in zip(subjects, cells):
        try:
            values.append(float(cell))
        except ValueError:
            raise DataError(
                f"subject {subject!r}: expected a number as {what}, got {cell!r}"
            ) from None
    return np.asarray(values, dtype=np.float64)


def pearson_r(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation; ``nan`` for fewer than 2 subjects or a constant series."""
    if pred.size < 2 or np.std(pred) == 0 or np.std(ref) == 0:
        return float("nan")
    return float(np.corrcoef(pred, ref)[0, 1])


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_confusion_matrix(
    matrix: np.ndarray, classes: Sequence[str], path: Path, *, title: str
) -> None:
    """Counts as a heat map (rows: reference, columns: prediction), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 1.8))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
        )
    axis.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("prediction")
    axis.set_ylabel("reference")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_scatter(ref: np.ndarray, pred: np.ndarray, path: Path, *, title: str) -> None:
    """Predicted against reference values with the identity line, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    axis.plot([low, high], [low, high], color="grey", linewidth=1)
    axis.scatter(ref, pred, s=12)
    axis.set_xlabel("reference")
    axis.set_ylabel("prediction")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
