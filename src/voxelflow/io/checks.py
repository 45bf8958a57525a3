"""Content checks shared by the readers and writers: non-finite voxels, label values, affines.

Every check names the file it is looking at, so a bad volume in a dataset of thousands can be
found from the message alone.

Example:
    >>> import numpy as np
    >>> check_label_values(np.array([[0.0, 1.0], [2.0, 1.0]]), source="seg.nii.gz").dtype
    dtype('uint8')
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from voxelflow.errors import ConfigError, DataError

NonFinitePolicy = Literal["warn", "error", "ignore", "zero"]
NON_FINITE_POLICIES = ("warn", "error", "ignore", "zero")

#: numpy dtypes torch cannot hold (or barely supports) → the dtype they are widened to.
_TORCH_WIDENING: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.uint16): np.dtype(np.int32),
    np.dtype(np.uint32): np.dtype(np.int64),
    np.dtype(np.uint64): np.dtype(np.int64),
    np.dtype(np.bool_): np.dtype(np.uint8),
    np.dtype(np.float16): np.dtype(np.float32),
}


def check_non_finite(array: np.ndarray, *, policy: str = "warn", source: str = "") -> np.ndarray:
    """Count NaN/Inf voxels and act on them according to ``policy``.

    Args:
        array: image data (any shape).
        policy: ``"warn"`` (warn with the count, keep values), ``"error"`` (raise),
            ``"ignore"`` (do nothing) or ``"zero"`` (replace them by 0 and warn).
        source: the file name used in messages.

    Returns:
        The array (a copy with zeros when ``policy="zero"`` and non-finite voxels exist).

    Raises:
        ConfigError: unknown policy.
        DataError: non-finite voxels with ``policy="error"``.
    """
    if policy not in NON_FINITE_POLICIES:
        raise ConfigError(f"non_finite: expected one of {NON_FINITE_POLICIES}, got {policy!r}")
    if policy == "ignore" or not np.issubdtype(array.dtype, np.inexact):
        return array
    finite = np.isfinite(array)
    count = int(finite.size - np.count_nonzero(finite))
    if count == 0:
        return array
    nans = int(np.count_nonzero(np.isnan(array)))
    what = f"{source!r} has {count} non-finite voxels ({nans} NaN, {count - nans} ±Inf) of {array.size}"
    if policy == "error":
        raise DataError(f"expected finite voxel values, but {what}")
    if policy == "zero":
        warnings.warn(f"{what}; replaced them by 0", UserWarning, stacklevel=3)
        return np.where(finite, array, 0).astype(array.dtype)
    warnings.warn(
        f"{what}; pass non_finite='zero' to replace them or 'error' to refuse such files",
        UserWarning,
        stacklevel=3,
    )
    return array


def smallest_integer_dtype(low: float, high: float) -> np.dtype[Any]:
    """The smallest of uint8, int16, int32, int64 that holds every integer in ``[low, high]``."""
    for candidate in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    raise DataError(f"expected label values that fit in int64, got range [{low}, {high}]")


def check_label_values(array: np.ndarray, *, source: str = "") -> np.ndarray:
    """Check that a label map holds integers and return it with an integer dtype.

    Integer arrays are returned unchanged. Floating arrays must hold whole, finite numbers
    (within 1e-3, to absorb scaled storage); they are rounded into the smallest integer dtype.

    Args:
        array: label data (any shape).
        source: the file name used in messages.

    Returns:
        An integer array with the same shape.

    Raises:
        DataError: non-integer or non-finite values, naming the file and an example value.
    """
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"expected integer labels in {source!r}, got dtype {array.dtype}")
    finite = np.isfinite(array)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        raise DataError(f"expected integer labels in {source!r}, got {count} NaN/Inf voxels")
    rounded: np.ndarray = np.rint(array)
    off = np.abs(array - rounded) > 1e-3
    if off.any():
        example = float(array[off].flat[0])
        raise DataError(
            f"expected integer label values in {source!r} (kind='label'), got "
            f"{int(np.count_nonzero(off))} non-integer voxels such as {example:g}; "
            "is this an intensity image? read it with kind='intensity'"
        )
    if rounded.size == 0:
        return rounded.astype(np.uint8)
    return rounded.astype(smallest_integer_dtype(float(rounded.min()), float(rounded.max())))


def torch_compatible(array: np.ndarray) -> np.ndarray:
    """Widen dtypes torch cannot hold (uint16/32/64, bool, float16) and make the array native-endian."""
    target = _TORCH_WIDENING.get(array.dtype.newbyteorder("="), array.dtype.newbyteorder("="))
    if array.dtype != target:
        array = array.astype(target)
    return np.ascontiguousarray(array)


def affine_difference(
    first: np.ndarray,
    second: np.ndarray,
    *,
    tolerance_mm: float = 1e-3,
    tolerance_rad: float = 1e-4,
) -> str | None:
    """Describe how two 4×4 affines differ beyond tolerance, or return ``None``.

    Spacing (column norms) and translation are compared in mm, axis directions in radians.
    """
    zooms_a = np.linalg.norm(first[:3, :3], axis=0)
    zooms_b = np.linalg.norm(second[:3, :3], axis=0)
    if np.max(np.abs(zooms_a - zooms_b)) > tolerance_mm:
        return f"spacing {tuple(zooms_a.round(5))} vs {tuple(zooms_b.round(5))} mm"
    dirs_a = first[:3, :3] / np.where(zooms_a == 0, 1.0, zooms_a)
    dirs_b = second[:3, :3] / np.where(zooms_b == 0, 1.0, zooms_b)
    angle = float(np.max(np.arccos(np.clip(np.sum(dirs_a * dirs_b, axis=0), -1.0, 1.0))))
    if angle > tolerance_rad:
        return f"axis directions differ by {angle:.3g} rad"
    shift = float(np.linalg.norm(first[:3, 3] - second[:3, 3]))
    if shift > tolerance_mm:
        return f"origins differ by {shift:.4g} mm"
    return None
