"""Overlap metrics, the per-label segmentation call, batched torch Dice/IoU and the registry."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from voxelflow.errors import ConfigError, DataError, RegistryError
from voxelflow.metrics import (
    METRICS,
    SEGMENTATION_METRIC_NAMES,
    confusion_counts,
    dice,
    dice_batch,
    iou_batch,
    jaccard,
    precision,
    segmentation_metrics,
    sensitivity,
    specificity,
    surface_distances,
    volume_difference,
)
from voxelflow.metrics.torch_metrics import one_hot


def label_map(shape, seed, num_classes=4) -> np.ndarray:
    field = ndimage.gaussian_filter(
        np.random.default_rng(seed).random((num_classes, *shape)), (0, 2, 2, 2)
    )
    return field.argmax(0).astype(np.int16)


def test_hand_computed_counts_and_ratios():
    pred = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    ref = np.array([[1, 0, 0, 0], [1, 1, 0, 0]])
    counts = confusion_counts(pred, ref, spacing=(0.5, 2.0))
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (1, 2, 2, 3)
    assert counts.dice == pytest.approx(2 / 6)
    assert counts.jaccard == pytest.approx(1 / 5)
    assert counts.sensitivity == pytest.approx(1 / 3)
    assert counts.specificity == pytest.approx(3 / 5)
    assert counts.precision == pytest.approx(1 / 3)
    assert counts.npv == pytest.approx(3 / 5)
    assert counts.accuracy == pytest.approx(4 / 8)
    assert counts.false_positive_rate == pytest.approx(2 / 5)
    assert counts.informedness == pytest.approx(1 / 3 + 3 / 5 - 1)
    assert counts.markedness == pytest.approx(1 / 3 + 3 / 5 - 1)
    assert counts.volume_ref == pytest.approx(3.0) and counts.volume_pred == pytest.approx(3.0)
    assert dice(pred, ref) == counts.dice and jaccard(pred, ref) == counts.jaccard
    assert sensitivity(pred, ref) == counts.sensitivity and precision(pred, ref) == counts.precision
    assert specificity(pred, ref) == counts.specificity


def test_volume_difference_in_mm3():
    ref = np.zeros((4, 4, 4), bool)
    ref[:2] = True  # 32 voxels
    pred = np.zeros_like(ref)
    pred[:1] = True  # 16 voxels
    absolute, relative = volume_difference(pred, ref, (1.0, 1.0, 1.5))
    assert absolute == pytest.approx(16 * 1.5)
    assert relative == pytest.approx(-0.5)


def test_empty_conventions():
    empty, some = np.zeros((3, 3, 3), bool), np.eye(3, dtype=bool)[None].repeat(3, 0)
    assert math.isnan(dice(empty, empty)) and math.isnan(jaccard(empty, empty))
    assert dice(empty, some) == 0.0 and dice(some, empty) == 0.0
    assert math.isnan(sensitivity(some, empty))
    assert math.isnan(precision(empty, some))
    assert math.isnan(confusion_counts(some, empty).relative_volume_difference)


def test_non_binary_mask_is_refused():
    with pytest.raises(DataError, match="label_map == k"):
        dice(np.array([0, 1, 2]), np.array([0, 1, 1]))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.5), (0.7, 0.7, 3.0)])
def test_segmentation_metrics_match_single_label_functions(spacing):
    pred, ref = label_map((20, 18, 14), 0), label_map((20, 18, 14), 1)
    names = [n for n in SEGMENTATION_METRIC_NAMES]
    values = segmentation_metrics(
        pred, ref, labels=[1, 2, 3, 7], spacing=spacing, metrics=names, tolerance=2.0
    )
    for label in (1, 2, 3):
        counts = confusion_counts(pred == label, ref == label, spacing)
        d = surface_distances(pred == label, ref == label, spacing)
        assert values[label]["dice"] == pytest.approx(counts.dice)
        assert values[label]["tn"] == counts.tn
        assert values[label]["volume_ref_mm3"] == pytest.approx(counts.volume_ref)
        assert values[label]["hd95"] == pytest.approx(d.hausdorff(95))
        assert values[label]["nsd"] == pytest.approx(d.surface_dice(2.0))
    assert math.isnan(values[7]["dice"]) and math.isnan(values[7]["hd"])  # absent from both


def test_segmentation_metrics_agree_with_monai_dice_and_surface():
    from monai.metrics import compute_dice, compute_hausdorff_distance

    spacing = (0.7, 0.7, 3.0)
    pred, ref = label_map((20, 18, 14), 2), label_map((20, 18, 14), 3)
    values = segmentation_metrics(
        pred, ref, labels=[1, 2, 3], spacing=spacing, metrics=["dice", "hd95"], surface="voxels"
    )
    p = one_hot(torch.from_numpy(pred)[None, None], 4).float()
    r = one_hot(torch.from_numpy(ref)[None, None], 4).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_dice = compute_dice(p, r, include_background=False)[0]
        monai_hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=list(spacing))[0]
    for index, label in enumerate((1, 2, 3)):
        assert values[label]["dice"] == pytest.approx(monai_dice[index].item(), rel=1e-6)
        assert values[label]["hd95"] == pytest.approx(monai_hd95[index].item(), rel=1e-6)


def test_segmentation_metrics_default_labels_and_2d():
    ref = np.zeros((8, 8), np.uint8)
    ref[1:4, 1:4] = 2
    assert list(segmentation_metrics(ref, ref)) == [2]
    assert segmentation_metrics(ref, ref)[2]["dice"] == 1.0


def test_segmentation_metrics_bad_input():
    with pytest.raises(DataError, match="integer label"):
        segmentation_metrics(np.full((4, 4, 4), 0.5), np.zeros((4, 4, 4)))
    with pytest.raises(ConfigError, match="Did you mean"):
        segmentation_metrics(np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), metrics=["dise"])


def test_batched_torch_dice_and_iou_agree_with_monai():
    from monai.metrics import DiceMetric, MeanIoU

    pred = one_hot(
        torch.from_numpy(np.stack([label_map((12, 12, 10), s) for s in (4, 5)]))[:, None], 4
    )
    ref = one_hot(
        torch.from_numpy(np.stack([label_map((12, 12, 10), s) for s in (6, 7)]))[:, None], 4
    )
    ours_dice, ours_iou = dice_batch(pred, ref), iou_batch(pred, ref)
    assert ours_dice.shape == (2, 4)
    theirs_dice = DiceMetric(include_background=True, reduction="none")(pred, ref)
    theirs_iou = MeanIoU(include_background=True, reduction="none")(pred, ref)
    torch.testing.assert_close(ours_dice, theirs_dice.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_iou, theirs_iou.double(), rtol=1e-6, atol=1e-7)


def test_batched_dice_empty_is_nan():
    zeros = torch.zeros(1, 2, 4, 4)
    assert (
        torch.isnan(dice_batch(zeros, zeros)).all() and torch.isnan(iou_batch(zeros, zeros)).all()
    )


def test_registry_has_every_segmentation_metric():
    assert set(METRICS.names()) == set(SEGMENTATION_METRIC_NAMES)
    a = np.zeros((6, 6, 6), bool)
    a[1:4, 1:4, 1:4] = True
    assert METRICS.get("dice")(a, a) == 1.0
    assert METRICS.get("hd95")(a, np.roll(a, 1, 0), (2.0, 1.0, 1.0)) == pytest.approx(2.0)
    with pytest.raises(RegistryError):
        METRICS.get("hd96")
