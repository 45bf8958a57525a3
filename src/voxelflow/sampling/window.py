"""Window sizes, placement and reading: only a window's bytes are read from a memmap.

A *window* is a box of voxels on a subject's grid, given by its ``start`` (may be negative or run
past the end: the outside is padded) and its ``size``. Every role of a subject is read with the
same centre voxel; a role may have its own (smaller) size, e.g. the label window of a network
with valid convolutions. The centre voxel of a window of size ``w`` starting at ``s`` is
``s + w // 2``; the geometric centre is ``s + (w - 1) / 2``.

Example:
    >>> import numpy as np
    >>> array = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    >>> read_window(array, (2, -1), (4, 3), pad_value=-1.0).shape
    (2, 4, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType

import numpy as np

from voxelflow.errors import ShapeError
from voxelflow.transforms.resample import read_window
from voxelflow.types import VoxelIndex

__all__ = [
    "centre_crop",
    "clamp_centre",
    "read_window",
    "resolve_window",
    "valid_centre_bounds",
    "window_start",
]


def resolve_window(
    window: Sequence[int],
    spatial_shape: Sequence[int],
    *,
    what: str = "window",
    subject: str | None = None,
) -> tuple[int, ...]:
    """Turn a configured window into concrete sizes for one image.

    Args:
        window: size per spatial axis; ``0`` or ``-1`` means the whole axis.
        spatial_shape: the image's spatial shape.
        what: name used in error messages (``"window"``, ``"label_window"`` ...).
        subject: subject name used in error messages.

    Returns:
        The window size per axis (may exceed the image: the outside is padded).

    Raises:
        ShapeError: wrong number of axes or a size below -1.
    """
    where = f" for subject {subject!r}" if subject else ""
    if len(window) != len(spatial_shape):
        raise ShapeError(
            f"expected a {what} of {len(spatial_shape)} sizes (image spatial shape "
            f"{tuple(spatial_shape)}){where}, got {tuple(window)} ({len(window)} sizes)"
        )
    sizes = []
    for size, extent in zip(window, spatial_shape):
        if int(size) < -1:
            raise ShapeError(
                f"expected {what} sizes >= 1 (or 0/-1 for the whole axis){where}, got {tuple(window)}"
            )
        sizes.append(int(extent) if int(size) in (0, -1) else int(size))
    return tuple(sizes)


def window_start(centre: VoxelIndex, size: VoxelIndex) -> np.ndarray:
    """Start of the window of ``size`` whose centre voxel is ``centre`` (``start + size // 2``)."""
    return np.asarray(centre, dtype=np.int64) - np.asarray(size, dtype=np.int64) // 2


def valid_centre_bounds(
    size: Sequence[int], spatial_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive lowest and highest centre voxel keeping the window inside the image.

    On an axis where the window is larger than the image the only valid centre is the one
    centring the image in the window (equal padding on both sides).
    """
    size_arr = np.asarray(size, dtype=np.int64)
    shape_arr = np.asarray(spatial_shape, dtype=np.int64)
    low = size_arr // 2
    high = shape_arr - size_arr + size_arr // 2
    too_big = size_arr > shape_arr
    centred = (shape_arr - size_arr) // 2 + size_arr // 2
    low = np.where(too_big, centred, low)
    high = np.where(too_big, centred, high)
    return low, high


def clamp_centre(
    centre: VoxelIndex, size: Sequence[int], spatial_shape: Sequence[int]
) -> np.ndarray:
    """Move ``centre`` the least so that the window of ``size`` lies inside the image."""
    low, high = valid_centre_bounds(size, spatial_shape)
    return np.clip(np.asarray(centre, dtype=np.int64), low, high)


def centre_crop(data: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centred crop of the last ``len(size)`` axes (same centre voxel convention as windows)."""
    spatial = data.shape[-len(size) :]
    starts = [s // 2 - w // 2 for s, w in zip(spatial, size)]
    index = tuple(slice(b, b + w) for b, w in zip(starts, size))
    key: tuple[EllipsisType | slice, ...] = (..., *index)  # typed: mypy misreads it inline
    return data[key]
