"""One resampling per patch: a composed spatial draw applied over the patch region only.

A :class:`SpatialDraw` maps an output offset ``o`` (mm, from the window's geometric centre) to a
source offset ``M @ o + t + d(o)`` (mm): ``M`` collects flips, rotations, scaling and shear,
``t`` the translation and ``d`` an optional elastic displacement field sampled on the output
window. :func:`resample_region` turns it into voxel coordinates, reads from the source array only
the bounding box of those coordinates (plus the interpolation margin; outside the image is
padded) and interpolates once: by default with the fused numba kernel of
:mod:`voxelflow.transforms.fused_resample` (linear or nearest, every role of a window in one
pass: :func:`resample_roles`), else ``torch.nn.functional.grid_sample`` (linear or nearest; the
reference the kernel is tested against, and the fallback) or, for cubic in 3D,
``scipy.ndimage.map_coordinates``. A pure flip is an exact copy (no interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.types import VoxelCoordinates, VoxelIndex

if TYPE_CHECKING:
    from voxelflow.transforms.base import Sample

INTERPOLATIONS = ("linear", "nearest", "cubic")


@dataclass
class SpatialDraw:
    """A sampled spatial transform in physical units, relative to the window centre.

    Args:
        matrix: ``(D, D)`` output offset (mm) → source offset (mm).
        translation: ``(D,)`` source shift in mm.
        displacement: ``(D, *window)`` extra source shift in mm per output voxel, or ``None``.

    Shape:
        displacement: ``(D, *window)``
    """

    matrix: np.ndarray
    translation: np.ndarray
    displacement: torch.Tensor | None = None

    @classmethod
    def identity(cls, spatial_dims: int) -> SpatialDraw:
        """The draw that changes nothing."""
        return cls(np.eye(spatial_dims), np.zeros(spatial_dims))

    def then(self, later: SpatialDraw) -> SpatialDraw:
        """Compose: ``self`` is applied first, then ``later`` (``f_self(f_later(o))``).

        The displacement of ``self`` is evaluated at the output position (exact when the elastic
        effect is the last spatial transform, a close approximation otherwise).
        """
        matrix = self.matrix @ later.matrix
        translation = self.matrix @ later.translation + self.translation
        displacement = self.displacement
        if later.displacement is not None:
            moved = torch.einsum(
                "ab,b...->a...",
                torch.as_tensor(self.matrix, dtype=later.displacement.dtype),
                later.displacement,
            )
            displacement = moved if displacement is None else displacement + moved
        return SpatialDraw(matrix, translation, displacement)

    def in_voxels(
        self, spacing: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
        """Matrix, translation and displacement in voxel units of a grid with ``spacing``."""
        scale = np.asarray(spacing, dtype=np.float64)
        matrix = (self.matrix * scale[None, :]) / scale[:, None]
        translation = self.translation / scale
        displacement = None
        if self.displacement is not None:
            view = (-1,) + (1,) * (self.displacement.ndim - 1)
            displacement = self.displacement / torch.as_tensor(
                scale, dtype=self.displacement.dtype
            ).view(view)
        return matrix, translation, displacement

    def is_identity(self) -> bool:
        """True when the draw moves nothing."""
        return (
            self.displacement is None
            and np.allclose(self.matrix, np.eye(len(self.matrix)))
            and np.allclose(self.translation, 0.0)
        )


@overload
def read_window(
    array: np.ndarray, start: VoxelIndex, size: VoxelIndex, *, pad_value: float = 0.0
) -> np.ndarray: ...
@overload
def read_window(
    array: torch.Tensor, start: VoxelIndex, size: VoxelIndex, *, pad_value: float = 0.0
) -> torch.Tensor: ...
def read_window(
    array: np.ndarray | torch.Tensor,
    start: VoxelIndex,
    size: VoxelIndex,
    *,
    pad_value: float = 0.0,
) -> np.ndarray | torch.Tensor:
    """Read a window ``(C, *size)`` from ``array`` ``(C, *spatial)``, padding outside the image.

    Only the window's bytes are touched: slicing an ``np.memmap`` reads those pages only.

    Args:
        array: source array (ndarray, memmap or tensor on any device), channels first.
        start: first voxel per spatial axis (negative = padded before the image).
        size: window size per spatial axis.
        pad_value: value of voxels outside the image (cast to the array's dtype).

    Returns:
        A new C-contiguous array (or tensor, for tensor input) of the array's dtype.

    Shape:
        array: ``(C, *spatial)``; returns ``(C, *size)``
    """
    spatial_shape = array.shape[1:]
    if len(start) != len(spatial_shape) or len(size) != len(spatial_shape):
        raise ShapeError(
            f"expected a window start and size of {len(spatial_shape)} values, got start "
            f"{tuple(start)} and size {tuple(size)}"
        )
    source, target, inside = [], [], True
    for first, extent, length in zip(start, spatial_shape, size):
        first, length = int(first), int(length)
        low, high = max(first, 0), min(first + length, extent)
        inside &= low == first and high == first + length
        source.append(slice(low, max(high, low)))
        target.append(slice(low - first, low - first + max(high - low, 0)))
    if inside:
        if isinstance(array, torch.Tensor):
            return array[(slice(None), *source)].clone(memory_format=torch.contiguous_format)
        # always a copy: never a view of a read-only memmap
        return np.array(array[(slice(None), *source)], order="C")
    shape = (array.shape[0], *[int(s) for s in size])
    if isinstance(array, torch.Tensor):
        padded = torch.full(shape, pad_value, dtype=array.dtype, device=array.device)
        padded[(slice(None), *target)] = array[(slice(None), *source)]
        return padded
    out = np.full(shape, pad_value, dtype=array.dtype)
    out[(slice(None), *target)] = array[(slice(None), *source)]
    return out


def resample_region(
    array: np.ndarray | torch.Tensor,
    draw: SpatialDraw,
    *,
    centre: VoxelCoordinates,
    first_offset: VoxelCoordinates,
    size: Sequence[int],
    spacing: Sequence[float],
    interpolation: str = "linear",
    pad_value: float = 0.0,
    kernel: str = "auto",
) -> torch.Tensor:
    """Resample one role's window from ``array`` under ``draw``, reading only the region needed.

    Args:
        array: source ``(C, *spatial)`` (memmap, ndarray or tensor), e.g. the whole cached image.
        draw: the composed spatial draw (mm).
        centre: geometric centre of the main window in source voxel coordinates.
        first_offset: offset (voxels) of this role window's first voxel from ``centre``.
        size: output window size.
        spacing: voxel spacing of the source grid (mm).
        interpolation: ``"linear"``, ``"nearest"`` (labels) or ``"cubic"``.
        pad_value: value outside the source image.
        kernel: ``"auto"``/``"numba"``: the fused numba kernel
            (:mod:`voxelflow.transforms.fused_resample`) where it applies; ``"torch"``:
            ``grid_sample`` (the reference).

    Returns:
        Tensor ``(C, *size)`` of the array's dtype (float32 for linear/cubic of integer input
        is not done: integer input keeps its dtype, so use ``"nearest"`` for labels).

    Shape:
        array: ``(C, *spatial)``; returns ``(C, *size)``
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"expected interpolation in {INTERPOLATIONS}, got {interpolation!r}")
    source = array.detach() if isinstance(array, torch.Tensor) else array
    matrix, translation, displacement = draw.in_voxels(spacing)
    if displacement is not None and tuple(displacement.shape[1:]) != tuple(size):
        displacement = _centre_crop_tensor(displacement, size)
    base = (
        np.asarray(centre, dtype=np.float64)
        + matrix @ np.asarray(first_offset, dtype=np.float64)
        + translation
    )
    # base + matrix @ j gives the source coordinate of output voxel j (before displacement)
    exact = _flip_only_start(matrix, base, displacement, size)
    if exact is not None:
        start, flips = exact
        window = torch.as_tensor(read_window(source, start, size, pad_value=pad_value))
        return torch.flip(window, [axis + 1 for axis in flips]) if flips else window
    from voxelflow.transforms.fused_resample import fused_resample, kernel_applies

    if kernel_applies(kernel, interpolation, source, len(size)):
        return fused_resample(
            [source], [interpolation], [pad_value], draw, centre=centre,
            first_offset=first_offset, size=size, spacing=spacing,
        )[0]  # fmt: skip
    low, high = _bounding_box(
        matrix, base, displacement, size, margin=2 if interpolation == "cubic" else 1
    )
    region = torch.as_tensor(read_window(source, low, high - low, pad_value=pad_value))
    return _interpolate(region, matrix, base - low, displacement, size, interpolation)


