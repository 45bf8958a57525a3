"""Seeded synthetic phantoms for tests, benchmarks and the demo fallback.

Only numpy is needed. Phantoms are a background with a few ellipsoids of distinct intensities,
with a matching integer label map, so segmentation is learnable in a few iterations.
"""

from __future__ import annotations

import numpy as np


def make_phantom(
    shape: tuple[int, ...] = (24, 24, 24),
    *,
    num_classes: int = 3,
    num_blobs: int = 4,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make an image and its label map.

    Args:
        shape: spatial shape, 2D or 3D.
        num_classes: number of classes including background 0.
        num_blobs: ellipsoids drawn; blob ``i`` gets class ``1 + i % (num_classes - 1)``.
        noise: standard deviation of additive Gaussian noise.
        seed: random seed.

    Returns:
        ``(image, label)``: float32 image of ``shape`` and int16 label map of ``shape``.

    Example:
        >>> image, label = make_phantom((16, 16, 16), seed=1)
        >>> image.shape, int(label.max()) <= 2
        ((16, 16, 16), True)
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    label = np.zeros(shape, dtype=np.int16)
    for i in range(num_blobs):
        centre = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        radii = [rng.uniform(0.12 * s, 0.25 * s) for s in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        label[inside] = 1 + i % max(num_classes - 1, 1)
    image = label.astype(np.float32) / max(num_classes - 1, 1)
    image += rng.normal(0.0, noise, size=shape).astype(np.float32)
    return image, label


def phantom_affine(
    spacing: tuple[float, float, float] = (1.0, 1.2, 1.5), *, angle: float = 0.1
) -> np.ndarray:
    """A non-identity, slightly rotated 4×4 affine with the given spacing (mm).

    Args:
        spacing: voxel size in mm per axis (the column norms of the affine).
        angle: rotation in radians about the third axis.

    Returns:
        The affine, translated to (-10, 5, 2.5) mm.

    Shape:
        returns ``(4, 4)`` float64.

    Example:
        >>> affine = phantom_affine((1.0, 1.2, 1.5))
        >>> affine.shape, np.linalg.norm(affine[:3, :3], axis=0).round(3).tolist()
        ((4, 4), [1.0, 1.2, 1.5])
    """
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (-10.0, 5.0, 2.5)
    return affine
