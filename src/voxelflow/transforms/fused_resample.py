"""The fused CPU resampling of augmented training windows (numba), with the torch path as fallback.

:func:`fused_resample` resamples several roles of one window under one composed
:class:`~voxelflow.transforms.resample.SpatialDraw` in a single pass over the output voxels: the
source coordinate is computed incrementally from the composed affine (plus the elastic
displacement when there is one), linear roles (images, weights: every channel at once) and nearest
roles (labels) are interpolated at that coordinate, and only the source voxels those coordinates
touch are read (a memmap pages in its bounding box only, no region copy is made). It equals
:func:`voxelflow.transforms.resample.resample_region` with ``kernel="torch"`` (``grid_sample``)
within float rounding for linear and exactly for nearest (``tests/transforms/test_fused_resample.py``).

Kernel choice (``system.resample_kernel``): ``"numba"`` or ``"auto"`` use the kernel wherever it
applies (CPU arrays, 2D or 3D, linear or nearest); ``"torch"`` always uses ``grid_sample``. Where
numba cannot be imported, or for cubic interpolation, the torch path runs after one warning per
reason and process.

:func:`warm_up` compiles (or loads from numba's on-disk cache) the kernel for a subject's dtypes
in the training process before DataLoader workers fork, so workers inherit the machine code.

Example:
    >>> import numpy as np
    >>> from voxelflow.transforms.resample import SpatialDraw
    >>> image = np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4)
    >>> draw = SpatialDraw(np.diag([1.0, 1.0, 0.5]), np.zeros(3))
    >>> out = fused_resample([image], ["linear"], [0.0], draw, centre=[1.5, 1.5, 1.5],
    ...                      first_offset=[-1.5, -1.5, -1.5], size=(4, 4, 4), spacing=(1, 1, 1))
    >>> out[0].shape
    torch.Size([1, 4, 4, 4])
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voxelflow.errors import ConfigError
from voxelflow.types import VoxelCoordinates

if TYPE_CHECKING:
    from voxelflow.transforms.base import Transform
    from voxelflow.transforms.resample import SpatialDraw

logger = logging.getLogger(__name__)

KERNELS = ("auto", "numba", "torch")
SUPPORTED = ("linear", "nearest")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _kernel_module() -> Any:
    """The numba kernel module, or None when numba cannot be imported (warned once)."""
    try:
        module = importlib.import_module("voxelflow.transforms._fused_kernel")
    except Exception as exc:  # ImportError, or numba failing to load its LLVM library
        _warn_once(
            "import",
            f"the numba resampling kernel is unavailable ({type(exc).__name__}: {exc}); "
            "augmented windows are resampled with torch grid_sample (slower)",
        )
        return None
    return module


def check_kernel(kernel: str) -> str:
    """Refuse an unknown kernel name (naming ``system.resample_kernel``)."""
    if kernel not in KERNELS:
        raise ConfigError(f"system.resample_kernel: expected one of {KERNELS}, got {kernel!r}")
    return kernel


def kernel_applies(
    kernel: str, interpolation: str, array: np.ndarray | torch.Tensor, dims: int
) -> bool:
    """True when :func:`fused_resample` should handle this role (else the torch path).

    Warns once when the kernel was asked for (``auto``/``numba``) but cannot be used because the
    interpolation is not linear/nearest or numba is unavailable.
    """
    if check_kernel(kernel) == "torch" or dims not in (2, 3):
        return False
    if isinstance(array, torch.Tensor) and (array.device.type != "cpu" or array.requires_grad):
        return False
    if interpolation not in SUPPORTED:
        _warn_once(
            f"interpolation:{interpolation}",
            f"the numba resampling kernel supports {SUPPORTED} interpolation, not "
            f"{interpolation!r}: using the torch path for it",
        )
        return False
    return _kernel_module() is not None


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().numpy()
    return array


def _lift(array: np.ndarray, dims: int) -> np.ndarray:
    """A 2D ``(C, H, W)`` array as 3D ``(C, H, W, 1)`` (a view)."""
    return array[..., None] if dims == 2 else array


def fused_resample(
    arrays: Sequence[np.ndarray | torch.Tensor],
    interpolations: Sequence[str],
    pad_values: Sequence[float],
    draw: SpatialDraw,
    *,
    centre: VoxelCoordinates,
    first_offset: VoxelCoordinates,
    size: Sequence[int],
    spacing: Sequence[float],
) -> list[torch.Tensor]:
    """Resample several roles of one window under ``draw`` with the numba kernel.

    At most one linear and one nearest role share a pass (each with all its channels); further
    roles take further passes. Arguments mean what they mean for
    :func:`~voxelflow.transforms.resample.resample_region`.

    Args:
        arrays: per role ``(C, *spatial)`` CPU arrays (memmap, ndarray or tensor) on one grid.
        interpolations: per role ``"linear"`` or ``"nearest"``.
        pad_values: per role, the value outside the source (cast to the role's dtype).
        draw: the composed :class:`~voxelflow.transforms.resample.SpatialDraw` (mm).
        centre: geometric centre of the main window in source voxel coordinates.
        first_offset: offset (voxels) of the windows' first voxel from ``centre``.
        size: output window size (shared by these roles).
        spacing: source voxel spacing (mm).

    Returns:
        Per role a tensor ``(C, *size)`` of the role's dtype (linear of an integer role is
        rounded, as the torch path does).

    Shape:
        arrays[r]: ``(C_r, *spatial)``; returns[r]: ``(C_r, *size)``
    """
    module = _kernel_module()
    if module is None:
        raise RuntimeError("fused_resample called without numba (check kernel_applies first)")
    dims = len(size)
    matrix, translation, displacement = draw.in_voxels(spacing)
    base = (
        np.asarray(centre, dtype=np.float64)
        + matrix @ np.asarray(first_offset, dtype=np.float64)
        + translation
    )
    matrix3, base3 = np.eye(3), np.zeros(3)
    matrix3[:dims, :dims], base3[:dims] = matrix, base
    size3 = tuple(int(s) for s in size) + (1,) * (3 - dims)
    field = _displacement_3d(displacement, size, dims)
    sources = [_lift(_as_numpy(a), dims) for a in arrays]
    linear = [r for r, mode in enumerate(interpolations) if mode == "linear"]
    nearest = [r for r, mode in enumerate(interpolations) if mode == "nearest"]
    if len(linear) + len(nearest) != len(arrays):
        raise ConfigError(f"expected interpolations in {SUPPORTED}, got {list(interpolations)}")
    results: dict[int, torch.Tensor] = {}
    for index in range(max(len(linear), len(nearest))):
        lin = linear[index] if index < len(linear) else None
        near = nearest[index] if index < len(nearest) else None
        lin_out, near_out = _run(
            module, sources, lin, near, pad_values, base3, matrix3, field, size3
        )
        if lin is not None:
            results[lin] = _finish_linear(lin_out, sources[lin].dtype, dims)
        if near is not None:
            results[near] = torch.from_numpy(near_out[..., 0] if dims == 2 else near_out)
    return [results[r] for r in range(len(arrays))]


_EMPTY_LINEAR = np.zeros((0, 1, 1, 1), dtype=np.float32)
_EMPTY_NEAREST = np.zeros((0, 1, 1, 1), dtype=np.uint8)
_NO_DISPLACEMENT = np.zeros((3, 1, 1, 1), dtype=np.float32)


def _displacement_3d(
    displacement: torch.Tensor | None, size: Sequence[int], dims: int
) -> np.ndarray | None:
    """Voxel-unit displacement ``(3, *size3)`` float32 (centre-cropped to ``size``), or None."""
    if displacement is None:
        return None
    if tuple(displacement.shape[1:]) != tuple(size):
        spatial = displacement.shape[1:]
        index = tuple(slice(s // 2 - w // 2, s // 2 - w // 2 + w) for s, w in zip(spatial, size))
        displacement = displacement[(slice(None), *index)]
    field = displacement.detach().cpu().float().numpy()
    if dims == 2:
        field = np.concatenate([field, np.zeros_like(field[:1])])[..., None]
    return np.ascontiguousarray(field)


def _run(
    module: ModuleType,
    sources: list[np.ndarray],
    lin: int | None,
    near: int | None,
    pad_values: Sequence[float],
    base: np.ndarray,
    matrix: np.ndarray,
    field: np.ndarray | None,
    size: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """One kernel pass over one linear and one nearest source (either may be absent)."""
    if lin is not None:
        lin_src = sources[lin]
        lin_out = np.empty((lin_src.shape[0], *size), dtype=np.float32)
        pad = float(np.asarray(pad_values[lin]).astype(lin_src.dtype))
        lin_pad = np.full(lin_src.shape[0], pad, dtype=np.float64)
    else:
        lin_src, lin_out, lin_pad = _EMPTY_LINEAR, _EMPTY_LINEAR, np.zeros(0)
    if near is not None:
        near_src = sources[near]
        near_out = np.empty((near_src.shape[0], *size), dtype=near_src.dtype)
        near_pad = np.full(near_src.shape[0], pad_values[near]).astype(near_src.dtype)
    else:
        near_src, near_out = _EMPTY_NEAREST, _EMPTY_NEAREST
        near_pad = np.zeros(0, dtype=np.uint8)
    if lin is not None and near is not None and lin_src.shape[1:] != near_src.shape[1:]:
        raise ConfigError(
            f"expected every role on one grid, got spatial shapes {lin_src.shape[1:]} and "
            f"{near_src.shape[1:]}"
        )
    module.fused_resample_3d(
        lin_src,
        near_src,
        lin_out,
        near_out,
        base,
        matrix,
        field if field is not None else _NO_DISPLACEMENT,
        field is not None,
        lin_pad,
        near_pad,
    )
    return lin_out, near_out


def _finish_linear(values: np.ndarray, dtype: np.dtype, dims: int) -> torch.Tensor:
    """float32 kernel output in the role's dtype (integers rounded, as the torch path does)."""
    out = values[..., 0] if dims == 2 else values
    if np.issubdtype(dtype, np.floating):
        return torch.from_numpy(out if dtype == np.float32 else out.astype(dtype))
    return torch.from_numpy(np.rint(out).astype(dtype))