def resample_roles(
    arrays: Sequence[np.ndarray | torch.Tensor],
    draw: SpatialDraw,
    *,
    centre: VoxelCoordinates,
    first_offsets: Sequence[VoxelCoordinates],
    sizes: Sequence[Sequence[int]],
    spacing: Sequence[float],
    interpolations: Sequence[str],
    pad_values: Sequence[float],
    kernel: str = "auto",
) -> list[torch.Tensor]:
    """:func:`resample_region` for several roles of one window, fused where possible.

    Roles sharing a window (size and offset) go through the numba kernel together, one pass
    for an image and its label; the others, an exact flip, or a role the kernel does not handle
    (cubic, a CUDA tensor, ``kernel="torch"``) take :func:`resample_region` one by one.

    Shape:
        arrays[r]: ``(C_r, *spatial)``; returns[r]: ``(C_r, *sizes[r])``
    """
    from voxelflow.transforms.fused_resample import fused_resample, kernel_applies

    out: list[torch.Tensor | None] = [None] * len(arrays)
    groups: dict[tuple, list[int]] = {}
    for role, (size, offset) in enumerate(zip(sizes, first_offsets)):
        key = (tuple(int(s) for s in size), tuple(float(o) for o in offset))
        groups.setdefault(key, []).append(role)
    matrix, translation, displacement = draw.in_voxels(spacing)
    for (size, offset), roles in groups.items():
        base = np.asarray(centre, dtype=np.float64) + matrix @ np.asarray(offset) + translation
        fusable = len(roles) > 1 and _flip_only_start(matrix, base, displacement, size) is None
        fusable = fusable and all(
            kernel_applies(kernel, interpolations[r], arrays[r], len(size)) for r in roles
        )
        if fusable:
            results = fused_resample(
                [arrays[r] for r in roles], [interpolations[r] for r in roles],
                [pad_values[r] for r in roles], draw, centre=centre, first_offset=offset,
                size=size, spacing=spacing,
            )  # fmt: skip
            for role, result in zip(roles, results):
                out[role] = result
            continue
        for role in roles:
            out[role] = resample_region(
                arrays[role], draw, centre=centre, first_offset=offset, size=size,
                spacing=spacing, interpolation=interpolations[role],
                pad_value=pad_values[role], kernel=kernel,
            )  # fmt: skip
    return [tensor for tensor in out if tensor is not None]


