"""Surface distance metrics: Hausdorff, HD95, ASSD, mean surface distance, normalised surface Dice.

Three definitions of a mask's surface, chosen with ``surface=``:

* ``"surfels"`` (default): DeepMind's surface elements on the voxel-corner grid, each weighted
  by the area of the marching-cubes surface through its cell (:mod:`voxelflow.metrics.surfels`).
  Every metric equals DeepMind's ``surface-distance``: NSD
  (``compute_surface_dice_at_tolerance``), HD95 (``compute_robust_hausdorff``: the larger of
  the two directed area-weighted percentiles), mean distance each way
  (``compute_average_surface_distance``); ASSD is their area-weighted pooled mean.
* ``"voxels"``: border voxels, i.e. foreground voxels with a background face-neighbour
  (6-neighbourhood in 3D, 4 in 2D), each a point at its centre, counted once; percentiles use
  numpy's linear interpolation. This is MONAI's definition (``HausdorffDistanceMetric``,
  ``SurfaceDistanceMetric(symmetric=True)``, ``SurfaceDiceMetric``), equal to floating-point
  precision.
* ``"faces"``: the voxel faces between object and background, at their centres, area-weighted.

The distance from a surface element to the other surface is the Euclidean distance (mm) to its
nearest element. Both surfaces are extracted once per mask pair, inside the joint bounding box
of the two masks, so the cost grows with the structures, not with the image.
:func:`surface_distances` returns both directed distance sets; every metric here is a cheap
reduction of them.

Empty masks: when both masks are empty every distance is ``nan`` (undefined, nothing to
compare) and NSD is ``nan``; when exactly one is empty the distances are ``inf`` (the distance
to an empty set is infinite) and NSD is ``0`` (no boundary element is within tolerance).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from voxelflow.errors import ConfigError
from voxelflow.metrics._arrays import as_mask, as_spacing, bounding_box, check_pair, union_box
from voxelflow.metrics.surfels import surfels
from voxelflow.types import ArrayLike

HD95Mode = Literal["symmetric", "forward", "backward", "pooled"]
#: the Hausdorff modes, default first (``"directed"`` is an accepted, deprecated ``"symmetric"``).
HAUSDORFF_MODES = ("symmetric", "forward", "backward", "pooled")


def check_hausdorff_mode(mode: str) -> str:
    """``mode`` checked; the deprecated ``"directed"`` (which meant the larger of the two
    directions) is read as ``"symmetric"`` with a DeprecationWarning.

    Raises:
        ConfigError: an unknown mode, naming the known ones.
    """
    if mode == "directed":
        warnings.warn(
            "hausdorff mode='directed' is the larger of the two directed distances: it is now "
            "called mode='symmetric'; use mode='forward' (prediction → reference) or "
            "mode='backward' (reference → prediction) for one direction",
            DeprecationWarning,
            stacklevel=3,
        )
        return "symmetric"
    if mode not in HAUSDORFF_MODES:
        raise ConfigError(f"expected a Hausdorff mode in {HAUSDORFF_MODES}, got {mode!r}")
    return mode


SurfaceKind = Literal["surfels", "voxels", "faces"]
#: the surface definitions, default first.
SURFACE_KINDS = ("surfels", "voxels", "faces")


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float; ConfigError unless it is a finite number >= 0 (mm)."""
    value = float(tolerance)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"expected tolerance a finite number >= 0 mm, got {tolerance!r}")
    return value