def warm_up(
    subject: Any, *, kernel: str = "auto", augmentation: Transform | None = None
) -> float | None:
    """Compile (or load from the on-disk cache) the kernel for ``subject``'s role dtypes.

    Called in the training process before the DataLoader forks its workers, so each worker
    inherits the compiled code instead of compiling it (seconds) on its first window.

    Args:
        subject: a :class:`~voxelflow.data.cached.CachedSubject` (its arrays' dtypes matter).
        kernel: ``system.resample_kernel``.
        augmentation: the training :class:`~voxelflow.transforms.compose.Compose`; nothing is
            compiled when it has no leading spatial transform (no window is resampled).

    Returns:
        Seconds spent (compile or cache load), or None when the kernel is not used.
    """
    from voxelflow.transforms.resample import SpatialDraw, interpolation_for

    if augmentation is not None and not _resamples(augmentation):
        return None
    arrays = list(subject.arrays.values())
    dims = arrays[0].ndim - 1
    image_mode = getattr(augmentation, "interpolation", "linear")
    modes = [
        interpolation_for(subject.kinds.get(r, "intensity"), image_mode) for r in subject.arrays
    ]
    if not all(kernel_applies(kernel, mode, a, dims) for mode, a in zip(modes, arrays)):
        return None
    start = time.perf_counter()
    draw = SpatialDraw(np.eye(dims) * 0.9, np.full(dims, 0.25))  # any non-trivial draw
    size = (2,) * dims
    fused_resample(
        arrays, modes, [0.0] * len(arrays), draw, centre=[0.5] * dims,
        first_offset=[-0.5] * dims, size=size, spacing=[1.0] * dims,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    logger.info("resampling kernel ready in %.2f s (numba compile or cache load)", seconds)
    return seconds


def _resamples(augmentation: Transform) -> bool:
    leading = getattr(augmentation, "_leading_spatial", None)
    return bool(leading()) if callable(leading) else True
