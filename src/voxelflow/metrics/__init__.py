"""Evaluation metrics: overlap, surface distance, regions, descriptive, regression, classification.

Every metric is a plain function on numpy arrays or torch tensors. :data:`METRICS` maps each
segmentation metric name used in configs (``evaluation.metrics``, ``training.best_metric``) to a
function ``f(pred_mask, ref_mask, spacing=None, tolerance=1.0) -> float``; for many metrics of a
label map at once use :func:`segmentation_metrics` (one surface extraction per label). The
definitions and empty-mask conventions are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from voxelflow.metrics._arrays import as_mask
from voxelflow.metrics.classification import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    precision_recall_f1,
    roc_auc,
)
from voxelflow.metrics.descriptive import (
    centroid,
    intensity_statistics,
    shape_descriptors,
    surface_area,
    volume,
)
from voxelflow.metrics.overlap import (
    ConfusionCounts,
    confusion_counts,
    dice,
    generalized_dice_from_counts,
    jaccard,
    precision,
    sensitivity,
    specificity,
    volume_difference,
)
from voxelflow.metrics.regions import (
    RegionCounts,
    connected_components,
    detection_rate,
    region_counts,
)
from voxelflow.metrics.regression import (
    mean_absolute_error,
    mean_error,
    mean_squared_error,
    normalized_cross_correlation,
    psnr,
    regression_metrics,
    root_mean_squared_error,
    ssim,
)
from voxelflow.metrics.segmentation import (
    DEFAULT_METRICS,
    SEGMENTATION_METRIC_NAMES,
    generalized_dice,
    segmentation_metrics,
)
from voxelflow.metrics.surface import (
    SurfaceDistances,
    average_symmetric_surface_distance,
    hausdorff_distance,
    mean_surface_distance,
    normalized_surface_dice,
    surface_distances,
)
from voxelflow.metrics.torch_metrics import dice_batch, iou_batch
from voxelflow.registry import Registry
from voxelflow.types import ArrayLike

MaskMetric = Callable[..., float]

#: segmentation metric name → ``f(pred_mask, ref_mask, spacing=None, tolerance=1.0) -> float``.
METRICS: Registry[MaskMetric] = Registry("metric")

_DESCRIPTIONS = {
    "dice": "Dice 2TP/(2TP+FP+FN); nan if both empty",
    "jaccard": "Jaccard/IoU TP/(TP+FP+FN); nan if both empty",
    "sensitivity": "recall TP/(TP+FN); nan if the reference is empty",
    "specificity": "TN/(TN+FP)",
    "precision": "PPV TP/(TP+FP); nan if the prediction is empty",
    "npv": "negative predictive value TN/(TN+FN)",
    "accuracy": "(TP+TN)/N",
    "fpr": "false positive rate FP/(FP+TN)",
    "informedness": "sensitivity + specificity - 1 (Youden's J)",
    "markedness": "precision + NPV - 1",
    "fnr": "false negative rate (miss rate) FN/(FN+TP); nan if the reference is empty",
    "fdr": "false discovery rate FP/(FP+TP); nan if the prediction is empty",
    "mcc": "Matthews correlation (TP·TN-FP·FN)/sqrt(...); nan if a margin is 0",
    "tp": "true positive voxel count",
    "fp": "false positive voxel count",
    "fn": "false negative voxel count",
    "tn": "true negative voxel count",
    "volume_ref_mm3": "reference volume (mm3)",
    "volume_pred_mm3": "prediction volume (mm3)",
    "abs_volume_diff_mm3": "|V_pred - V_ref| (mm3)",
    "rel_volume_diff": "(V_pred - V_ref)/V_ref; nan if the reference is empty",
    "hd": "Hausdorff distance (mm), the larger direction; nan both empty, inf one empty",
    "hd_pred_to_ref": "directed Hausdorff distance prediction -> reference (mm)",
    "hd_ref_to_pred": "directed Hausdorff distance reference -> prediction (mm)",
    "hd95_pred_to_ref": "95th percentile surface distance prediction -> reference (mm)",
    "hd95_ref_to_pred": "95th percentile surface distance reference -> prediction (mm)",
    "hd95": "max of the two directed 95th percentile surface distances (mm)",
    "hd95_pooled": "95th percentile of both directed distance sets pooled (mm)",
    "assd": "average symmetric surface distance, both sets pooled (mm)",
    "msd_pred_to_ref": "mean surface distance prediction -> reference (mm)",
    "msd_ref_to_pred": "mean surface distance reference -> prediction (mm)",
    "nsd": "normalised surface Dice at the tolerance (mm); nan both empty, 0 one empty",
    "num_ref_components": "connected components of the reference",
    "num_pred_components": "connected components of the prediction",
    "detection_rate": "lesion-wise sensitivity: reference components touched by the prediction",
    "lesion_precision": "predicted components touching the reference / predicted components",
    "lesion_f1": "harmonic mean of detection rate and lesion precision",
    "fp_components": "predicted components not touching the reference",
    "generalized_dice": "generalized Dice of the subject's labels, weights 1/|R|^2 (one value "
    "per subject)",
}


def _mask_metric(name: str) -> MaskMetric:
    def metric(
        pred: ArrayLike,
        ref: ArrayLike,
        spacing: float | Sequence[float] | None = None,
        tolerance: float = 1.0,
    ) -> float:
        pred_mask, ref_mask = as_mask(pred, name="prediction"), as_mask(ref, name="reference")
        values = segmentation_metrics(
            pred_mask, ref_mask, labels=[1], spacing=spacing, metrics=[name], tolerance=tolerance
        )
        return values[1][name]

    metric.__name__ = name
    metric.__doc__ = f"{name} of two binary masks (see docs/metrics.md)."
    return metric


for _name in SEGMENTATION_METRIC_NAMES:
    METRICS.add(_name, _mask_metric(_name), description=_DESCRIPTIONS[_name])

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "SEGMENTATION_METRIC_NAMES",
    "ConfusionCounts",
    "RegionCounts",
    "SurfaceDistances",
    "accuracy",
    "average_symmetric_surface_distance",
    "balanced_accuracy",
    "centroid",
    "confusion_counts",
    "confusion_matrix",
    "connected_components",
    "detection_rate",
    "dice",
    "dice_batch",
    "expected_calibration_error",
    "generalized_dice",
    "generalized_dice_from_counts",
    "hausdorff_distance",
    "intensity_statistics",
    "iou_batch",
    "jaccard",
    "mean_absolute_error",
    "mean_error",
    "mean_squared_error",
    "mean_surface_distance",
    "normalized_cross_correlation",
    "normalized_surface_dice",
    "precision",
    "precision_recall_f1",
    "psnr",
    "region_counts",
    "regression_metrics",
    "roc_auc",
    "root_mean_squared_error",
    "segmentation_metrics",
    "sensitivity",
    "shape_descriptors",
    "specificity",
    "ssim",
    "surface_area",
    "surface_distances",
    "volume",
    "volume_difference",
]
