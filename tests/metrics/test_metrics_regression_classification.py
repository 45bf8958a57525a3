"""Regression and classification metrics: hand-computed values and MONAI references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxelflow.errors import DataError, ShapeError
from voxelflow.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    mean_absolute_error,
    mean_error,
    mean_squared_error,
    normalized_cross_correlation,
    precision_recall_f1,
    psnr,
    regression_metrics,
    roc_auc,
    root_mean_squared_error,
    ssim,
)


def images(seed=0, shape=(16, 16, 12)):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape) * 100
    return ref + rng.normal(0, 5, shape), ref


def test_hand_computed_errors():
    pred, ref = np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0])
    assert mean_absolute_error(pred, ref) == pytest.approx(4 / 3)
    assert mean_error(pred, ref) == pytest.approx(4 / 3)
    assert mean_error(ref, pred) == pytest.approx(-4 / 3)
    assert mean_squared_error(pred, ref) == pytest.approx(10 / 3)
    assert root_mean_squared_error(pred, ref) == pytest.approx(math.sqrt(10 / 3))
    assert psnr(pred, ref, data_range=2.0) == pytest.approx(10 * math.log10(4 / (10 / 3)))
    mask = np.array([True, True, False])
    assert mean_absolute_error(pred, ref, mask=mask) == pytest.approx(0.5)


def test_psnr_range_from_reference_is_reported():
    pred, ref = images()
    result = regression_metrics(pred, ref)
    assert result["data_range"] == pytest.approx(ref.max() - ref.min())
    assert result["psnr"] == pytest.approx(psnr(pred, ref, data_range=ref.max() - ref.min()))
    assert psnr(ref, ref) == math.inf


def test_ncc_is_pearson_and_invariant_to_affine_intensity():
    pred, ref = images(1)
    assert normalized_cross_correlation(pred, ref) == pytest.approx(
        np.corrcoef(pred.ravel(), ref.ravel())[0, 1]
    )
    assert normalized_cross_correlation(3 * ref + 7, ref) == pytest.approx(1.0)
    assert math.isnan(normalized_cross_correlation(np.ones(5), np.arange(5.0)))


def test_against_monai_regression_metrics():
    from monai.metrics import MAEMetric, MSEMetric, PSNRMetric, RMSEMetric, SSIMMetric

    pred, ref = images(2)
    p, r = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
    data_range = float(ref.max() - ref.min())
    assert mean_absolute_error(pred, ref) == pytest.approx(MAEMetric()(p, r).item(), rel=1e-6)
    assert mean_squared_error(pred, ref) == pytest.approx(MSEMetric()(p, r).item(), rel=1e-6)
    assert root_mean_squared_error(pred, ref) == pytest.approx(RMSEMetric()(p, r).item(), rel=1e-6)
    assert psnr(pred, ref) == pytest.approx(PSNRMetric(max_val=data_range)(p, r).item(), rel=1e-6)
    # MONAI's SSIM runs in float32; ours in float64: agreement at float32 precision.
    theirs = SSIMMetric(spatial_dims=3, data_range=data_range)(p.float(), r.float()).item()
    assert ssim(pred, ref, data_range=data_range) == pytest.approx(theirs, rel=1e-4)


def test_ssim_identity_2d_and_bad_shape():
    _, ref = images(3, (20, 20))
    assert ssim(ref, ref) == pytest.approx(1.0)
    with pytest.raises(ShapeError, match="window_size"):
        ssim(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)))


def test_classification_hand_computed():
    ref = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    np.testing.assert_array_equal(confusion_matrix(pred, ref), [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert accuracy(pred, ref) == pytest.approx(4 / 6)
    assert balanced_accuracy(pred, ref) == pytest.approx((0.5 + 1 + 0.5) / 3)
    scores = precision_recall_f1(pred, ref)
    np.testing.assert_allclose(scores["precision"], [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(scores["recall"], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(scores["f1"], [0.5, 0.8, 2 / 3])
    with pytest.raises(DataError, match="integer"):
        accuracy(np.array([0.5]), np.array([1]))


def test_roc_auc_exact_with_ties_and_against_monai():
    from monai.metrics import compute_roc_auc

    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert math.isnan(roc_auc(np.array([0.2, 0.3]), np.array([1, 1])))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 2)  # rounding creates ties
    theirs = compute_roc_auc(torch.from_numpy(scores), torch.from_numpy(labels))
    assert roc_auc(scores, labels) == pytest.approx(float(theirs), rel=1e-9)


def test_expected_calibration_error_by_hand():
    probs = np.array([0.9, 0.8, 0.3, 0.6])  # confidences 0.9, 0.8, 0.7, 0.6 with 2 bins
    ref = np.array([1, 0, 0, 1])  # predictions 1, 1, 0, 1 → correct, wrong, correct, correct
    # bin (0.5, 1]: all four, accuracy 0.75, confidence 0.75 → ECE 0
    assert expected_calibration_error(probs, ref, num_bins=2) == pytest.approx(0.0)
    # 10 bins: 0.9 ok, 0.8 wrong, 0.7 ok, 0.6 ok → mean |acc − conf| = (0.1 + 0.8 + 0.3 + 0.4) / 4
    assert expected_calibration_error(probs, ref, num_bins=10) == pytest.approx(0.4)
