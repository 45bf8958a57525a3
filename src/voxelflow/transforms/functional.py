"""Pure geometry operations on ``(C, *spatial)`` arrays and their 4×4 affines.

Every function takes the data (a numpy array or a torch tensor, returned as the same type) and,
where the grid changes, the voxel-to-world affine, and returns the new data together with the
new affine, so that world coordinates of the content never move:

* :func:`reorient` permutes and flips axes only (exact, no interpolation; nibabel's ``ornt``);
* :func:`resample` maps data onto any target grid (shape + affine) with scipy.ndimage;
* :func:`resample_to_spacing` / :func:`spacing_grid` choose a target grid with a new spacing;
* :func:`crop` / :func:`pad` cut or extend the grid; :func:`foreground_bounding_box` finds a box.

Interpolation uses :func:`scipy.ndimage.affine_transform` rather than SimpleITK: it works on
numpy arrays in voxel order (no LPS/RAS or axis-order conversion), accepts any voxel-to-voxel
matrix (so the inverse of a preprocessing step is the same call with the grids swapped) and
offers linear (order 1), cubic B-spline (order 3, with prefilter) and nearest (order 0).
Points outside the source grid take the nearest edge value (``mode="nearest"``), so resampling
never darkens borders; use :func:`pad` explicitly when a fill value is wanted.

Example:
    >>> data = np.zeros((1, 4, 5, 6), dtype=np.float32)
    >>> out, affine, _ = reorient(data, np.diag([-1.0, 1.0, 1.0, 1.0]), "RAS")
    >>> out.shape, nib.aff2axcodes(affine)
    ((1, 4, 5, 6), ('R', 'A', 'S'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from voxelflow.errors import ShapeError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
Interpolation = Literal["nearest", "linear", "bspline"]
INTERPOLATION_ORDER: dict[str, int] = {"nearest": 0, "linear": 1, "bspline": 3}


def _as_numpy(data: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def _like(result: np.ndarray, template: ArrayT) -> ArrayT:
    if isinstance(template, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(result)).to(template.device)
    return result


def _check_volume(data: np.ndarray | torch.Tensor, name: str = "data") -> int:
    if data.ndim not in (3, 4):
        raise ShapeError(
            f"{name}: expected shape (C, X, Y) or (C, X, Y, Z), got {tuple(data.shape)}"
        )
    return data.ndim - 1


def _ornt_3d(affine: np.ndarray, spatial_dims: int) -> np.ndarray:
    ornt = nib.orientations.io_orientation(affine)
    return ornt[:spatial_dims]


def reorient(
    data: ArrayT, affine: np.ndarray, axcodes: str
) -> tuple[ArrayT, np.ndarray, list[list[float]]]:
    """Permute and flip voxel axes so they point along ``axcodes`` (exact, no interpolation).

    Args:
        data: image ``(C, *spatial)``.
        affine: its 4×4 voxel-to-world affine.
        axcodes: target axis codes, e.g. ``"RAS"`` or ``"LPS"``. For a 2D image the slice axis
            keeps its direction: ``"RAS"`` on a coronal slice (slice axis A/P) means ``"RS"``;
            two in-plane codes may also be given.

    Returns:
        ``(data, affine, transform)``: the reoriented data, its affine (same world positions)
        and the nibabel orientation transform ``[[axis, flip], ...]`` that was applied (JSON
        friendly; invert with :func:`undo_reorient`).

    Raises:
        ShapeError: when ``data`` is not 2D/3D with channels.
        ValueError: when ``axcodes`` is not a valid orientation.

    Shape:
        data: ``(C, *spatial)`` → ``(C, *permuted spatial)``
    """
    spatial_dims: int = _check_volume(data)
    transform = orientation_transform(affine, axcodes, spatial_dims=spatial_dims)
    return apply_orientation(data, affine, transform)


def orientation_transform(
    affine: np.ndarray, axcodes: str, *, spatial_dims: int = 3
) -> list[list[float]]:
    """The orientation transform ``[[new_axis, flip], ...]`` taking ``affine``'s axes to ``axcodes``.

    For a 2D image (``spatial_dims=2``) the slice axis keeps its direction; see :func:`reorient`.

    Raises:
        ValueError: invalid or impossible axis codes.
    """
    codes = tuple(axcodes.upper())
    if len(codes) != 3 and not (len(codes) == 2 and spatial_dims == 2):
        raise ValueError(
            f"expected {spatial_dims} axis codes for a {spatial_dims}D image, got {axcodes!r}"
        )
    if spatial_dims == 2:
        codes = _codes_2d(codes, affine)
    current = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(current, target)
    return transform[:spatial_dims].tolist()


_AXIS_PAIR = {"L": "R", "R": "R", "P": "A", "A": "A", "I": "S", "S": "S"}


def _codes_2d(codes: tuple[str, ...], affine: np.ndarray) -> tuple[str, str, str]:
    """Target codes of a 2D image: the slice axis keeps its direction.

    Three codes (``"RAS"``) are reduced to the two whose directions lie in the image plane,
    in the given order; two codes must not name the slice axis's direction.
    """
    slice_code = nib.aff2axcodes(affine)[2]
    if len(codes) == 3:
        codes = tuple(c for c in codes if _AXIS_PAIR[c] != _AXIS_PAIR[slice_code])
    if len(codes) != 2 or any(_AXIS_PAIR[c] == _AXIS_PAIR[slice_code] for c in codes):
        raise ValueError(
            f"expected 2 in-plane axis codes for a 2D image whose slice axis points {slice_code}, "
            f"got {''.join(codes)!r}"
        )
    return (codes[0], codes[1], slice_code)


def apply_orientation(
    data: ArrayT, affine: np.ndarray, transform: np.ndarray | Sequence[Sequence[float]]
) -> tuple[ArrayT, np.ndarray, list[list[float]]]:
    """Apply a nibabel orientation transform ``[[new_axis, flip], ...]`` to data and affine.

    Args:
        data: image ``(C, *spatial)``.
        affine: its 4×4 affine.
        transform: one row per spatial axis (as returned by :func:`reorient`).

    Returns:
        ``(data, affine, transform)`` as in :func:`reorient`.
    """
    spatial_dims: int = _check_volume(data)
    ornt = np.asarray(transform, dtype=np.float64).reshape(-1, 2)
    if ornt.shape[0] != spatial_dims:
        raise ShapeError(f"expected an orientation with {spatial_dims} rows, got {ornt.shape[0]}")
    array = _as_numpy(data)
    spatial_shape: tuple[int, ...] = array.shape[1:]
    moved = np.stack([nib.orientations.apply_orientation(c, ornt) for c in array])
    full = np.vstack([ornt, *([[i, 1.0]] for i in range(spatial_dims, 3))])
    full_shape = (*spatial_shape, *([1] * (3 - spatial_dims)))
    new_affine = affine @ nib.orientations.inv_ornt_aff(full, full_shape)
    return _like(np.ascontiguousarray(moved), data), new_affine, ornt.tolist()


def undo_reorient(
    data: ArrayT, affine: np.ndarray, transform: Sequence[Sequence[float]]
) -> tuple[ArrayT, np.ndarray]:
    """Undo :func:`reorient` given the transform it returned.

    Returns:
        ``(data, affine)`` in the original axis order.
    """
    ornt = np.asarray(transform, dtype=np.float64)
    inverse = np.zeros_like(ornt)
    for source_axis, (target_axis, flip) in enumerate(ornt):
        inverse[int(target_axis)] = (source_axis, flip)
    out, new_affine, _ = apply_orientation(data, affine, inverse)
    return out, new_affine


def spacing_of(affine: np.ndarray, spatial_dims: int = 3) -> np.ndarray:
    """Voxel size (mm) along each spatial axis: the column norms of the affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))[:spatial_dims]