@dataclass(frozen=True)
class SurfaceDistances:
    """Both directed surface distance sets of a mask pair, in mm.

    Attributes:
        pred_to_ref: distance of every prediction border voxel to the reference surface.
        ref_to_pred: distance of every reference border voxel to the prediction surface.
        pred_empty: the prediction mask has no foreground voxel.
        ref_empty: the reference mask has no foreground voxel.
        pred_areas: area (mm², length in 2D) of each prediction surface element for the
            ``"surfels"`` and ``"faces"`` surfaces; ``None`` for border voxels (each counts once).
        ref_areas: the same for the reference.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_empty: bool
    ref_empty: bool
    pred_areas: np.ndarray | None = None
    ref_areas: np.ndarray | None = None

    @property
    def both_empty(self) -> bool:
        """Neither mask has a foreground voxel."""
        return self.pred_empty and self.ref_empty

    @property
    def one_empty(self) -> bool:
        """Exactly one of the masks is empty."""
        return self.pred_empty != self.ref_empty

    def hausdorff(self, percentile: float | None = None, *, mode: str = "symmetric") -> float:
        """Hausdorff distance (``percentile=None``) or its percentile variant (HD95 at 95).

        Args:
            percentile: ``None`` for the maximum, else a percentile in [0, 100] (numpy's linear
                interpolation; area-weighted for the surfels and faces surfaces).
            mode: ``"symmetric"`` (default, MONAI ``directed=False`` and DeepMind): the larger
                of the two directed values; ``"forward"``: prediction → reference only (MONAI
                ``directed=True``, scipy ``directed_hausdorff(pred, ref)``); ``"backward"``:
                reference → prediction only; ``"pooled"``: the percentile of both distance sets
                pooled together (medpy's ``hd95``). ``"directed"`` is a deprecated name of
                ``"symmetric"``.

        Returns:
            mm; ``nan`` when both masks are empty, ``inf`` when exactly one is (in every mode).
        """
        mode = check_hausdorff_mode(mode)
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return float("inf")
        forward = (self.pred_to_ref, self.pred_areas)
        backward = (self.ref_to_pred, self.ref_areas)
        if mode == "forward":
            return _directed_value(*forward, percentile)
        if mode == "backward":
            return _directed_value(*backward, percentile)
        if mode == "pooled" and percentile is not None:
            pooled = np.concatenate([self.pred_to_ref, self.ref_to_pred])
            weights = (
                None
                if self.pred_areas is None
                else np.concatenate([self.pred_areas, self.ref_areas])
            )
            return _percentile(pooled, weights, percentile)
        return max(_directed_value(*forward, percentile), _directed_value(*backward, percentile))

    def average_symmetric(self) -> float:
        """ASSD: the mean of both directed distance sets pooled together."""
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return float("inf")
        pred_w, ref_w = self._weights()
        total = np.dot(self.pred_to_ref, pred_w) + np.dot(self.ref_to_pred, ref_w)
        return float(total / (pred_w.sum() + ref_w.sum()))

    def mean_directed(self) -> tuple[float, float]:
        """Mean surface distance prediction→reference and reference→prediction."""
        if self.both_empty:
            return float("nan"), float("nan")
        if self.one_empty:
            return float("inf"), float("inf")
        pred_w, ref_w = self._weights()
        return (
            float(np.dot(self.pred_to_ref, pred_w) / pred_w.sum()),
            float(np.dot(self.ref_to_pred, ref_w) / ref_w.sum()),
        )

    def surface_dice(self, tolerance: float) -> float:
        """NSD: (area-weighted) fraction of both surfaces within ``tolerance`` mm of the other."""
        check_tolerance(tolerance)
        if self.both_empty:
            return float("nan")
        if self.one_empty:
            return 0.0
        pred_w, ref_w = self._weights()
        within = (
            pred_w[self.pred_to_ref <= tolerance].sum() + ref_w[self.ref_to_pred <= tolerance].sum()
        )
        return float(within / (pred_w.sum() + ref_w.sum()))

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pred_areas is None or self.ref_areas is None:
            return np.ones(self.pred_to_ref.size), np.ones(self.ref_to_pred.size)
        return self.pred_areas, self.ref_areas


def _percentile(distances: np.ndarray, weights: np.ndarray | None, percentile: float) -> float:
    """numpy's linear percentile, or for weighted elements DeepMind's rule: the smallest
    distance whose cumulative area fraction reaches ``percentile``."""
    if weights is None:
        return float(np.percentile(distances, percentile))
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    index = min(int(np.searchsorted(cumulative, percentile / 100.0)), distances.size - 1)
    return float(distances[order][index])


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
    border: np.ndarray = mask & ~interior
    return border


def boundary_faces(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Centres (mm) and areas (mm²; lengths in 2D) of the voxel faces between mask and background.

    Args:
        mask: boolean array ``(X, Y)`` or ``(X, Y, Z)``; outside the array is background.
        spacing: voxel size in mm per axis.

    Returns:
        ``(centres, areas)`` of shapes ``(N, ndim)`` and ``(N,)``; a face between voxels
        ``i-1`` and ``i`` along an axis sits at index ``i - 0.5``.
    """
    padded = np.pad(mask, 1, constant_values=False).view(np.int8)
    scale = np.asarray(spacing, dtype=np.float64)
    centres, areas = [], []
    for axis in range(mask.ndim):
        index = [slice(1, -1)] * mask.ndim
        index[axis] = slice(None)
        faces = np.argwhere(np.diff(padded[tuple(index)], axis=axis) != 0).astype(np.float64)
        faces[:, axis] -= 0.5
        centres.append(faces * scale)
        areas.append(np.full(len(faces), np.prod(np.delete(scale, axis))))
    return np.concatenate(centres), np.concatenate(areas)


def _directed_value(
    distances: np.ndarray, areas: np.ndarray | None, percentile: float | None
) -> float:
    """The maximum (``percentile=None``) or a percentile of one directed distance set."""
    if percentile is None:
        return float(distances.max())
    return _percentile(distances, areas, percentile)


def _directed(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """Distance of each row of ``points_from`` to the nearest row of ``points_to``."""
    distances, _ = cKDTree(points_to).query(points_from, k=1)
    return np.asarray(distances, dtype=np.float64)


def _surface_points(
    mask: np.ndarray, spacing: tuple[float, ...], surface: SurfaceKind
) -> tuple[np.ndarray, np.ndarray | None]:
    """Surface element positions (mm) of a non-empty mask, and their areas (``None``: voxels)."""
    if surface == "surfels":
        return surfels(mask, spacing)
    if surface == "faces":
        return boundary_faces(mask, spacing)
    if surface == "voxels":
        return np.argwhere(border_voxels(mask)) * np.asarray(spacing, np.float64), None
    raise ConfigError(f"expected surface one of {SURFACE_KINDS}, got {surface!r}")


def surface_distances_cropped(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    surface: SurfaceKind = "surfels",
) -> SurfaceDistances:
    """:func:`surface_distances` on boolean masks already cropped to their joint extent."""
    if surface not in SURFACE_KINDS:
        raise ConfigError(f"expected surface one of {SURFACE_KINDS}, got {surface!r}")
    pred_empty, ref_empty = not pred.any(), not ref.any()
    empty = np.zeros(0)
    if pred_empty or ref_empty:
        return SurfaceDistances(empty, empty, pred_empty, ref_empty)
    pred_points, pred_areas = _surface_points(pred, spacing, surface)
    ref_points, ref_areas = _surface_points(ref, spacing, surface)
    return SurfaceDistances(
        _directed(pred_points, ref_points),
        _directed(ref_points, pred_points),
        False,
        False,
        pred_areas,
        ref_areas,
    )


def surface_distances(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    *,
    surface: SurfaceKind = "surfels",
) -> SurfaceDistances:
    """Extract both surfaces once and compute both directed distance sets (mm).

    Args:
        pred: predicted binary mask (bool or 0/1), numpy array or torch tensor.
        ref: reference binary mask of the same shape.
        spacing: voxel size in mm per axis (a number for isotropic; ``None`` = 1 mm).
        surface: ``"surfels"`` (default: DeepMind's area-weighted surfels on the voxel
            corners), ``"voxels"`` (border-voxel centres, each counted once: MONAI's
            definition) or ``"faces"`` (area-weighted voxel faces); see the module docs.

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
    return surface_distances_cropped(pred_mask[box], ref_mask[box], voxel_size, surface)


def hausdorff_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    *,
    percentile: float | None = None,
    mode: str = "symmetric",
    surface: SurfaceKind = "surfels",
) -> float:
    """Hausdorff distance in mm, or its robust percentile variant (``percentile=95``: HD95).

    Args:
        pred: predicted binary mask.
        ref: reference binary mask.
        spacing: voxel size in mm per axis.
        percentile: ``None`` for the maximum, else a percentile in [0, 100].
        mode: ``"symmetric"`` (default: the larger of the two directed values, MONAI
            ``directed=False``, DeepMind), ``"forward"`` (prediction → reference, MONAI
            ``directed=True``), ``"backward"`` (reference → prediction) or ``"pooled"``
            (percentile of both distance sets together). ``"directed"``: deprecated name of
            ``"symmetric"`` (DeprecationWarning).
        surface: ``"surfels"``, ``"voxels"`` or ``"faces"`` (see :func:`surface_distances`).

    Returns:
        Distance in mm; ``nan`` when both masks are empty, ``inf`` when one is.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> pred = np.zeros((10, 10, 10), bool)
        >>> pred[2:6, 2:6, 2:6] = True
        >>> ref = np.roll(pred, 1, axis=0)  # shifted by one voxel along the 2 mm axis
        >>> spacing = (2.0, 1.0, 1.0)
        >>> hausdorff_distance(pred, ref, spacing), hausdorff_distance(pred, ref, spacing, percentile=95)
        (2.0, 2.0)
    """
    return surface_distances(pred, ref, spacing, surface=surface).hausdorff(percentile, mode=mode)


def average_symmetric_surface_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    *,
    surface: SurfaceKind = "surfels",
) -> float:
    """ASSD in mm: mean over both directed distance sets (``nan`` both empty, ``inf`` one empty).

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> pred = np.zeros((10, 10, 10), bool)
        >>> pred[2:6, 2:6, 2:6] = True
        >>> ref = np.roll(pred, 1, axis=0)  # shifted by one voxel along the 2 mm axis
        >>> round(average_symmetric_surface_distance(pred, ref, (2.0, 1.0, 1.0)), 3)
        0.423
    """
    return surface_distances(pred, ref, spacing, surface=surface).average_symmetric()


def mean_surface_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    *,
    surface: SurfaceKind = "surfels",
) -> tuple[float, float]:
    """Mean surface distance (mm) prediction→reference and reference→prediction.

    With surfels (default) these are DeepMind's ``compute_average_surface_distance`` pair
    (in the order prediction→reference, reference→prediction).
    """
    return surface_distances(pred, ref, spacing, surface=surface).mean_directed()


def normalized_surface_dice(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    tolerance: float = 1.0,
    *,
    surface: SurfaceKind = "surfels",
) -> float:
    """Normalised surface Dice at ``tolerance`` mm.

    Default ``surface="surfels"``: (area of prediction surfels within τ of the reference
    surface + area of reference surfels within τ of the prediction surface) / total surfel
    area, DeepMind's definition. ``surface="voxels"`` counts border voxels (MONAI);
    ``surface="faces"`` weights voxel faces by their area. An element exactly at ``tolerance``
    counts as within.

    Returns:
        Value in [0, 1]; ``nan`` when both masks are empty, ``0`` when exactly one is.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.

    Example:
        >>> pred = np.zeros((10, 10, 10), bool)
        >>> pred[2:6, 2:6, 2:6] = True
        >>> ref = np.roll(pred, 1, axis=0)  # shifted by one voxel along the 2 mm axis
        >>> round(normalized_surface_dice(pred, ref, (2.0, 1.0, 1.0), tolerance=1.0), 3)
        0.818
        >>> normalized_surface_dice(pred, ref, (2.0, 1.0, 1.0), tolerance=2.0)
        1.0
    """
    check_tolerance(tolerance)
    return surface_distances(pred, ref, spacing, surface=surface).surface_dice(tolerance)
