"""The numba kernel behind :mod:`voxelflow.transforms.fused_resample` (imported lazily: numba is
only needed where the kernel runs, and an import failure falls back to the torch path).

One pass over the output voxels of a 3D window. The source coordinate of output voxel
``(i, j, k)`` is ``base + M[:, 0] i + M[:, 1] j + M[:, 2] k (+ displacement[:, i, j, k])`` in
source voxel units; it is advanced by ``M[:, 2]`` along the innermost axis instead of being
recomputed (three additions per voxel). At that coordinate every channel of the linear source is
interpolated trilinearly (the 8 weights computed once for all channels) and every channel of the
nearest source is read at the rounded coordinate. Voxels outside the source read as the pad value
of their channel: the same as ``grid_sample`` over a region padded with that value, which is what
the torch path in :mod:`voxelflow.transforms.resample` does. Only the voxels the coordinates touch
are read, so a read-only ``np.memmap`` source pages in its bounding box only.

``cache=True`` writes the machine code next to this file (or to ``NUMBA_CACHE_DIR``); there is
no ``parallel=True``: in DataLoader workers each process is one thread by design.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _border_voxel(
    source: np.ndarray,
    c: int,
    x0: int,
    y0: int,
    z0: int,
    wx: float,
    wy: float,
    wz: float,
    pad: float,
) -> float:
    """Trilinear value at a coordinate whose 8 corners are not all inside: outside reads ``pad``.

    A corner of zero weight is skipped, so a coordinate exactly on the last voxel does not blend
    in the pad value (``grid_sample`` gives it weight 0 too).
    """
    ext_x, ext_y, ext_z = source.shape[1], source.shape[2], source.shape[3]
    total = 0.0
    for dx in range(2):
        weight_x = wx if dx == 1 else 1.0 - wx
        if weight_x == 0.0:
            continue
        for dy in range(2):
            weight_xy = weight_x * (wy if dy == 1 else 1.0 - wy)
            if weight_xy == 0.0:
                continue
            for dz in range(2):
                weight = weight_xy * (wz if dz == 1 else 1.0 - wz)
                if weight == 0.0:
                    continue
                xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
                if 0 <= xi < ext_x and 0 <= yi < ext_y and 0 <= zi < ext_z:
                    total += weight * float(source[c, xi, yi, zi])
                else:
                    total += weight * pad
    return total


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def fused_resample_3d(  # noqa: C901  (numba kernel: one loop body, splitting it costs speed)
    linear_source: np.ndarray,
    nearest_source: np.ndarray,
    linear_out: np.ndarray,
    nearest_out: np.ndarray,
    base: np.ndarray,
    matrix: np.ndarray,
    displacement: np.ndarray,
    use_displacement: bool,
    linear_pad: np.ndarray,
    nearest_pad: np.ndarray,
) -> None:
    """Fill ``linear_out`` and ``nearest_out`` in one pass over the output voxels.

    Args:
        linear_source: ``(C1, X, Y, Z)`` any real dtype (C1 may be 0).
        nearest_source: ``(C2, X, Y, Z)`` any dtype (C2 may be 0).
        linear_out: ``(C1, I, J, K)`` float32, written.
        nearest_out: ``(C2, I, J, K)`` of ``nearest_source``'s dtype, written.
        base: ``(3,)`` float64 source coordinate of output voxel ``(0, 0, 0)``.
        matrix: ``(3, 3)`` float64 output voxel step → source voxel step.
        displacement: ``(3, I, J, K)`` float32 source offset per output voxel (read only when
            ``use_displacement``; a ``(3, 1, 1, 1)`` dummy otherwise).
        use_displacement: add ``displacement``.
        linear_pad: ``(C1,)`` float64 value outside the source per linear channel.
        nearest_pad: ``(C2,)`` value outside the source per nearest channel (out dtype).
    """
    if linear_out.shape[0] > 0:
        size_i, size_j, size_k = linear_out.shape[1], linear_out.shape[2], linear_out.shape[3]
    else:
        size_i, size_j, size_k = nearest_out.shape[1], nearest_out.shape[2], nearest_out.shape[3]
    if linear_source.shape[0] > 0:
        ext_x, ext_y, ext_z = linear_source.shape[1], linear_source.shape[2], linear_source.shape[3]
    else:
        ext_x, ext_y, ext_z = (
            nearest_source.shape[1],
            nearest_source.shape[2],
            nearest_source.shape[3],
        )
    n_linear, n_nearest = linear_out.shape[0], nearest_out.shape[0]
    step_x, step_y, step_z = matrix[0, 2], matrix[1, 2], matrix[2, 2]
    for i in range(size_i):
        for j in range(size_j):
            x = base[0] + matrix[0, 0] * i + matrix[0, 1] * j
            y = base[1] + matrix[1, 0] * i + matrix[1, 1] * j
            z = base[2] + matrix[2, 0] * i + matrix[2, 1] * j
            for k in range(size_k):
                px, py, pz = x, y, z
                if use_displacement:
                    px += displacement[0, i, j, k]
                    py += displacement[1, i, j, k]
                    pz += displacement[2, i, j, k]
                if n_linear > 0:
                    fx, fy, fz = math.floor(px), math.floor(py), math.floor(pz)
                    x0, y0, z0 = int(fx), int(fy), int(fz)
                    wx, wy, wz = px - fx, py - fy, pz - fz
                    # a 2D image lifted to 3D has one z plane and wz == 0: still the fast path
                    flat_z = wz == 0.0 and z0 + 1 == ext_z
                    inside = (
                        x0 >= 0
                        and y0 >= 0
                        and z0 >= 0
                        and x0 + 1 < ext_x
                        and y0 + 1 < ext_y
                        and (z0 + 1 < ext_z or flat_z)
                    )
                    if inside:  # fast path: the 8 corners in the image, no per-corner test
                        ux, uy, uz = 1.0 - wx, 1.0 - wy, 1.0 - wz
                        w000, w001 = ux * uy * uz, ux * uy * wz
                        w010, w011 = ux * wy * uz, ux * wy * wz
                        w100, w101 = wx * uy * uz, wx * uy * wz
                        w110, w111 = wx * wy * uz, wx * wy * wz
                        x1, y1, z1 = x0 + 1, y0 + 1, z0 if flat_z else z0 + 1
                        for c in range(n_linear):
                            linear_out[c, i, j, k] = (
                                w000 * linear_source[c, x0, y0, z0]
                                + w001 * linear_source[c, x0, y0, z1]
                                + w010 * linear_source[c, x0, y1, z0]
                                + w011 * linear_source[c, x0, y1, z1]
                                + w100 * linear_source[c, x1, y0, z0]
                                + w101 * linear_source[c, x1, y0, z1]
                                + w110 * linear_source[c, x1, y1, z0]
                                + w111 * linear_source[c, x1, y1, z1]
                            )
                    else:
                        for c in range(n_linear):
                            linear_out[c, i, j, k] = _border_voxel(
                                linear_source, c, x0, y0, z0, wx, wy, wz, linear_pad[c]
                            )
                if n_nearest > 0:
                    # round half to even, as grid_sample's nearest mode (std::nearbyint)
                    xi, yi, zi = int(np.rint(px)), int(np.rint(py)), int(np.rint(pz))
                    if 0 <= xi < ext_x and 0 <= yi < ext_y and 0 <= zi < ext_z:
                        for c in range(n_nearest):
                            nearest_out[c, i, j, k] = nearest_source[c, xi, yi, zi]
                    else:
                        for c in range(n_nearest):
                            nearest_out[c, i, j, k] = nearest_pad[c]
                x += step_x
                y += step_y
                z += step_z
