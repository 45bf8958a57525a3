"""The demo's scan variation: distance to the brain, padded template, acquisition blur, zero backgrounds, labels kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from voxelflow.demo.variation import (
    ScanVariant,
    blur_to_acquired,
    distance_from_brain,
    rotation_matrix,
)


def _ball(shape=(64, 64, 64), radius=10.0) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    return (grid**2).sum(axis=0) <= radius**2


def test_distance_from_brain_is_the_euclidean_distance_in_mm():
    brain = _ball()
    distance = distance_from_brain(brain, 2.0)
    np.testing.assert_allclose(
        distance[32, 32, 44], 2.0 * ndimage.distance_transform_edt(~brain)[32, 32, 44]
    )
    assert distance[brain].max() == 0.0


def test_padded_template_keeps_world_positions():
    pytest.importorskip("nilearn")
    from voxelflow.demo.data import coarse_template, load_template, pad_template

    template = coarse_template(load_template(), factor=4)
    padded = pad_template(template, ((8.0, 8.0), (8.0, 16.0), (40.0, 8.0)))
    t1, affine, p_t1, p_affine = template[0], template[3], padded[0], padded[3]
    assert p_t1.shape == (t1.shape[0] + 4, t1.shape[1] + 6, t1.shape[2] + 12)
    # the voxel that held the template's first voxel sits at the same world position
    np.testing.assert_allclose(p_affine @ [2, 2, 10, 1], affine @ [0, 0, 0, 1])
    np.testing.assert_array_equal(p_t1[2:-2, 2:-4, 10:-2], t1)
    assert p_t1[:2].max() == 0.0


def test_blur_matches_the_acquired_resolution():
    image = np.zeros((31, 31, 31), np.float32)
    image[15, 15, 15] = 1.0
    blurred = blur_to_acquired(image, (1.0, 1.0, 5.0), 1.0)
    np.testing.assert_allclose(
        blurred[15, 15], ndimage.gaussian_filter1d(image[15, 15], (24**0.5) / 2.355), atol=1e-6
    )
    assert blur_to_acquired(image, (1.0, 1.0, 1.0), 1.0) is image  # nothing to blur


def test_rotation_is_orthonormal_and_variants_are_seeded():
    rotation = rotation_matrix((10.0, -5.0, 30.0))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert ScanVariant.draw(np.random.default_rng(4)) == ScanVariant.draw(np.random.default_rng(4))


def test_varied_subject_zero_background_and_labels():
    pytest.importorskip("nilearn")
    from voxelflow.demo.data import coarse_template, load_template, make_varied_subject

    template = coarse_template(load_template(), factor=4)
    distance = distance_from_brain(template[0] > 0.05, 4.0)
    variant = ScanVariant(True, True, 10.0, 1.0, (0.0, 0.0, 15.0), (0.0, 0.0, 0.0), (4.0, 4.0, 4.0))
    image, label, affine = make_varied_subject(
        template, distance, np.random.default_rng(0), 4.0, variant
    )
    assert image.shape == label.shape and set(np.unique(label)) == {0, 1, 2}
    assert (image == 0).mean() > 0.1  # exactly-zero background outside the head
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), 4.0)  # rotated 4 mm grid
