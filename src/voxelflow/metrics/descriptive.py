"""Descriptive measures of one region: size, shape, position and the intensities inside it.

Surface area is the area of the voxel faces between the region and the background (the exact
boundary area of the voxelised region; for a digitised smooth object it overestimates the
smooth surface by up to ~50%, so compactness of a voxelised sphere is well below 1). In 2D the
"volume" is an area (mm²) and the "surface area" a perimeter (mm).

Empty region: volume and surface area are 0; surface-to-volume ratio, compactness, centroid and
intensity statistics are ``nan`` (they do not exist).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from voxelflow.errors import ShapeError
from voxelflow.metrics._arrays import as_mask, as_spacing, to_numpy
from voxelflow.types import ArrayLike


def volume(mask: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
    """Region volume in mm³ (area in mm² in 2D): voxel count × voxel volume."""
    binary = as_mask(mask)
    return float(np.count_nonzero(binary) * np.prod(as_spacing(spacing, binary.ndim)))


def surface_area(mask: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
    """Area (mm²) of the voxel faces between region and background (perimeter in 2D).

    Faces on the image border count as boundary.

    Shape:
        mask: ``(X, Y)`` or ``(X, Y, Z)``.
    """
    binary = as_mask(mask)
    voxel = as_spacing(spacing, binary.ndim)
    padded = np.pad(binary, 1, constant_values=False).view(np.int8)
    total = 0.0
    for axis in range(binary.ndim):
        faces = np.count_nonzero(np.diff(padded, axis=axis))
        face_area = float(np.prod([s for a, s in enumerate(voxel) if a != axis]))
        total += faces * face_area
    return total


def centroid(mask: ArrayLike, affine: np.ndarray | None = None) -> tuple[float, ...]:
    """Centre of mass of the region in world coordinates (mm) through the 4×4 ``affine``.

    Without an affine, returns voxel coordinates. A 2D mask uses the affine's first two axes.
    Returns a tuple of ``nan`` for an empty region.
    """
    binary = as_mask(mask)
    if not binary.any():
        return (float("nan"),) * (3 if affine is not None else binary.ndim)
    index = np.argwhere(binary).mean(axis=0)
    if affine is None:
        return tuple(float(v) for v in index)
    homogeneous = np.zeros(4)
    homogeneous[: binary.ndim] = index
    homogeneous[3] = 1.0
    world = np.asarray(affine, dtype=np.float64) @ homogeneous
    return tuple(float(v) for v in world[:3])


def shape_descriptors(
    mask: ArrayLike, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """Volume, surface area, surface-to-volume ratio and compactness of a region.

    Compactness is ``36π V² / A³`` in 3D and ``4π A / P²`` in 2D (1 for a smooth ball/disc).
    """
    binary = as_mask(mask)
    size = volume(binary, spacing)
    area = surface_area(binary, spacing)
    if size == 0:
        ratio = compactness = float("nan")
    else:
        ratio = area / size
        factor = (
            36.0 * np.pi * size**2 / area**3 if binary.ndim == 3 else 4 * np.pi * size / area**2
        )
        compactness = float(factor)
    return {
        "volume_mm3": size,
        "surface_area_mm2": area,
        "surface_to_volume": ratio,
        "compactness": compactness,
    }


def intensity_statistics(image: ArrayLike, mask: ArrayLike) -> dict[str, float]:
    """Statistics of ``image`` inside ``mask``: mean, std, median, quartiles, skewness, kurtosis.

    ``std`` is the population standard deviation (ddof 0); skewness and kurtosis are the
    biased moment estimators, kurtosis as *excess* kurtosis (0 for a normal distribution),
    matching ``scipy.stats.skew``/``kurtosis`` defaults. All ``nan`` for an empty region.

    Shape:
        image, mask: the same ``(X, Y)`` or ``(X, Y, Z)`` (a leading channel of 1 is dropped).
    """
    values = to_numpy(image)
    binary = as_mask(mask)
    if values.ndim == binary.ndim + 1 and values.shape[0] == 1:
        values = values[0]
    if values.shape != binary.shape:
        raise ShapeError(
            f"expected an image of the mask's shape {binary.shape}, got {values.shape}"
        )
    inside = values[binary].astype(np.float64)
    names = ("mean", "std", "median", "q1", "q3", "skewness", "kurtosis")
    if inside.size == 0:
        return {name: float("nan") for name in names}
    q1, median, q3 = np.percentile(inside, [25, 50, 75])
    constant = bool(np.all(inside == inside[0]))
    return {
        "mean": float(inside.mean()),
        "std": float(inside.std()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "skewness": float("nan") if constant else float(stats.skew(inside)),
        "kurtosis": float("nan") if constant else float(stats.kurtosis(inside)),
    }


INTENSITY_STATISTICS = ("mean", "std", "median", "q1", "q3", "skewness", "kurtosis")
_SHAPE_COLUMNS = ("surface_area_{}_mm2", "surface_to_volume_{}", "compactness_{}")
_CENTROID_COLUMNS = ("centroid_{}_x_mm", "centroid_{}_y_mm", "centroid_{}_z_mm")


def region_columns(*, intensity: bool = False) -> tuple[str, ...]:
    """The descriptive columns of :func:`label_descriptors`, in report order.

    Shape and centroid columns exist for the reference (``ref``) and the prediction (``pred``)
    region, then ``centroid_distance_mm``; with ``intensity`` also ``intensity_<stat>_<ref|pred>``
    for each of :data:`INTENSITY_STATISTICS`. (Volumes are the overlap columns
    ``volume_ref_mm3`` and ``volume_pred_mm3``.)

    Example:
        >>> region_columns()[:2]
        ('surface_area_ref_mm2', 'surface_to_volume_ref')
    """
    columns = [
        template.format(who)
        for who in ("ref", "pred")
        for template in (*_SHAPE_COLUMNS, *_CENTROID_COLUMNS)
    ]
    columns.append("centroid_distance_mm")
    if intensity:
        columns += [
            f"intensity_{stat}_{who}" for who in ("ref", "pred") for stat in INTENSITY_STATISTICS
        ]
    return tuple(columns)


def _region_values(
    mask: np.ndarray,
    box: tuple[slice, ...],
    who: str,
    spacing: tuple[float, ...],
    affine: np.ndarray,
    image: np.ndarray | None,
) -> dict[str, float]:
    """Shape, centroid and (optionally) intensity values of one region cropped to ``box``."""
    shape = shape_descriptors(mask, spacing)
    values = {
        f"surface_area_{who}_mm2": float(shape["surface_area_mm2"]),
        f"surface_to_volume_{who}": float(shape["surface_to_volume"]),
        f"compactness_{who}": float(shape["compactness"]),
    }
    shifted = np.asarray(affine, np.float64).copy()  # the crop's voxel (0, 0, 0) is box start
    start = np.zeros(4)
    start[: mask.ndim] = [s.start for s in box]
    shifted[:, 3] = shifted @ np.r_[start[:3], 1.0]
    for axis, value in zip("xyz", centroid(mask, shifted)):
        values[f"centroid_{who}_{axis}_mm"] = value
    if image is not None:
        stats_inside = intensity_statistics(image[box], mask)
        values.update({f"intensity_{k}_{who}": v for k, v in stats_inside.items()})
    return values


def label_descriptors(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Sequence[int],
    *,
    spacing: Sequence[float],
    affine: np.ndarray,
    image: np.ndarray | None = None,
) -> dict[int, dict[str, float]]:
    """Descriptive columns (:func:`region_columns`) of each label's reference and predicted region.

    Each label is cropped to the joint bounding box of its two regions, so the cost follows the
    structures. Centroids are world coordinates (mm) through ``affine``; the intensity
    statistics (:func:`intensity_statistics`) are those of ``image`` inside each region.

    Args:
        pred: predicted integer label map. ref: reference label map on the same grid.
        labels: label values to describe (absent labels give the empty-region values).
        spacing: voxel size in mm per axis. affine: 4×4 voxel-to-world matrix of the grid.
        image: optional intensity array on the same grid.

    Returns:
        ``{label: {column: value}}``.

    Raises:
        ShapeError: ``image`` of another shape than the label maps.

    Shape:
        pred, ref, image: ``(X, Y)`` or ``(X, Y, Z)``.
    """
    from scipy import ndimage

    from voxelflow.metrics._arrays import union_box

    if image is not None and image.shape != ref.shape:
        raise ShapeError(
            f"expected an image of the label maps' shape {ref.shape}, got {image.shape}"
        )
    voxel = as_spacing(spacing, ref.ndim)
    top = max([0, *labels])
    pred_boxes = ndimage.find_objects(pred, max_label=top) if top else []
    ref_boxes = ndimage.find_objects(ref, max_label=top) if top else []
    results: dict[int, dict[str, float]] = {}
    for label in (int(v) for v in labels):
        box = (
            union_box(pred_boxes[label - 1], ref_boxes[label - 1])
            if label > 0
            else tuple(slice(0, s) for s in ref.shape)
        )
        box = box or tuple(slice(0, 0) for _ in ref.shape)
        ref_mask, pred_mask = ref[box] == label, pred[box] == label
        values = _region_values(ref_mask, box, "ref", voxel, affine, image)
        values.update(_region_values(pred_mask, box, "pred", voxel, affine, image))
        ref_centre = [values[f"centroid_ref_{axis}_mm"] for axis in "xyz"]
        pred_centre = [values[f"centroid_pred_{axis}_mm"] for axis in "xyz"]
        values["centroid_distance_mm"] = float(np.linalg.norm(np.subtract(pred_centre, ref_centre)))
        results[label] = values
    return results


def empty_region_values(columns: Sequence[str]) -> dict[str, float]:
    """The value of each descriptive column for an empty region: 0 for surface areas, else nan."""
    return {c: 0.0 if c.startswith("surface_area_") else float("nan") for c in columns}
