"""Overlap metrics from the confusion counts of a binary mask pair (2D or 3D).

Every metric is a ratio of the counts TP, FP, FN, TN. A ratio whose denominator is zero is
``nan`` (undefined), never a made-up 0 or 1: e.g. Dice of two empty masks, sensitivity when the
reference is empty, precision when the prediction is empty. Dice and Jaccard are 0 when exactly
one mask is empty. Summaries count the NaNs instead of hiding them (see ``report.summarize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxelflow.metrics._arrays import as_mask, as_spacing, check_pair, safe_ratio
from voxelflow.types import ArrayLike


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a binary prediction against a binary reference.

    Attributes:
        tp: foreground in both. fp: prediction only. fn: reference only. tn: background in both.
        voxel_volume: volume of one voxel in mm³ (area in mm² for 2D).
    """

    tp: int
    fp: int
    fn: int
    tn: int
    voxel_volume: float = 1.0

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN)."""
        return safe_ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def jaccard(self) -> float:
        """TP / (TP + FP + FN) (IoU)."""
        return safe_ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN) (recall, true positive rate)."""
        return safe_ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """TN / (TN + FP) (true negative rate)."""
        return safe_ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        """TP / (TP + FP) (positive predictive value)."""
        return safe_ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        """TN / (TN + FN) (negative predictive value)."""
        return safe_ratio(self.tn, self.tn + self.fn)

    @property
    def accuracy(self) -> float:
        """(TP + TN) / all voxels."""
        return safe_ratio(self.tp + self.tn, self.tp + self.fp + self.fn + self.tn)

    @property
    def false_positive_rate(self) -> float:
        """FP / (FP + TN) = 1 − specificity."""
        return safe_ratio(self.fp, self.fp + self.tn)

    @property
    def informedness(self) -> float:
        """Sensitivity + specificity − 1 (Youden's J)."""
        return self.sensitivity + self.specificity - 1.0

    @property
    def markedness(self) -> float:
        """Precision + NPV − 1."""
        return self.precision + self.npv - 1.0

    @property
    def false_negative_rate(self) -> float:
        """FN / (FN + TP) = 1 − sensitivity (miss rate); ``nan`` when the reference is empty."""
        return safe_ratio(self.fn, self.fn + self.tp)

    @property
    def false_discovery_rate(self) -> float:
        """FP / (FP + TP) = 1 − precision; ``nan`` when the prediction is empty."""
        return safe_ratio(self.fp, self.fp + self.tp)

    @property
    def matthews_correlation(self) -> float:
        """MCC (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)); ``nan`` when a factor is 0.

        Computed in floats: the product of four voxel counts overflows 64-bit integers on large
        images.
        """
        tp, fp, fn, tn = (float(v) for v in (self.tp, self.fp, self.fn, self.tn))
        denominator = np.sqrt(tp + fp) * np.sqrt(tp + fn) * np.sqrt(tn + fp) * np.sqrt(tn + fn)
        return safe_ratio(tp * tn - fp * fn, float(denominator))

    @property
    def volume_ref(self) -> float:
        """Reference volume in mm³ ((TP + FN) × voxel volume)."""
        return (self.tp + self.fn) * self.voxel_volume

    @property
    def volume_pred(self) -> float:
        """Prediction volume in mm³ ((TP + FP) × voxel volume)."""
        return (self.tp + self.fp) * self.voxel_volume

    @property
    def absolute_volume_difference(self) -> float:
        """|V_pred − V_ref| in mm³."""
        return abs(self.volume_pred - self.volume_ref)

    @property
    def relative_volume_difference(self) -> float:
        """(V_pred − V_ref) / V_ref (signed; ``nan`` when the reference is empty)."""
        return safe_ratio(self.volume_pred - self.volume_ref, self.volume_ref)

    def as_dict(self) -> dict[str, float]:
        """Every overlap metric by its column name (see ``docs/metrics.md``)."""
        return {name: _number(getattr(self, attr)) for name, attr in OVERLAP_COLUMNS.items()}


#: column name → ConfusionCounts attribute, in report order.
OVERLAP_COLUMNS = {
    "dice": "dice",
    "jaccard": "jaccard",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "precision": "precision",
    "npv": "npv",
    "accuracy": "accuracy",
    "fpr": "false_positive_rate",
    "informedness": "informedness",
    "markedness": "markedness",
    "fnr": "false_negative_rate",
    "fdr": "false_discovery_rate",
    "mcc": "matthews_correlation",
    "tp": "tp",
    "fp": "fp",
    "fn": "fn",
    "tn": "tn",
    "volume_ref_mm3": "volume_ref",
    "volume_pred_mm3": "volume_pred",
    "abs_volume_diff_mm3": "absolute_volume_difference",
    "rel_volume_diff": "relative_volume_difference",
}


