"""DeepMind's surface elements ("surfels"): a sub-voxel surface on the voxel-corner grid.

Every corner of the voxel grid (half a voxel off the voxel centres) looks at its 2×2×2 (2×2 in
2D) neighbouring voxels; the pattern of inside/outside voxels is its *neighbourhood code*. A
corner whose neighbours are neither all inside nor all outside is a surfel: a point of the
surface, carrying the area (mm²; a length in mm in 2D) of the marching-cubes (marching-squares)
surface that crosses its cell. This is the definition of DeepMind's ``surface-distance`` package
(Nikolov et al. 2021), which voxelflow reproduces to floating-point precision (tested).

The area table is derived here, not copied: for each code the surface is cut at the midpoints
of the cell edges whose two corners differ. On a cell face (the square itself in 2D) with two
such edges the cut joins them; with four (diagonal corners alike) each corner of the minority
(the inside corners when at most half are inside) is cut off on its own. In 3D the face cuts
join into closed loops, triangulated as a fan; the fan starts at a loop vertex whose
diametrically opposite cell edge is also cut, when there is one (this fixes the triangulation
of the non-planar loops as in DeepMind's table). Under anisotropic spacing ``s`` a triangle
with area vector ``n`` (in voxels) has area ``|(n₀s₁s₂, n₁s₀s₂, n₂s₀s₁)|``; a 2D segment with
direction ``d`` has length ``|(d₀s₀, d₁s₁)|``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import cast

import numpy as np

Corner = tuple[int, ...]
Edge = tuple[Corner, Corner]


def _corners(ndim: int) -> list[Corner]:
    return list(itertools.product((0, 1), repeat=ndim))


def corner_bit(corner: Corner) -> int:
    """The bit of a cell corner in the neighbourhood code (corner (0,…,0) is the highest bit)."""
    flat = int("".join(str(v) for v in corner), 2)
    return 1 << ((1 << len(corner)) - 1 - flat)  # 2**ndim corners


def _cell_edges(ndim: int) -> list[Edge]:
    corners = _corners(ndim)
    return [
        (a, b)
        for a, b in itertools.combinations(corners, 2)
        if sum(abs(x - y) for x, y in zip(a, b)) == 1
    ]


def _midpoint(edge: Edge) -> np.ndarray:
    return (np.asarray(edge[0], np.float64) + np.asarray(edge[1], np.float64)) / 2


def _square_cuts(
    square: Sequence[Corner], cut_edges: Sequence[Edge], minority: set[Corner]
) -> list[tuple[Edge, Edge]]:
    """The segments (pairs of cut edges) crossing one square face of a cell."""
    on_square = [e for e in cut_edges if e[0] in square and e[1] in square]
    if len(on_square) == 2:
        return [(on_square[0], on_square[1])]
    if len(on_square) == 4:  # diagonal corners alike: cut off each minority corner on its own
        return [
            # a corner lies on two of the square's four edges: a pair
            cast(tuple[Edge, Edge], tuple(e for e in on_square if corner in e))
            for corner in square
            if corner in minority
        ]
    return []


def _minority(code: int, ndim: int) -> set[Corner]:
    """The inside corners of ``code``, or the outside ones when more than half are inside."""
    corners = _corners(ndim)
    inside = {c for c in corners if code & corner_bit(c)}
    return inside if len(inside) * 2 <= len(corners) else set(corners) - inside


def _cut_edges(minority: set[Corner], ndim: int) -> list[Edge]:
    return [e for e in _cell_edges(ndim) if (e[0] in minority) != (e[1] in minority)]


def _loops(segments: list[tuple[Edge, Edge]]) -> list[list[Edge]]:
    """Chain segments sharing cut edges into closed loops (each cut edge has two segments)."""
    neighbours: dict[Edge, list[Edge]] = {}
    for a, b in segments:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in neighbours:
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            options = [n for n in neighbours[current] if n != previous]
            following = options[0]
            if following == start:
                break
            loop.append(following)
            seen.add(following)
            previous, current = current, following
        loops.append(loop)
    return loops


def _opposite(edge: Edge) -> Edge:
    """The cell edge diametrically opposite ``edge`` (through the cell centre)."""
    flipped = sorted(tuple(1 - v for v in corner) for corner in edge)
    return (flipped[0], flipped[1])


def _fan_area_vectors(loop: list[Edge]) -> list[np.ndarray]:
    """Area vectors (voxel units) of the fan triangulation of one loop (see module docs)."""
    starts = [i for i, edge in enumerate(loop) if _opposite(edge) in loop]
    start = starts[0] if starts else 0
    ordered = [_midpoint(e) for e in loop[start:] + loop[:start]]
    return [
        0.5 * np.cross(ordered[i] - ordered[0], ordered[i + 1] - ordered[0])
        for i in range(1, len(ordered) - 1)
    ]


def _code_elements(code: int, ndim: int) -> list[np.ndarray]:
    """Unscaled element vectors of one code: triangle area vectors (3D), segments (2D)."""
    minority = _minority(code, ndim)
    cut = _cut_edges(minority, ndim)
    if not cut:
        return []
    if ndim == 2:
        segments = _square_cuts(_corners(2), cut, minority)
        return [_midpoint(b) - _midpoint(a) for a, b in segments]
    segments = []
    for axis, value in itertools.product(range(3), (0, 1)):
        square = [c for c in _corners(3) if c[axis] == value]
        segments.extend(_square_cuts(square, cut, minority))
    return [vector for loop in _loops(segments) for vector in _fan_area_vectors(loop)]


@functools.cache
def _element_table(ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (M,), vectors (M, ndim))``: every surface element of every neighbourhood code."""
    codes, vectors = [], []
    for code in range(2 ** (2**ndim)):
        for vector in _code_elements(code, ndim):
            codes.append(code)
            vectors.append(vector)
    return np.asarray(codes, np.int64), np.asarray(vectors, np.float64)


