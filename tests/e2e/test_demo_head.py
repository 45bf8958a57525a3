"""The demo's synthetic head: layered shell, temporalis, face region and orbits, brain untouched."""

from __future__ import annotations

import numpy as np

from voxelflow.demo.head import LAYERS, synthesise_head
from voxelflow.demo.variation import distance_from_brain


def _ball_brain(shape=(70, 80, 70), radius=22.0) -> tuple[np.ndarray, np.ndarray]:
    """A ball brain on a 2 mm grid whose centre sits at MNI (0, 0, 0)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -2.0 * (np.array(shape) - 1) / 2
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    return (grid**2).sum(axis=0) <= radius**2, affine


def test_head_has_dark_bone_bright_fat_and_keeps_the_brain():
    brain, affine = _ball_brain()
    t1 = np.where(brain, 1.0, 0.0).astype(np.float32)
    distance = distance_from_brain(brain, 2.0)
    image, head = synthesise_head(t1, brain, distance, affine, np.random.default_rng(1))
    assert head[brain].all() and not head[0, 0, -1] and image[0, 0, -1] == 0.0
    top = image[35, 40, 40:]  # straight up from the centre: brain, then the layers, then air
    maximum_shell = sum(high for _, (_, high), _ in LAYERS) * 1.3 / 2.0
    edge = int(np.argmin(brain[35, 40, 40:]))  # first voxel outside the brain
    shell = top[edge + 1 : edge + int(np.ceil(maximum_shell))]
    assert top[0] > 0.9 and shell.min() < 0.2 and shell.max() > 0.7  # bone dark, fat bright
    assert top[-1] == 0.0


def test_face_region_and_orbits_lie_below_and_in_front_of_the_brain():
    brain, affine = _ball_brain(radius=22.0)
    t1 = np.where(brain, 1.0, 0.0).astype(np.float32)
    distance = distance_from_brain(brain, 2.0)
    _, head = synthesise_head(t1, brain, distance, affine, np.random.default_rng(2))
    world_z = affine[2, 2] * np.arange(brain.shape[2]) + affine[2, 3]
    below = head[:, :, world_z < -60].sum()
    above = head[:, :, world_z > 60].sum()
    assert below > 10 * max(above, 1)  # the face/neck fills below, the scalp ends above


def test_heads_differ_between_seeds():
    brain, affine = _ball_brain()
    t1 = np.where(brain, 1.0, 0.0).astype(np.float32)
    distance = distance_from_brain(brain, 2.0)
    first, _ = synthesise_head(t1, brain, distance, affine, np.random.default_rng(3))
    second, _ = synthesise_head(t1, brain, distance, affine, np.random.default_rng(4))
    assert np.abs(first - second)[~brain].mean() > 0.01