def _centre_crop_tensor(field: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    spatial = field.shape[1:]
    index = tuple(slice(s // 2 - w // 2, s // 2 - w // 2 + w) for s, w in zip(spatial, size))
    return field[(slice(None), *index)]


def _flip_only_start(
    matrix: np.ndarray, base: np.ndarray, displacement: torch.Tensor | None, size: Sequence[int]
) -> tuple[np.ndarray, list[int]] | None:
    """Start and flipped axes when the draw is an exact voxel flip/shift, else ``None``."""
    if displacement is not None:
        return None
    diagonal = np.diag(matrix)
    if not (
        np.allclose(matrix, np.diag(diagonal), atol=1e-9)
        and np.allclose(np.abs(diagonal), 1.0, atol=1e-9)
    ):
        return None
    if not np.allclose(base, np.round(base), atol=1e-6):
        return None
    flips = [axis for axis, sign in enumerate(diagonal) if sign < 0]
    first = np.round(base).astype(np.int64)
    last = first + np.round(diagonal).astype(np.int64) * (np.asarray(size, dtype=np.int64) - 1)
    return np.minimum(first, last), flips


def _bounding_box(
    matrix: np.ndarray,
    base: np.ndarray,
    displacement: torch.Tensor | None,
    size: Sequence[int],
    *,
    margin: int,
) -> tuple[np.ndarray, np.ndarray]:
    extent = np.asarray(size, dtype=np.float64) - 1.0
    corners = np.array(np.meshgrid(*[[0.0, e] for e in extent], indexing="ij")).reshape(
        len(size), -1
    )
    points = base[:, None] + matrix @ corners
    low, high = points.min(axis=1), points.max(axis=1)
    if displacement is not None:
        reach = displacement.abs().flatten(1).amax(dim=1).double().numpy()
        low, high = low - reach, high + reach
    low = np.floor(low).astype(np.int64) - margin
    high = np.ceil(high).astype(np.int64) + margin + 1
    return low, np.maximum(high, low + 2)


def voxel_grid(
    matrix: np.ndarray,
    base: np.ndarray,
    size: Sequence[int],
    region_size: Sequence[int],
    displacement: torch.Tensor | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``grid_sample`` grid (align_corners=True) for source voxel coords ``base + matrix @ j``.

    Built by broadcasting one axis at a time (much cheaper than ``affine_grid`` on a CPU).
    ``dtype=torch.float64`` gives the reference the fused kernel's nearest mode is tested
    against exactly (a float32 grid rounds a few coordinates to the other side of ``.5``).

    Shape:
        returns ``(*size, D)`` with the last axis in grid_sample's reversed axis order.
    """
    dims = len(size)
    scale = 2.0 / (np.asarray(region_size, dtype=np.float64) - 1.0)
    axes = [torch.arange(n, dtype=dtype, device=device) for n in size]
    grid = torch.empty((dims, *size), dtype=dtype, device=device)
    for axis in range(dims):
        row = matrix[axis] * scale[axis]
        total: torch.Tensor | float = float(base[axis] * scale[axis] - 1.0)
        for other in range(dims - 1):
            shape = [1] * dims
            shape[other] = size[other]
            total = total + (axes[other] * float(row[other])).view(shape)
        last = [1] * dims
        last[dims - 1] = size[dims - 1]
        torch.add(
            total, (axes[dims - 1] * float(row[dims - 1])).view(last), out=grid[dims - 1 - axis]
        )
        if displacement is not None:
            grid[dims - 1 - axis] += displacement[axis].to(grid) * float(scale[axis])
    return grid.permute(*range(1, dims + 1), 0)


def _interpolate(
    region: torch.Tensor,
    matrix: np.ndarray,
    base: np.ndarray,
    displacement: torch.Tensor | None,
    size: Sequence[int],
    interpolation: str,
) -> torch.Tensor:
    dtype = region.dtype
    if interpolation == "cubic" and len(size) == 3:
        return _cubic_scipy(region.cpu(), matrix, base, displacement, size).to(region.device, dtype)
    grid = voxel_grid(matrix, base, size, region.shape[1:], displacement, device=region.device)
    mode = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}[interpolation]
    values = region.float() if dtype != torch.float32 else region
    out = F.grid_sample(
        values[None], grid[None], mode=mode, padding_mode="border", align_corners=True
    )[0]
    if not dtype.is_floating_point:
        out = out.round_() if interpolation != "nearest" else out
        return out.to(dtype)
    return out.to(dtype)


def _cubic_scipy(
    region: torch.Tensor,
    matrix: np.ndarray,
    base: np.ndarray,
    displacement: torch.Tensor | None,
    size: Sequence[int],
) -> torch.Tensor:
    from scipy.ndimage import map_coordinates

    indices = np.indices(size, dtype=np.float64).reshape(len(size), -1)
    coords = base[:, None] + matrix @ indices
    if displacement is not None:
        coords = coords + displacement.double().cpu().reshape(len(size), -1).numpy()
    data = region.double().numpy()
    channels = [map_coordinates(c, coords, order=3, mode="nearest").reshape(size) for c in data]
    return torch.from_numpy(np.stack(channels)).float()


def interpolation_for(kind: str, image_interpolation: str = "linear") -> str:
    """Interpolation per image kind: labels nearest, weights linear, images as configured."""
    return {"label": "nearest", "weight": "linear"}.get(kind, image_interpolation)


def resample_sample(
    sample: Sample,
    draw: SpatialDraw,
    *,
    roles: Sequence[str],
    interpolation: str = "linear",
    kernel: str = "auto",
) -> Sample:
    """Resample the ``roles`` of a window :class:`~voxelflow.transforms.base.Sample` in place of their windows.

    Every role is aligned on the centre voxel of the largest window (the main window), so a
    smaller label window stays centred. Outside a window is padded with zeros.
    """
    main = max((t.shape[1:] for t in sample.tensors.values()), key=lambda s: int(np.prod(s)))
    main_centre_voxel = np.asarray(main) // 2
    geometric = (np.asarray(main, dtype=np.float64) - 1.0) / 2.0
    changed = {}
    for role in roles:
        tensor = sample.tensors[role]
        size = tuple(tensor.shape[1:])
        role_first = main_centre_voxel - np.asarray(size) // 2  # in main-window coordinates
        changed[role] = resample_region(
            tensor,
            draw,
            centre=geometric - role_first,
            first_offset=role_first - geometric,
            size=size,
            spacing=sample.spacing,
            interpolation=interpolation_for(sample.kinds[role], interpolation),
            kernel=kernel,
        )
    return sample.with_tensors(changed)
