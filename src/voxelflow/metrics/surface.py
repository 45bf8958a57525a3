"""Surface distance metrics: Hausdorff, HD95, ASSD, mean surface distance, normalised surface Dice.

The surface of a mask is its set of *border voxels*: foreground voxels with at least one
background face-neighbour (6-neighbourhood in 3D, 4 in 2D; outside the image counts as
background). This is MONAI's definition (``get_mask_edges`` + ``get_surface_distance``), so the
values agree with MONAI's ``HausdorffDistanceMetric``, ``SurfaceDistanceMetric(symmetric=True)``
and ``SurfaceDiceMetric`` to floating-point precision. Each border voxel is a point at its
centre in mm (voxel index × spacing); the distance from a point to a surface is the Euclidean
distance to the nearest border voxel of the other mask.

Both surfaces are extracted once per mask pair, inside the joint bounding box of the two masks,
so the cost grows with the structures, not with the image. :func:`surface_distances` returns
both directed distance sets; every metric here is a cheap reduction of them.

Empty masks: when both masks are empty every distance is ``nan`` (undefined, nothing to
compare) and NSD is ``nan``; when exactly one is empty the distances are ``inf`` (the distance
to an empty set is infinite) and NSD is ``0`` (no boundary element is within tolerance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from voxelflow.metrics._arrays import as_mask, as_spacing, bounding_box, check_pair, union_box
from voxelflow.types import ArrayLike

HD95Mode = Literal["directed", "pooled"]


@dataclass(frozen=True)
class SurfaceDistances:
    """Both directed surface distance sets of a mask pair, in mm.

    Attributes:
        pred_to_ref: distance of every prediction border voxel to the reference surface.
        ref_to_pred: distance of every reference border voxel to the prediction surface.
        pred_empty: the prediction mask has no foreground voxel.
        ref_empty: the reference mask has no foreground voxel.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_empty: bool
    ref_empty: bool

    @property
    def both_empty(self) -> bool:
        """Neither mask has a foreground voxel."""
        return self.pred_empty and self.ref_empty

    @property
    def one_empty(self) -> bool:
        """Exactly one of the masks is empty."""
        return self.pred_empty != self.ref_empty

    def hausdorff(self, percentile: float | None = None, *, mode: HD95Mode = "directed") -> float:
        """Hausdorff distance (``percentile=None``) or its percentile variant (HD95 at 95).

        ``mode="directed"`` (default, MONAI and DeepMind): the larger of the two directed
        percentiles. ``mode="pooled"``: the percentile of both distance sets pooled together.
        Percentiles use numpy's linear interpolation.
        """
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return float("inf")
        if percentile is None:
            return float(max(self.pred_to_ref.max(), self.ref_to_pred.max()))
        if mode == "pooled":
            pooled = np.concatenate([self.pred_to_ref, self.ref_to_pred])
            return float(np.percentile(pooled, percentile))
        return float(
            max(np.percentile(self.pred_to_ref, percentile), np.percentile(self.ref_to_pred, percentile))
        )

    def average_symmetric(self) -> float:
        """ASSD: the mean of both directed distance sets pooled together."""
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return float("inf")
        total = self.pred_to_ref.sum() + self.ref_to_pred.sum()
        return float(total / (self.pred_to_ref.size + self.ref_to_pred.size))

    def mean_directed(self) -> tuple[float, float]:
        """Mean surface distance prediction→reference and reference→prediction."""
        if self.both_empty:
            return float("nan"), float("nan")
        if self.one_empty:
            return float("inf"), float("inf")
        return float(self.pred_to_ref.mean()), float(self.ref_to_pred.mean())

    def surface_dice(self, tolerance: float) -> float:
        """NSD: fraction of both surfaces' border voxels within ``tolerance`` mm of the other."""
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return 0.0
        within = np.count_nonzero(self.pred_to_ref <= tolerance)
        within += np.count_nonzero(self.ref_to_pred <= tolerance)
        return float(within / (self.pred_to_ref.size + self.ref_to_pred.size))


