"""Tiny anisotropic phantom subjects (non-identity affine) for the sampling tests."""

from __future__ import annotations

import numpy as np

from voxelflow.data.cached import CachedSubject, compute_class_locations
from voxelflow.synthetic import make_phantom, phantom_affine


def make_subject(
    name: str = "s0", shape=(20, 22, 16), *, seed: int = 0, memmap_dir=None
) -> CachedSubject:
    image, label = make_phantom(shape, num_classes=3, seed=seed)
    arrays = {"image": image[None].astype(np.float32), "label": label[None].astype(np.uint8)}
    if memmap_dir is not None:
        for role, array in list(arrays.items()):
            path = memmap_dir / f"{name}_{role}.npy"
            np.save(path, array)
            arrays[role] = np.load(path, mmap_mode="r")
    subject = CachedSubject(
        name, arrays, {"image": "intensity", "label": "label"}, phantom_affine((1.0, 1.2, 1.5))
    )
    subject.class_locations = compute_class_locations(np.asarray(arrays["label"]))
    return subject