def spacing_grid(
    shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]
) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid covering the same field of view with another voxel size.

    Axis directions are kept; the outer corner of voxel 0 (at index -0.5) stays in place and the
    new shape is ``round(shape * old_spacing / new_spacing)`` (at least 1).

    Args:
        shape: spatial shape ``(X, Y[, Z])``.
        affine: 4×4 affine of that grid.
        spacing: target voxel size in mm, one value per spatial axis.

    Returns:
        ``(new_shape, new_affine)``.
    """
    dims = len(shape)
    if len(spacing) != dims:
        raise ShapeError(f"expected {dims} spacing values, got {list(spacing)}")
    old = spacing_of(affine, 3)
    new = np.array([*spacing, *old[dims:]], dtype=np.float64)
    if np.any(new <= 0):
        raise ValueError(f"expected positive spacing, got {list(spacing)}")
    scale = new / np.where(old == 0, 1.0, old)
    new_shape = tuple(max(1, round(s * o / n)) for s, o, n in zip(shape, old[:dims], new[:dims]))
    new_affine = np.array(affine, dtype=np.float64, copy=True)
    new_affine[:3, :3] = affine[:3, :3] * scale
    corner_shift = (scale - 1.0) / 2.0  # keep the corner at voxel index -0.5
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ corner_shift
    return new_shape, new_affine


def resample(
    data: ArrayT,
    affine: np.ndarray,
    *,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    interpolation: Interpolation = "linear",
) -> ArrayT:
    """Resample ``data`` onto the grid ``(target_shape, target_affine)``.

    Args:
        data: image ``(C, *spatial)``; integer data is returned as float unless ``nearest``.
        affine: its 4×4 affine.
        target_shape: spatial shape of the output grid.
        target_affine: 4×4 affine of the output grid.
        interpolation: ``"nearest"``, ``"linear"`` or ``"bspline"`` (cubic).

    Returns:
        the data on the target grid, ``(C, *target_shape)``.

    Shape:
        data: ``(C, *spatial)`` → ``(C, *target_shape)``
    """
    spatial_dims: int = _check_volume(data)
    if len(target_shape) != spatial_dims:
        raise ShapeError(f"expected a {spatial_dims}D target shape, got {tuple(target_shape)}")
    order = INTERPOLATION_ORDER[interpolation]
    voxel_map = np.linalg.solve(
        np.asarray(affine, np.float64), np.asarray(target_affine, np.float64)
    )
    keep = [*range(spatial_dims), 3]
    matrix = voxel_map[np.ix_(keep, keep)]
    array = _as_numpy(data)
    if order > 0 and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if order == 1 and array.dtype == np.float32 and _axis_aligned(matrix):
        return _like(_linear_axis_aligned(array, matrix, tuple(target_shape)), data)
    out = np.empty((len(array), *target_shape), dtype=array.dtype)  # filled in place, no stack
    for channel, target in zip(array, out):
        ndimage.affine_transform(channel, matrix, output=target, order=order, mode="nearest")
    return _like(out, data)


def _axis_aligned(matrix: np.ndarray) -> bool:
    """Whether the voxel-to-voxel map only scales, flips and shifts each axis (no rotation or
    axis swap): linear interpolation is then separable, one axis at a time."""
    linear = matrix[:-1, :-1]
    return bool(np.all(linear[~np.eye(len(linear), dtype=bool)] == 0))


def _linear_axis_aligned(
    array: np.ndarray, matrix: np.ndarray, target_shape: tuple[int, ...]
) -> np.ndarray:
    """Linear resampling under a diagonal voxel map as successive 1-D interpolations (equal to
    ``affine_transform(order=1, mode="nearest")`` up to float32 rounding, many times faster).

    Axes that shrink go first, so the intermediate volumes stay small.

    Shape:
        array ``(C, *spatial)`` float32 → ``(C, *target_shape)``
    """
    dims = len(target_shape)
    scale, shift = np.diag(matrix)[:dims], matrix[:dims, dims]
    result = torch.from_numpy(np.ascontiguousarray(array))
    for axis in sorted(range(dims), key=lambda a: target_shape[a] / array.shape[1 + a]):
        coords = scale[axis] * np.arange(target_shape[axis], dtype=np.float64) + shift[axis]
        result = _linear_along(result, 1 + axis, coords)
    return result.numpy()


def _linear_along(data: torch.Tensor, axis: int, coords: np.ndarray) -> torch.Tensor:
    """``data`` linearly interpolated at ``coords`` (voxels) along ``axis``, edges repeated.

    Computed in slabs of another axis (temporaries stay a slab, not a volume).
    """
    size = data.shape[axis]
    if len(coords) == size and np.array_equal(coords, np.arange(size)):
        return data
    coords = np.clip(coords, 0, size - 1)
    low = np.minimum(np.floor(coords), max(size - 2, 0)).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    view = [1] * data.ndim
    view[axis] = len(coords)
    weight = torch.from_numpy((coords - low).astype(np.float32)).view(view)
    low_index, high_index = torch.from_numpy(low), torch.from_numpy(high)
    shape = list(data.shape)
    shape[axis] = len(coords)
    out = data.new_empty(shape)
    other = 1 if axis != 1 else (2 if data.ndim > 3 else 0)
    for first in range(0, data.shape[other], 8):
        part = data.narrow(other, first, min(8, data.shape[other] - first))
        torch.lerp(part.index_select(axis, low_index), part.index_select(axis, high_index),
                   weight, out=out.narrow(other, first, part.shape[other]))
    return out


def resample_labels_partial_volume(
    data: ArrayT,
    affine: np.ndarray,
    *,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
) -> ArrayT:
    """Resample a label map by linear interpolation of each value's one-hot mask, then argmax.

    Smoother than nearest neighbour when the spacing changes much; values are preserved.

    Shape:
        data: ``(C, *spatial)`` integer labels → ``(C, *target_shape)``
    """
    array = _as_numpy(data)
    values = np.unique(array)
    channels = []
    for channel in array:
        scores = np.stack(
            [
                resample(
                    (channel == value)[None].astype(np.float32),
                    affine,
                    target_shape=target_shape,
                    target_affine=target_affine,
                    interpolation="linear",
                )[0]
                for value in values
            ]
        )
        channels.append(values[np.argmax(scores, axis=0)])
    return _like(np.stack(channels).astype(array.dtype), data)


def foreground_bounding_box(
    mask: np.ndarray | torch.Tensor, *, margin: int | Sequence[int] = 0
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Bounding box ``(start, stop)`` of the true voxels of a spatial mask, grown by ``margin``.

    Args:
        mask: boolean array ``(*spatial)`` (reduce channels first, e.g. ``any(axis=0)``).
        margin: voxels added on each side (clipped to the grid), per axis or one for all.

    Returns:
        ``(start, stop)`` half-open voxel ranges, or ``None`` when the mask is empty.
    """
    array = _as_numpy(mask).astype(bool)
    if not array.any():
        return None
    margins = [margin] * array.ndim if isinstance(margin, int) else list(margin)
    start, stop = [], []
    for axis in range(array.ndim):
        other = tuple(a for a in range(array.ndim) if a != axis)
        hits = np.flatnonzero(array.any(axis=other))
        start.append(max(0, int(hits[0]) - margins[axis]))
        stop.append(min(array.shape[axis], int(hits[-1]) + 1 + margins[axis]))
    return tuple(start), tuple(stop)


