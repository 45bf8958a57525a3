"""Shape-annotated type aliases used across voxelflow.

Shapes are written in docstrings as ``(C, *spatial)`` for one image volume and
``(B, C, *spatial)`` for a batch, where ``spatial`` is ``(X, Y)`` in 2D or ``(X, Y, Z)`` in 3D,
in voxel index order (nibabel's array order, not ITK's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

PathLike: TypeAlias = str | os.PathLike[str]
Volume: TypeAlias = torch.Tensor
"""A single image: ``(C, *spatial)``."""
Batch: TypeAlias = torch.Tensor
"""A batch of images: ``(B, C, *spatial)``."""
Affine: TypeAlias = np.ndarray
"""A 4×4 float64 voxel-to-world (RAS+, mm) matrix, as nibabel uses."""
SpatialSize: TypeAlias = tuple[int, ...]
ArrayLike: TypeAlias = np.ndarray | torch.Tensor
VoxelIndex: TypeAlias = Sequence[int] | Sequence[np.integer[Any]] | np.ndarray
"""Voxel indices or window sizes, one per spatial axis: ints or an integer array ``(D,)``."""
VoxelCoordinates: TypeAlias = Sequence[float] | np.ndarray
"""A point or offset in voxel units, one value per spatial axis: floats or an array ``(D,)``."""
