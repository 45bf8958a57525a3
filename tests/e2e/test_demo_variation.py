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


def _three_tissue_template():
    """CSF 0.4, grey 0.66, white 0.83 in thirds of a block, with certain probability maps."""
    t1 = np.zeros((6, 4, 4), np.float32)
    gm, wm = np.zeros_like(t1), np.zeros_like(t1)
    t1[:2], t1[2:4], t1[4:] = 0.4, 0.66, 0.83
    gm[2:4], wm[4:] = 1.0, 1.0
    return t1, gm, wm, np.eye(4)


def test_tissue_means_are_the_probability_weighted_means():
    from voxelflow.demo.variation import tissue_means

    np.testing.assert_allclose(tissue_means(_three_tissue_template()), (0.4, 0.66, 0.83), rtol=1e-6)


def test_contrast_remap_moves_grey_and_csf_keeps_white_and_order():
    from voxelflow.demo.variation import (
        CSF_WHITE_RATIO,
        GREY_WHITE_RATIO,
        remap_tissue_contrast,
        tissue_means,
    )

    template = _three_tissue_template()
    means = tissue_means(template)
    ratios = []
    for seed in range(50):
        t1, gm, wm, _ = remap_tissue_contrast(template, means, np.random.default_rng(seed))
        assert gm is template[1] and wm is template[2]  # the labels do not move
        np.testing.assert_allclose(t1[4:], 0.83, rtol=1e-6)  # white matter is the anchor
        csf, grey = float(t1[0, 0, 0]), float(t1[2, 0, 0])
        assert 0 < csf < grey < 0.83
        ratios.append((grey / 0.83, csf / 0.83))
    grey_ratio, csf_ratio = np.array(ratios).T
    assert GREY_WHITE_RATIO[0] <= grey_ratio.min() and grey_ratio.max() <= GREY_WHITE_RATIO[1]
    assert grey_ratio.max() - grey_ratio.min() > 0.1  # it does vary
    assert csf_ratio.max() <= CSF_WHITE_RATIO[1]
    # monotone between the anchors: a ramp stays ordered
    ramp = (np.linspace(0.05, 1.0, 96, dtype=np.float32).reshape(6, 4, 4), *template[1:])
    remapped = remap_tissue_contrast(ramp, means, np.random.default_rng(1))[0].ravel()
    assert (np.diff(remapped) > 0).all()