def crop(
    data: ArrayT, affine: np.ndarray, start: Sequence[int], stop: Sequence[int]
) -> tuple[ArrayT, np.ndarray]:
    """Keep voxels ``start <= index < stop``; the affine's origin moves to voxel ``start``.

    Shape:
        data: ``(C, *spatial)`` → ``(C, *(stop - start))``
    """
    spatial_dims: int = _check_volume(data)
    if len(start) != spatial_dims or len(stop) != spatial_dims:
        raise ShapeError(
            f"expected {spatial_dims} start/stop values, got {list(start)}, {list(stop)}"
        )
    slices: tuple[slice, ...] = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    new_affine = np.array(affine, dtype=np.float64, copy=True)
    offset = np.array([*start, *([0] * (3 - spatial_dims))], dtype=np.float64)
    new_affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    return data[(slice(None), *slices)], new_affine


def pad(
    data: ArrayT,
    affine: np.ndarray,
    before: Sequence[int],
    after: Sequence[int],
    *,
    value: float = 0.0,
) -> tuple[ArrayT, np.ndarray]:
    """Add ``before``/``after`` voxels of ``value`` on each spatial axis; the affine follows.

    Shape:
        data: ``(C, *spatial)`` → ``(C, *(spatial + before + after))``
    """
    spatial_dims: int = _check_volume(data)
    if len(before) != spatial_dims or len(after) != spatial_dims:
        raise ShapeError(f"expected {spatial_dims} pad widths, got {list(before)}, {list(after)}")
    if min([*before, *after]) < 0:
        raise ValueError(f"expected non-negative pad widths, got {list(before)}, {list(after)}")
    array = _as_numpy(data)
    widths = [(0, 0), *((int(a), int(b)) for a, b in zip(before, after))]
    out = np.pad(array, widths, mode="constant", constant_values=value)
    new_affine = np.array(affine, dtype=np.float64, copy=True)
    offset = np.array([*before, *([0] * (3 - spatial_dims))], dtype=np.float64)
    new_affine[:3, 3] = affine[:3, 3] - affine[:3, :3] @ offset
    return _like(out, data), new_affine
