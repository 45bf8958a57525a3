"""Input checks shared by the metric functions: arrays, binary masks, spacing, bounding boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from voxelflow.errors import DataError, ShapeError
from voxelflow.types import ArrayLike


def to_numpy(array: ArrayLike) -> np.ndarray:
    """A numpy view of a numpy array or a (CPU or GPU) torch tensor."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def as_mask(array: ArrayLike, *, name: str = "mask") -> np.ndarray:
    """A boolean mask from a bool array or an array whose values are only 0 and 1.

    Raises:
        DataError: when the array holds other values (a label map must be compared to a label
            first: ``label_map == k``).
    """
    values = to_numpy(array)
    if values.dtype == np.bool_:
        return values
    mask: np.ndarray = values != 0
    if np.count_nonzero(mask) != np.count_nonzero(values == 1):
        found = np.unique(values)[:6]
        raise DataError(
            f"expected {name} to be a binary mask (bool or values 0/1), got values {found.tolist()}; "
            "for a label map pass `label_map == k`"
        )
    return mask


def check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    """Raise :class:`ShapeError` unless prediction and reference have one 2D or 3D shape."""
    if pred.shape != ref.shape:
        raise ShapeError(
            f"expected prediction and reference of the same shape, got {pred.shape} and {ref.shape}"
        )
    if pred.ndim not in (2, 3):
        raise ShapeError(f"expected a 2D (X, Y) or 3D (X, Y, Z) mask, got shape {pred.shape}")


def as_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel spacing in mm as a tuple of ``ndim`` positive numbers (``None`` means 1 mm).

    Raises:
        ShapeError: when the number of values differs from ``ndim``.
        DataError: when a value is not positive and finite.
    """
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        values = (float(cast(float, spacing)),) * ndim  # np.isscalar: the float of the union
    else:
        values = tuple(float(s) for s in cast(Sequence[float], spacing))
    if len(values) != ndim:
        raise ShapeError(f"expected {ndim} spacing values (one per spatial axis), got {values}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(f"expected positive finite spacing in mm, got {values}")
    return values


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels as slices, or ``None`` for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def union_box(
    first: tuple[slice, ...] | None, second: tuple[slice, ...] | None
) -> tuple[slice, ...] | None:
    """Smallest box holding both boxes (``None`` when both are ``None``)."""
    if first is None:
        return second
    if second is None:
        return first
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(first, second))


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is zero (0/0 is undefined)."""
    return float(numerator) / float(denominator) if denominator else float("nan")
