from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxelflow.applications.segmentation.postprocess import postprocess_labels


def _two_blobs() -> np.ndarray:
    labels = np.zeros((1, 10, 10, 10), dtype=np.int16)
    labels[0, 1:5, 1:5, 1:5] = 1  # 64 voxels
    labels[0, 8, 8, 8] = 1  # 1 voxel
    labels[0, 6:9, 1:4, 1:4] = 2  # 27 voxels of another class
    return labels


def test_keep_largest_component_per_class() -> None:
    out = postprocess_labels(_two_blobs(), keep_largest=True)
    assert int((out == 1).sum()) == 64 and int((out == 2).sum()) == 27
    assert out[0, 8, 8, 8] == 0 and out.dtype == np.int16


def test_min_volume_uses_spacing() -> None:
    labels = _two_blobs()
    # 27 voxels * 2 mm³ = 54 mm³ < 60 removes class 2; 64 * 2 = 128 keeps class 1's big blob
    out = postprocess_labels(labels, min_volume_mm3=60.0, spacing=(1.0, 1.0, 2.0))
    assert int((out == 2).sum()) == 0 and int((out == 1).sum()) == 64


def test_fill_holes_matches_scipy() -> None:
    labels = np.zeros((9, 9, 9), dtype=np.int16)
    labels[1:8, 1:8, 1:8] = 3
    labels[4, 4, 4] = 0
    out = postprocess_labels(labels, fill_holes=True)
    np.testing.assert_array_equal(out == 3, ndimage.binary_fill_holes(labels == 3))
    assert np.array_equal(postprocess_labels(labels), labels)  # nothing asked: unchanged
