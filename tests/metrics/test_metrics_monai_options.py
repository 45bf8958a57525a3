"""Options a MONAI user reaches for, checked against MONAI, scipy and sklearn on the same data.

Directed Hausdorff in each direction (``mode="forward"/"backward"``, metric names
``hd_pred_to_ref`` ...), the generalized Dice as a metric, FNR/FDR/MCC in the confusion family,
and the pinned Dice convention for two empty masks. Surface comparisons with MONAI use the
``"voxels"`` surface, MONAI's own definition.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from voxelflow.cli.main import main
from voxelflow.errors import ConfigError
from voxelflow.metrics import (
    METRICS,
    confusion_counts,
    dice,
    generalized_dice,
    hausdorff_distance,
    segmentation_metrics,
)
from voxelflow.metrics.evaluate import evaluate_folders

monai_metrics = pytest.importorskip("monai.metrics")


def _blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping, irregular masks (a box each, with random voxels flipped)."""
    rng = np.random.default_rng(seed)
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    pred[tuple(slice(2, s - 4) for s in shape)] = True
    ref[tuple(slice(3, s - 2) for s in shape)] = True
    pred ^= rng.random(shape) > 0.97
    ref[tuple(slice(1, 3) for _ in shape)] = True  # a far corner only the reference has
    return pred, ref


def _border_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Centres (mm) of the foreground voxels with a background face-neighbour."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    border = mask & ~ndimage.binary_erosion(mask, structure, border_value=0)
    return np.argwhere(border) * np.asarray(spacing)


def _monai_hd(pred: np.ndarray, ref: np.ndarray, spacing, *, directed: bool, percentile=None):
    tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
    value = monai_metrics.compute_hausdorff_distance(
        tensor(pred), tensor(ref), include_background=True, directed=directed,
        percentile=percentile, spacing=list(spacing),
    )  # fmt: skip
    return float(value[0, 0])


@pytest.mark.parametrize(
    "shape, spacing", [((14, 12, 10), (0.8, 1.0, 2.5)), ((20, 16), (1.0, 0.6))]
)
def test_each_hausdorff_direction_matches_monai_and_scipy(shape, spacing) -> None:
    pred, ref = _blobs(shape, seed=1)
    forward = hausdorff_distance(pred, ref, spacing, mode="forward", surface="voxels")
    backward = hausdorff_distance(pred, ref, spacing, mode="backward", surface="voxels")
    symmetric = hausdorff_distance(pred, ref, spacing, surface="voxels")
    pred_points, ref_points = _border_points(pred, spacing), _border_points(ref, spacing)
    assert forward == pytest.approx(directed_hausdorff(pred_points, ref_points)[0])
    assert backward == pytest.approx(directed_hausdorff(ref_points, pred_points)[0])
    assert forward != pytest.approx(backward)  # the case tells the directions apart
    assert symmetric == pytest.approx(max(forward, backward))
    # MONAI: directed=True is prediction → reference, directed=False the larger direction
    assert forward == pytest.approx(_monai_hd(pred, ref, spacing, directed=True), rel=1e-5)
    assert symmetric == pytest.approx(_monai_hd(pred, ref, spacing, directed=False), rel=1e-5)
    hd95 = hausdorff_distance(pred, ref, spacing, percentile=95, mode="forward", surface="voxels")
    monai95 = _monai_hd(pred, ref, spacing, directed=True, percentile=95)
    assert hd95 == pytest.approx(monai95, rel=1e-5)


def test_directed_is_a_deprecated_name_of_symmetric() -> None:
    pred, ref = _blobs((12, 12, 12), seed=2)
    with pytest.warns(DeprecationWarning, match="now called mode='symmetric'"):
        old = hausdorff_distance(pred, ref, percentile=95, mode="directed")
    assert old == hausdorff_distance(pred, ref, percentile=95, mode="symmetric")
    with pytest.raises(ConfigError, match="expected a Hausdorff mode"):
        hausdorff_distance(pred, ref, mode="sideways")


def test_directed_metric_names_in_a_label_map_row() -> None:
    pred, ref = _blobs((14, 12, 10), seed=3)
    spacing = (0.8, 1.0, 2.5)
    names = [
        "hd",
        "hd_pred_to_ref",
        "hd_ref_to_pred",
        "hd95",
        "hd95_pred_to_ref",
        "hd95_ref_to_pred",
    ]
    row = segmentation_metrics(pred, ref, labels=[1], spacing=spacing, metrics=names)[1]
    assert row["hd_pred_to_ref"] == pytest.approx(
        hausdorff_distance(pred, ref, spacing, mode="forward")
    )
    assert row["hd_ref_to_pred"] == pytest.approx(
        hausdorff_distance(pred, ref, spacing, mode="backward")
    )
    assert row["hd"] == pytest.approx(max(row["hd_pred_to_ref"], row["hd_ref_to_pred"]))
    assert row["hd95"] == pytest.approx(max(row["hd95_pred_to_ref"], row["hd95_ref_to_pred"]))


def _one_hot(label_map: np.ndarray, classes: int) -> torch.Tensor:
    hot = np.stack([label_map == c for c in range(classes)]).astype(np.float32)
    return torch.from_numpy(hot[None])


@pytest.mark.parametrize("weighting", ["square", "simple", "uniform"])
def test_generalized_dice_matches_monai(weighting: str) -> None:
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 4, (10, 9, 8))
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 4, ref.shape))
    pred[pred == 3] = 0  # label 3: only in the reference
    ref[ref == 2] = 0  # label 2: only in the prediction (an infinite weight replaced by the max)
    monai = monai_metrics.compute_generalized_dice(
        _one_hot(pred, 4),
        _one_hot(ref, 4),
        include_background=False,
        weight_type=weighting,
        sum_over_classes=True,
    )
    assert generalized_dice(pred, ref, weighting=weighting) == pytest.approx(float(monai[0, 0]))