def confusion_counts(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> ConfusionCounts:
    """Count TP, FP, FN, TN of two binary masks.

    Args:
        pred: predicted binary mask (bool or 0/1), numpy array or torch tensor.
        ref: reference binary mask of the same shape.
        spacing: voxel size in mm per axis, used for volumes (``None`` = 1 mm).

    Returns:
        :class:`ConfusionCounts`; its properties are the overlap metrics.

    Raises:
        ShapeError: different shapes or not 2D/3D. DataError: non-binary values.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> confusion_counts(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [1, 0]])).dice
        0.5
    """
    pred_mask, ref_mask = as_mask(pred, name="prediction"), as_mask(ref, name="reference")
    check_pair(pred_mask, ref_mask)
    voxel_volume = float(np.prod(as_spacing(spacing, pred_mask.ndim)))
    tp = int(np.count_nonzero(pred_mask & ref_mask))
    pred_count, ref_count = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
    fp, fn = pred_count - tp, ref_count - tp
    tn = int(pred_mask.size) - tp - fp - fn
    return ConfusionCounts(tp, fp, fn, tn, voxel_volume)


def dice(pred: ArrayLike, ref: ArrayLike) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|); ``nan`` when both masks are empty.

    Example:
        >>> dice(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))  # 2·1 / (2 + 1)
        0.6666666666666666
    """
    return confusion_counts(pred, ref).dice


def jaccard(pred: ArrayLike, ref: ArrayLike) -> float:
    """Jaccard index (IoU) |P∩R| / |P∪R|; ``nan`` when both masks are empty.

    Example:
        >>> jaccard(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))  # 1 / 2
        0.5
    """
    return confusion_counts(pred, ref).jaccard


def sensitivity(pred: ArrayLike, ref: ArrayLike) -> float:
    """Recall TP / (TP + FN); ``nan`` when the reference is empty."""
    return confusion_counts(pred, ref).sensitivity


def specificity(pred: ArrayLike, ref: ArrayLike) -> float:
    """TN / (TN + FP); ``nan`` when the reference covers the whole image."""
    return confusion_counts(pred, ref).specificity


def precision(pred: ArrayLike, ref: ArrayLike) -> float:
    """PPV TP / (TP + FP); ``nan`` when the prediction is empty."""
    return confusion_counts(pred, ref).precision


def volume_difference(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> tuple[float, float]:
    """Absolute volume difference (mm³) and signed relative volume difference (V_p − V_r)/V_r."""
    counts = confusion_counts(pred, ref, spacing)
    return counts.absolute_volume_difference, counts.relative_volume_difference


def _number(value: float | int) -> float:
    """Counts stay integers (readable CSV), everything else is a float."""
    return value if isinstance(value, int) else float(value)


#: class weights of the generalized Dice: ``"square"`` 1/|R_c|² (Sudre et al. 2017, MONAI's
#: default), ``"simple"`` 1/|R_c|, ``"uniform"`` 1.
GENERALIZED_DICE_WEIGHTS = ("square", "simple", "uniform")


def generalized_dice_from_counts(
    counts: Sequence[tuple[int, int, int]], *, weighting: str = "square"
) -> float:
    """Generalized Dice 2 Σ w_c TP_c / Σ w_c (2TP_c + FP_c + FN_c) from per-label counts.

    A label whose reference is empty has an infinite weight: it gets the largest finite weight
    of the others (1 when there is none), as MONAI's ``GeneralizedDiceScore`` does.

    Args:
        counts: ``(TP, FP, FN)`` of every label scored.
        weighting: one of :data:`GENERALIZED_DICE_WEIGHTS`.

    Returns:
        The score in [0, 1]; ``nan`` when every label is empty in both maps (MONAI gives 1).

    Raises:
        ConfigError: an unknown ``weighting``.
    """
    from voxelflow.errors import ConfigError

    if weighting not in GENERALIZED_DICE_WEIGHTS:
        raise ConfigError(
            f"expected a generalized Dice weighting in {GENERALIZED_DICE_WEIGHTS}, got {weighting!r}"
        )
    table = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    tp, fp, fn = table.T
    ref = tp + fn
    power = {"square": 2.0, "simple": 1.0, "uniform": 0.0}[weighting]
    with np.errstate(divide="ignore"):
        weights = np.where(ref > 0, 1.0 / np.where(ref > 0, ref, 1.0) ** power, np.inf)
    finite = weights[np.isfinite(weights)]
    weights[~np.isfinite(weights)] = finite.max() if finite.size and finite.max() > 0 else 1.0
    return safe_ratio(float(2.0 * np.dot(weights, tp)), float(np.dot(weights, 2.0 * tp + fp + fn)))
