"""Region-wise detection and descriptive region measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from voxelflow.errors import ConfigError
from voxelflow.metrics import (
    centroid,
    connected_components,
    intensity_statistics,
    region_counts,
    shape_descriptors,
    surface_area,
    volume,
)


def lesions() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((16, 16, 8), bool)
    ref[1:4, 1:4, 1:3] = True  # lesion A (18 voxels), half covered
    ref[8:10, 8:10, 4:6] = True  # lesion B (8 voxels), missed
    ref[12:14, 1:3, 1:3] = True  # lesion C, fully covered
    pred = np.zeros_like(ref)
    pred[1:4, 1:4, 1:2] = True  # covers 9/18 of A
    pred[12:14, 1:3, 1:3] = True  # C
    pred[5:7, 12:14, 5:7] = True  # false positive
    return pred, ref


def test_lesion_counts_any_overlap():
    counts = region_counts(*lesions())
    assert (counts.num_ref, counts.num_pred) == (3, 3)
    assert counts.detection_rate == pytest.approx(2 / 3)
    assert counts.lesion_precision == pytest.approx(2 / 3)
    assert counts.lesion_f1 == pytest.approx(2 / 3)
    assert counts.false_positive_components == 1


def test_min_overlap_fraction_changes_detection():
    pred, ref = lesions()
    assert region_counts(pred, ref, min_overlap=0.5).detected_ref == 2  # A exactly half covered
    assert region_counts(pred, ref, min_overlap=0.6).detected_ref == 1


def test_connectivity_6_18_26():
    mask = np.zeros((5, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 1] = mask[3, 3, 2] = True  # edge-touching, then corner-touching
    assert connected_components(mask, connectivity=6)[1] == 3
    assert connected_components(mask, connectivity=18)[1] == 2
    assert connected_components(mask, connectivity=26)[1] == 1
    assert connected_components(mask[:, :, 1], connectivity=4)[1] == 2
    with pytest.raises(ConfigError, match="connectivity"):
        connected_components(mask, connectivity=8)


def test_region_empty_conventions():
    empty = np.zeros((4, 4, 4), bool)
    some = empty.copy()
    some[1, 1, 1] = True
    both = region_counts(empty, empty)
    assert (
        math.isnan(both.detection_rate)
        and math.isnan(both.lesion_precision)
        and math.isnan(both.lesion_f1)
    )
    missed = region_counts(empty, some)
    assert (
        missed.detection_rate == 0.0
        and math.isnan(missed.lesion_precision)
        and missed.lesion_f1 == 0.0
    )


def test_box_volume_area_compactness_by_hand():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:5, 2:4, 2:6] = True  # 3 × 2 × 4 voxels
    spacing = (0.7, 0.7, 3.0)
    size = (3 * 0.7) * (2 * 0.7) * (4 * 3.0)
    area = 2 * ((3 * 0.7) * (2 * 0.7) + (3 * 0.7) * (4 * 3.0) + (2 * 0.7) * (4 * 3.0))
    assert volume(mask, spacing) == pytest.approx(size)
    assert surface_area(mask, spacing) == pytest.approx(area)
    shape = shape_descriptors(mask, spacing)
    assert shape["surface_to_volume"] == pytest.approx(area / size)
    assert shape["compactness"] == pytest.approx(36 * math.pi * size**2 / area**3)


def test_square_in_2d_is_perimeter_and_area():
    mask = np.zeros((6, 6), bool)
    mask[1:3, 1:4] = True
    assert volume(mask, (1.0, 2.0)) == pytest.approx(12.0)
    assert surface_area(mask, (1.0, 2.0)) == pytest.approx(2 * 2 + 2 * 6)


def test_centroid_in_world_coordinates():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:4, 2, 3] = True  # centre voxel (2, 2, 3)
    affine = np.array([[0, -1.0, 0, 10], [2.0, 0, 0, -5], [0, 0, 1.5, 1], [0, 0, 0, 1]])
    assert centroid(mask, affine) == pytest.approx((10 - 2, -5 + 4, 1 + 4.5))
    assert centroid(mask) == pytest.approx((2, 2, 3))
    assert all(math.isnan(v) for v in centroid(np.zeros((3, 3, 3), bool), affine))


def test_intensity_statistics_match_scipy():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, size=(10, 10, 6))
    mask = rng.random((10, 10, 6)) > 0.4
    result = intensity_statistics(image[None], mask)
    inside = image[mask]
    assert result["mean"] == pytest.approx(inside.mean())
    assert result["std"] == pytest.approx(inside.std())
    assert result["median"] == pytest.approx(np.median(inside))
    assert result["q1"] == pytest.approx(np.percentile(inside, 25))
    assert result["skewness"] == pytest.approx(stats.skew(inside))
    assert result["kurtosis"] == pytest.approx(stats.kurtosis(inside))
    assert all(math.isnan(v) for v in intensity_statistics(image, np.zeros_like(mask)).values())
