"""Helpers shared by several applications (one copy, imported by each application package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from voxelflow.errors import DataError

if TYPE_CHECKING:
    from voxelflow.io.image import Image


def pair_cases(
    predictions: Mapping[str, Image], references: Mapping[str, Image]
) -> dict[str, tuple[Image, Image]]:
    """Subject → (prediction, reference), sorted by subject (the API's in-memory evaluations).

    Raises:
        DataError: a prediction without reference or the reverse (both lists named).
    """
    missing = sorted(set(predictions) - set(references))
    unused = sorted(set(references) - set(predictions))
    if missing or unused:
        raise DataError(
            f"expected a reference for every prediction and the reverse; "
            f"no reference for {missing or 'none'}, no prediction for {unused or 'none'}"
        )
    return {name: (predictions[name], references[name]) for name in sorted(predictions)}


def resized_affine(affine: np.ndarray, shape: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Affine of ``size`` voxels covering the field of view of a ``shape`` grid.

    Matches :func:`voxelflow.sampling.resize.resize_volume` (``align_corners=False``): voxel
    ``i`` of the resized grid is centred at ``(i + 0.5) * shape / size - 0.5`` of the original.
    ``shape`` may hold more axes than ``size`` (a channel-free prefix is used).

    Args:
        affine: 4×4 affine of the original grid.
        shape: original spatial shape (2 or 3 axes).
        size: resized spatial shape.

    Returns:
        The 4×4 affine of the resized grid.

    Example:
        >>> resized_affine(np.eye(4), (64, 64, 64), (32, 32, 32))[0].tolist()
        [2.0, 0.0, 0.0, 0.5]
    """
    dims = len(size)
    scale = np.asarray(shape, dtype=np.float64)[:dims] / np.asarray(size, dtype=np.float64)
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = out[:3, 3] + out[:3, :dims] @ ((scale - 1.0) / 2.0)
    out[:3, :dims] = out[:3, :dims] * scale
    return out


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """The middle slice along the last axis of a 3D volume (a 2D image is returned as is).

    Shape:
        ``(X, Y, Z)`` → ``(X, Y)``; ``(X, Y)`` unchanged.
    """
    array = np.asarray(volume)
    return array[..., array.shape[-1] // 2] if array.ndim == 3 else array
