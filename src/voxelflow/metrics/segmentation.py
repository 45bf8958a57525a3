"""Every segmentation metric of a label-map pair, per label, in one call.

:func:`segmentation_metrics` locates each label once (``scipy.ndimage.find_objects``), crops
prediction and reference to the label's joint bounding box, and computes the requested
overlap, surface and region metrics on that crop from one surface extraction. The cost grows
with the structures, not with the image, which is what makes whole-dataset evaluation and
per-epoch validation cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from voxelflow.errors import ConfigError, DataError
from voxelflow.metrics._arrays import as_spacing, check_pair, to_numpy, union_box
from voxelflow.metrics.overlap import (
    OVERLAP_COLUMNS,
    ConfusionCounts,
    generalized_dice_from_counts,
)
from voxelflow.metrics.regions import region_counts
from voxelflow.metrics.surface import (
    SurfaceDistances,
    SurfaceKind,
    check_tolerance,
    surface_distances_cropped,
)
from voxelflow.types import ArrayLike

SURFACE_METRICS = (
    "hd", "hd95", "hd95_pooled", "assd", "msd_pred_to_ref", "msd_ref_to_pred", "nsd",
    "hd_pred_to_ref", "hd_ref_to_pred", "hd95_pred_to_ref", "hd95_ref_to_pred",
)  # fmt: skip
REGION_METRICS = (
    "num_ref_components",
    "num_pred_components",
    "detection_rate",
    "lesion_precision",
    "lesion_f1",
    "fp_components",
)
#: metrics of a whole subject (all its labels at once), repeated on each of its label rows.
SUBJECT_METRICS = ("generalized_dice",)
#: every metric name :func:`segmentation_metrics` accepts, in report order.
SEGMENTATION_METRIC_NAMES = (*OVERLAP_COLUMNS, *SURFACE_METRICS, *REGION_METRICS, *SUBJECT_METRICS)
DEFAULT_METRICS = ("dice", "hd95", "assd", "nsd")


def as_label_map(array: ArrayLike, *, name: str = "label map") -> np.ndarray:
    """An integer label map; float maps must hold whole numbers.

    Raises:
        DataError: non-integer or negative values (the message names ``name``).
    """
    values = to_numpy(array)
    if values.dtype == np.bool_:
        return values.astype(np.uint8)
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values)) or np.any(np.mod(values, 1) != 0):
            bad = values[~np.isfinite(values) | (np.mod(values, 1) != 0)][:3]
            raise DataError(f"expected integer label values in {name}, got {bad.tolist()} ...")
        values = values.astype(np.int64)
    if values.size and values.min() < 0:
        raise DataError(f"expected label values ≥ 0 in {name}, got {int(values.min())}")
    return values


def _surface_values(distances: SurfaceDistances, tolerance: float) -> dict[str, float]:
    msd_pred, msd_ref = distances.mean_directed()
    return {
        "hd": distances.hausdorff(),
        "hd95": distances.hausdorff(95),
        "hd95_pooled": distances.hausdorff(95, mode="pooled"),
        "assd": distances.average_symmetric(),
        "msd_pred_to_ref": msd_pred,
        "msd_ref_to_pred": msd_ref,
        "nsd": distances.surface_dice(tolerance),
        "hd_pred_to_ref": distances.hausdorff(mode="forward"),
        "hd_ref_to_pred": distances.hausdorff(mode="backward"),
        "hd95_pred_to_ref": distances.hausdorff(95, mode="forward"),
        "hd95_ref_to_pred": distances.hausdorff(95, mode="backward"),
    }


def _label_metrics(
    pred_crop: np.ndarray,
    ref_crop: np.ndarray,
    total_voxels: int,
    spacing: tuple[float, ...],
    wanted: Sequence[str],
    tolerance: float,
    surface: SurfaceKind,
) -> dict[str, float]:
    """The requested metrics of one label from its cropped boolean masks."""
    tp = int(np.count_nonzero(pred_crop & ref_crop))
    fp = int(np.count_nonzero(pred_crop)) - tp
    fn = int(np.count_nonzero(ref_crop)) - tp
    counts = ConfusionCounts(tp, fp, fn, total_voxels - tp - fp - fn, float(np.prod(spacing)))
    values = counts.as_dict()
    if any(name in SURFACE_METRICS for name in wanted):
        distances = surface_distances_cropped(pred_crop, ref_crop, spacing, surface)
        values.update(_surface_values(distances, tolerance))
    if any(name in REGION_METRICS for name in wanted):
        values.update(region_counts(pred_crop, ref_crop).as_dict())
    return {name: values[name] for name in wanted}


def absent_label_metrics(
    shape: Sequence[int],
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tolerance: float = 1.0,
    surface: SurfaceKind = "surfels",
) -> dict[str, float]:
    """The values of a label absent from both maps of a grid (both-empty conventions).

    Used to give every subject a row for every label of a dataset, so that summaries count
    the undefined values instead of silently averaging over fewer subjects.
    """
    empty = np.zeros((0,) * len(shape), bool)
    total = int(np.prod(shape))
    voxel_size = tuple(float(s) for s in spacing)
    wanted = check_metric_names(metrics)
    per_label = tuple(name for name in wanted if name not in SUBJECT_METRICS)
    values = _label_metrics(empty, empty, total, voxel_size, per_label, tolerance, surface)
    # a label empty in both maps adds nothing to a subject metric: the caller copies the
    # subject's value; alone (no label anywhere) it is undefined
    values.update({name: float("nan") for name in wanted if name in SUBJECT_METRICS})
    return {name: values[name] for name in wanted}


def check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """Validate metric names against :data:`SEGMENTATION_METRIC_NAMES`.

    Raises:
        ConfigError: an unknown name, with the closest known names.
    """
    from voxelflow.registry import suggest

    for name in metrics:
        if name not in SEGMENTATION_METRIC_NAMES:
            hint = suggest(name, list(SEGMENTATION_METRIC_NAMES))
            raise ConfigError(f"expected a segmentation metric name, got {name!r}.{hint}")
    return tuple(metrics)


def present_labels(label_map: np.ndarray) -> list[int]:
    """Sorted non-zero label values of a label map."""
    return [int(v) for v in np.unique(label_map) if v != 0]


def segmentation_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    labels: Sequence[int] | None = None,
    spacing: float | Sequence[float] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tolerance: float = 1.0,
    surface: SurfaceKind = "surfels",
) -> dict[int, dict[str, float]]:
    """Compute the chosen metrics for each label of a prediction/reference label-map pair.

    Args:
        pred: predicted label map (integer values), numpy or torch, 2D or 3D.
        ref: reference label map of the same shape and grid.
        labels: label values to evaluate; ``None`` = every non-zero value in either map.
        spacing: voxel size in mm per axis.
        metrics: names from :data:`SEGMENTATION_METRIC_NAMES` (``dice``, ``hd95``, ``nsd``...).
        tolerance: NSD tolerance τ in mm.
        surface: surface elements of every surface metric: ``"surfels"`` (default,
            DeepMind's area-weighted surfels), ``"voxels"`` (border voxels, MONAI's
            definition) or ``"faces"`` (area-weighted voxel faces).

    Returns:
        ``{label: {metric: value}}``; see ``docs/metrics.md`` for empty-mask values.

    Raises:
        ShapeError: different shapes. DataError: non-integer labels. ConfigError: unknown metric.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> ref = np.zeros((10, 10, 10), int); ref[2:6, 2:6, 2:6] = 1
        >>> segmentation_metrics(ref, ref, labels=[1], metrics=["dice", "hd95"])
        {1: {'dice': 1.0, 'hd95': 0.0}}
    """
    wanted = check_metric_names(metrics)
    check_tolerance(tolerance)
    pred_map, ref_map = as_label_map(pred, name="prediction"), as_label_map(ref, name="reference")
    check_pair(pred_map, ref_map)
    voxel_size = as_spacing(spacing, pred_map.ndim)
    if labels is None:
        labels = sorted(set(present_labels(pred_map)) | set(present_labels(ref_map)))
    top = max([0, *labels])
    pred_boxes = ndimage.find_objects(pred_map, max_label=top) if top else []
    ref_boxes = ndimage.find_objects(ref_map, max_label=top) if top else []
    per_label = tuple(name for name in wanted if name not in SUBJECT_METRICS)
    if "generalized_dice" in wanted:  # from the per-label counts
        per_label = tuple(dict.fromkeys([*per_label, "tp", "fp", "fn"]))
    results: dict[int, dict[str, float]] = {}
    for label in labels:
        label = int(label)
        if label == 0:
            box: tuple[slice, ...] | None = tuple(slice(0, s) for s in pred_map.shape)
        else:
            box = union_box(pred_boxes[label - 1], ref_boxes[label - 1])
            box = box or tuple(slice(0, 0) for _ in pred_map.shape)
        results[label] = _label_metrics(
            pred_map[box] == label,
            ref_map[box] == label,
            pred_map.size,
            voxel_size,
            per_label,
            tolerance,
            surface,
        )
    if "generalized_dice" in wanted:
        counts = [(int(v["tp"]), int(v["fp"]), int(v["fn"])) for v in results.values()]
        score = generalized_dice_from_counts(counts)
        for values in results.values():
            values["generalized_dice"] = score
    return {label: {name: values[name] for name in wanted} for label, values in results.items()}


def generalized_dice(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    labels: Sequence[int] | None = None,
    weighting: str = "square",
) -> float:
    """Generalized Dice of two label maps over ``labels`` (default: every non-zero label).

    Matches MONAI's ``GeneralizedDiceScore(include_background=False)`` on the one-hot maps,
    except that it is ``nan`` (not 1) when every label is empty in both maps. ``weighting``:
    ``"square"`` (default), ``"simple"`` or ``"uniform"``.

    Shape:
        pred, ref: integer label maps ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> ref = np.array([[1, 1, 2, 0]]); pred = np.array([[1, 0, 2, 2]])
        >>> round(generalized_dice(pred, ref), 4)  # w = 1/4 and 1: 2·(1/4 + 1) / (3/4 + 3)
        0.6667
    """
    pred_map, ref_map = as_label_map(pred, name="prediction"), as_label_map(ref, name="reference")
    check_pair(pred_map, ref_map)
    if labels is None:
        labels = sorted(set(present_labels(pred_map)) | set(present_labels(ref_map)))
    counts = []
    for label in labels:
        p, r = pred_map == label, ref_map == label
        tp = int(np.count_nonzero(p & r))
        counts.append((tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp))
    return generalized_dice_from_counts(counts, weighting=weighting)