def border_voxels(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background face-neighbour (outside the array is background).

    Args:
        mask: boolean array ``(X, Y)`` or ``(X, Y, Z)``.

    Returns:
        Boolean array of the same shape, true on the border voxels.
    """
    padded = np.pad(mask, 1, constant_values=False)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (0, 2):
            index = [slice(1, -1)] * mask.ndim
            index[axis] = slice(shift, shift + mask.shape[axis])
            interior &= padded[tuple(index)]
    return mask & ~interior


def _directed(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """Distance of each row of ``points_from`` to the nearest row of ``points_to``."""
    distances, _ = cKDTree(points_to).query(points_from, k=1)
    return np.asarray(distances, dtype=np.float64)


def surface_distances_cropped(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> SurfaceDistances:
    """:func:`surface_distances` on boolean masks already cropped to their joint extent."""
    pred_empty, ref_empty = not pred.any(), not ref.any()
    empty = np.zeros(0)
    if pred_empty or ref_empty:
        return SurfaceDistances(empty, empty, pred_empty, ref_empty)
    scale = np.asarray(spacing, dtype=np.float64)
    pred_points = np.argwhere(border_voxels(pred)) * scale
    ref_points = np.argwhere(border_voxels(ref)) * scale
    return SurfaceDistances(
        _directed(pred_points, ref_points), _directed(ref_points, pred_points), False, False
    )


def surface_distances(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> SurfaceDistances:
    """Extract both surfaces once and compute both directed distance sets (mm).

    Args:
        pred: predicted binary mask (bool or 0/1), numpy array or torch tensor.
        ref: reference binary mask of the same shape.
        spacing: voxel size in mm per axis (a number for isotropic; ``None`` = 1 mm).

    Returns:
        :class:`SurfaceDistances`, whose methods give HD, HD95, ASSD, MSD and NSD.

    Raises:
        ShapeError: different shapes, or not 2D/3D.
        DataError: non-binary values.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
        >>> surface_distances(a, np.roll(a, 1, axis=0), (1.0, 1.0, 2.0)).hausdorff()
        1.0
    """
    pred_mask, ref_mask = as_mask(pred, name="prediction"), as_mask(ref, name="reference")
    check_pair(pred_mask, ref_mask)
    voxel_size = as_spacing(spacing, pred_mask.ndim)
    box = union_box(bounding_box(pred_mask), bounding_box(ref_mask))
    if box is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, True, True)
    return surface_distances_cropped(pred_mask[box], ref_mask[box], voxel_size)


def hausdorff_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    *,
    percentile: float | None = None,
    mode: HD95Mode = "directed",
) -> float:
    """Hausdorff distance in mm, or its robust percentile variant (``percentile=95``: HD95).

    Args:
        pred: predicted binary mask.
        ref: reference binary mask.
        spacing: voxel size in mm per axis.
        percentile: ``None`` for the maximum, else a percentile in [0, 100].
        mode: ``"directed"`` (max of the two directed percentiles, MONAI/DeepMind) or
            ``"pooled"`` (percentile of both distance sets together).

    Returns:
        Distance in mm; ``nan`` when both masks are empty, ``inf`` when one is.
    """
    return surface_distances(pred, ref, spacing).hausdorff(percentile, mode=mode)


def average_symmetric_surface_distance(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """ASSD in mm: mean over both directed distance sets (``nan`` both empty, ``inf`` one empty)."""
    return surface_distances(pred, ref, spacing).average_symmetric()


def mean_surface_distance(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> tuple[float, float]:
    """Mean surface distance (mm) prediction→reference and reference→prediction."""
    return surface_distances(pred, ref, spacing).mean_directed()


def normalized_surface_dice(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    tolerance: float = 1.0,
) -> float:
    """Normalised surface Dice at ``tolerance`` mm (border-voxel counts, as MONAI's default).

    Returns:
        Value in [0, 1]; ``nan`` when both masks are empty, ``0`` when exactly one is.
    """
    return surface_distances(pred, ref, spacing).surface_dice(tolerance)