@functools.lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Area (mm²; length in mm in 2D) of the surface crossing a cell, per neighbourhood code.

    Args:
        spacing: voxel size in mm, 2 or 3 values.

    Returns:
        Array of 16 (2D) or 256 (3D) values; 0 for the all-outside and all-inside codes.
    """
    ndim = len(spacing)
    codes, vectors = _element_table(ndim)
    scale = np.asarray(spacing, np.float64)
    if ndim == 3:  # an area vector scales by the cofactor: (s1 s2, s0 s2, s0 s1)
        scale = np.prod(scale) / scale
    sizes = np.linalg.norm(vectors * scale, axis=1)
    return np.bincount(codes, weights=sizes, minlength=2 ** (2**ndim))


def neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner of a boolean mask (outside is background).

    Shape:
        mask: ``(X, Y)`` or ``(X, Y, Z)``; returns ``(X+1, Y+1[, Z+1])`` codes (uint8), where
        corner ``p`` sits at voxel coordinate ``p - 0.5``.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    codes = np.zeros(tuple(s + 1 for s in mask.shape), np.uint8)
    for corner in _corners(mask.ndim):
        window = tuple(slice(c, c + s + 1) for c, s in zip(corner, mask.shape))
        codes |= padded[window] * np.uint8(corner_bit(corner))
    return codes


def surfels(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (mm) and areas (mm²; lengths in 2D) of the surfels of a boolean mask.

    Args:
        mask: boolean ``(X, Y)`` or ``(X, Y, Z)``.
        spacing: voxel size in mm per axis.

    Returns:
        ``(points, areas)`` of shapes ``(N, ndim)`` (voxel index − 0.5, times spacing) and ``(N,)``.
    """
    codes = neighbourhood_codes(mask)
    full = 2 ** (2**mask.ndim) - 1
    border = (codes != 0) & (codes != full)
    scale = np.asarray(spacing, np.float64)
    points = (np.argwhere(border) - 0.5) * scale
    areas = surfel_area_table(tuple(float(s) for s in spacing))[codes[border]]
    return points, areas