def test_generalized_dice_hand_values_and_empty_maps() -> None:
    ref, pred = np.array([[1, 1, 2, 0]]), np.array([[1, 0, 2, 2]])
    # w1 = 1/2², w2 = 1/1²: 2·(1/4·1 + 1·1) / (1/4·3 + 1·3) = 2.5 / 3.75
    assert generalized_dice(pred, ref) == pytest.approx(2.5 / 3.75)
    empty = np.zeros((3, 3), int)
    assert math.isnan(generalized_dice(empty, empty))  # MONAI gives 1; nothing is scored
    assert generalized_dice(np.ones((3, 3), int), empty) == 0.0
    # one label: the generalized Dice is the Dice
    pred_mask, ref_mask = _blobs((10, 10, 10), seed=5)
    assert METRICS.get("generalized_dice")(pred_mask, ref_mask) == pytest.approx(
        dice(pred_mask, ref_mask)
    )


def test_fnr_fdr_mcc_match_monai_and_sklearn() -> None:
    from sklearn.metrics import matthews_corrcoef

    pred, ref = _blobs((12, 11, 10), seed=6)
    counts = confusion_counts(pred, ref)
    matrix = monai_metrics.get_confusion_matrix(
        torch.from_numpy(pred[None, None].astype(np.float32)),
        torch.from_numpy(ref[None, None].astype(np.float32)),
    )
    for ours, theirs in (("fnr", "miss rate"), ("fdr", "false discovery rate"), ("mcc", "mcc")):
        expected = float(monai_metrics.compute_confusion_matrix_metric(theirs, matrix)[0, 0])
        assert METRICS.get(ours)(pred, ref) == pytest.approx(expected, rel=1e-5), ours
    assert counts.matthews_correlation == pytest.approx(
        matthews_corrcoef(ref.ravel(), pred.ravel())
    )
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    assert counts.false_negative_rate == pytest.approx(fn / (fn + tp))
    assert counts.false_discovery_rate == pytest.approx(fp / (fp + tp))
    # undefined ratios are nan, never a made-up 0 (sklearn's MCC of a constant prediction)
    empty = np.zeros((4, 4), bool)
    assert math.isnan(confusion_counts(empty, ref[..., 0][:4, :4]).matthews_correlation)
    assert math.isnan(confusion_counts(empty, empty).false_negative_rate)


def test_mcc_does_not_overflow_on_large_counts() -> None:
    from voxelflow.metrics import ConfusionCounts

    counts = ConfusionCounts(tp=3 * 10**9, fp=10**9, fn=10**9, tn=4 * 10**10)
    assert counts.matthews_correlation == pytest.approx(
        (3e9 * 4e10 - 1e18) / math.sqrt(4e9 * 4e9 * 4.1e10 * 4.1e10)
    )


def test_dice_of_two_empty_masks_is_nan_everywhere(tmp_path: Path) -> None:
    """The pinned convention (docs/metrics.md, overlap table: `dice` both empty = nan)."""
    empty = np.zeros((6, 6, 6), bool)
    assert math.isnan(dice(empty, empty))
    assert math.isnan(METRICS.get("dice")(empty, empty))
    assert math.isnan(segmentation_metrics(empty, empty, labels=[1], metrics=["dice"])[1]["dice"])
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        nib.save(
            nib.Nifti1Image(np.zeros((6, 6, 6), np.int16), np.eye(4)),
            tmp_path / folder / "a.nii.gz",
        )
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", workers=1,
                              report=False, metrics=["dice"])  # fmt: skip
    assert result.ok and math.isnan(float(result.rows[0]["dice"]))
    with open(tmp_path / "out" / "per_case.csv", newline="") as handle:
        assert math.isnan(float(next(csv.DictReader(handle))["dice"]))
    docs = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    assert "| `dice` | 2TP / (2TP + FP + FN) | – | nan |" in docs


def test_new_metrics_are_reachable_from_the_evaluate_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, ref = _blobs((12, 12, 12), seed=7)
    for folder, mask in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask.astype(np.int16), np.eye(4)), tmp_path / folder / "a.nii.gz")
    names = "generalized_dice,fnr,fdr,mcc,hd_pred_to_ref,hd95_ref_to_pred"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "out"), "--metrics", names, "--workers", "1",
                 "--no-report"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "per_case.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["mcc"]) == pytest.approx(confusion_counts(pred, ref).matthews_correlation)
    assert float(row["hd_pred_to_ref"]) == pytest.approx(
        hausdorff_distance(pred, ref, mode="forward")
    )
    assert float(row["generalized_dice"]) == pytest.approx(dice(pred, ref))


def test_generalized_dice_is_one_value_per_subject_on_every_label_row(tmp_path: Path) -> None:
    ref = np.zeros((10, 10, 10), np.int16)
    ref[1:5, 1:5, 1:5], ref[6:9, 6:9, 6:9] = 1, 2
    pred = np.roll(ref, 1, axis=0)
    other = np.zeros_like(ref)
    other[2:6, 2:6, 2:6] = 1  # subject b has label 1 only: label 2 is filled as absent
    for folder, a, b in (("pred", pred, other), ("ref", ref, other)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / folder / "a.nii.gz")
        nib.save(nib.Nifti1Image(b, np.eye(4)), tmp_path / folder / "b.nii.gz")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, workers=1,
                              metrics=["generalized_dice"])  # fmt: skip
    values = {(r["subject"], r["label"]): r["generalized_dice"] for r in result.rows}
    assert values[("a", 1)] == values[("a", 2)] == pytest.approx(generalized_dice(pred, ref))
    assert values[("b", 1)] == values[("b", 2)] == 1.0
