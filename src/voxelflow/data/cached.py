"""The sampler-facing view of one preprocessed subject.

A :class:`CachedSubject` holds each role as an array ``(C, *spatial)``: normally a read-only
``np.memmap`` from the preprocessing cache, so slicing a window reads only that window's bytes
and every DataLoader worker shares the same page cache instead of its own copy. In-memory
subjects (the Python API, tests) use plain arrays through :meth:`CachedSubject.from_subject`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelflow.io.image import Image, ImageKind, Subject


@dataclass
class CachedSubject:
    """One preprocessed subject as arrays on its preprocessed grid.

    Args:
        name: subject id.
        arrays: role → array ``(C, *spatial)`` (np.memmap or ndarray), all on one grid.
        kinds: role → ``"intensity" | "label" | "weight"``.
        affine: 4×4 affine of the preprocessed grid.
        fields: non-image table values (class, target, group ...).
        class_locations: label value → flat voxel indices (int64, C-order over the spatial
            shape) of that value in the ``label`` role; precomputed by the cache for balanced
            sampling, or ``None``.
        record: what preprocessing did (JSON-serialisable), used to invert it at inference.

    Shape:
        arrays[role]: ``(C, *spatial)``

    Example:
        >>> image = np.zeros((1, 6, 5, 4), np.float32)
        >>> subject = CachedSubject("case1", {"image": image}, {"image": "intensity"})
        >>> subject.spatial_shape
        (6, 5, 4)
        >>> subject.to_subject()["image"].spatial_shape
        (6, 5, 4)
    """

    name: str
    arrays: dict[str, np.ndarray]
    kinds: dict[str, ImageKind]
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    fields: dict[str, Any] = field(default_factory=dict)
    class_locations: dict[int, np.ndarray] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shared spatial shape of every role."""
        return tuple(next(iter(self.arrays.values())).shape[1:])

    def to_subject(self) -> Subject:
        """Load every role into memory as an :class:`Image` (copies the arrays)."""
        import torch

        images = {
            role: Image(torch.from_numpy(np.array(arr)), self.affine.copy(), kind=self.kinds[role])
            for role, arr in self.arrays.items()
        }
        return Subject(self.name, images, dict(self.fields))

    @classmethod
    def from_subject(cls, subject: Subject, *, with_class_locations: bool = True) -> CachedSubject:
        """Wrap an in-memory subject (no cache); class locations computed from the ``label`` role."""
        arrays = {role: img.numpy() for role, img in subject.images.items()}
        kinds = {role: img.kind for role, img in subject.images.items()}
        first = next(iter(subject.images.values()))
        locations = None
        if with_class_locations and "label" in arrays:
            locations = compute_class_locations(arrays["label"])
        return cls(
            subject.name, arrays, kinds, first.affine.copy(), dict(subject.fields), locations
        )


def compute_class_locations(label: np.ndarray) -> dict[int, np.ndarray]:
    """Flat voxel indices of every value of a label array ``(1, *spatial)`` (or ``(*spatial)``).

    Returns:
        value → sorted int64 flat indices into the spatial grid (C order).
    """
    flat = np.asarray(label).reshape(-1)  # (1, *spatial) and (*spatial) flatten alike
    order = np.argsort(flat, kind="stable")
    values, starts = np.unique(flat[order], return_index=True)
    bounds = [*starts[1:], flat.size]
    return {int(v): order[s:e].astype(np.int64) for v, s, e in zip(values, starts, bounds)}
