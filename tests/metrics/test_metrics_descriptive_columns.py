"""Descriptive columns of the evaluate output (shape, centroid, intensities) vs numpy/scipy."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from voxelflow.metrics.descriptive import label_descriptors, region_columns
from voxelflow.metrics.evaluate import evaluate_folders
from voxelflow.synthetic import make_phantom, phantom_affine

SPACING = (0.7, 0.7, 3.0)
AFFINE = phantom_affine(SPACING, angle=0.2)


def _faces(mask: np.ndarray, spacing) -> float:
    """Boundary face area by brute force: every (voxel, direction) whose neighbour is outside."""
    padded = np.pad(mask, 1)
    total = 0.0
    for axis in range(mask.ndim):
        face = np.prod([s for a, s in enumerate(spacing) if a != axis])
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[(slice(1, -1),) * mask.ndim]
            total += face * np.count_nonzero(mask & ~neighbour)
    return float(total)


def _expected(mask: np.ndarray, image: np.ndarray, spacing, affine) -> dict[str, float]:
    volume = mask.sum() * np.prod(spacing)
    area = _faces(mask, spacing)
    index = np.r_[ndimage.center_of_mass(mask), 1.0]
    inside = image[mask].astype(np.float64)
    q1, median, q3 = np.percentile(inside, [25, 50, 75])
    return {
        "surface_area": area,
        "surface_to_volume": area / volume,
        "compactness": 36 * np.pi * volume**2 / area**3,
        "centroid": (affine @ index)[:3],
        "mean": inside.mean(),
        "std": inside.std(),
        "median": median,
        "q1": q1,
        "q3": q3,
        "skewness": stats.skew(inside),
        "kurtosis": stats.kurtosis(inside),
    }


def test_label_descriptors_match_numpy_and_scipy():
    image, ref = make_phantom((20, 22, 12), num_classes=3, seed=4)
    pred = ndimage.shift(ref, (1, -1, 0), order=0)
    values = label_descriptors(pred, ref, [1, 2], spacing=SPACING, affine=AFFINE, image=image)
    for label in (1, 2):
        for who, label_map in (("ref", ref), ("pred", pred)):
            want = _expected(label_map == label, image, SPACING, AFFINE)
            got = values[label]
            assert got[f"surface_area_{who}_mm2"] == pytest.approx(want["surface_area"])
            assert got[f"surface_to_volume_{who}"] == pytest.approx(want["surface_to_volume"])
            assert got[f"compactness_{who}"] == pytest.approx(want["compactness"])
            centre = [got[f"centroid_{who}_{axis}_mm"] for axis in "xyz"]
            np.testing.assert_allclose(centre, want["centroid"], atol=1e-9)
            for stat in ("mean", "std", "median", "q1", "q3", "skewness", "kurtosis"):
                assert got[f"intensity_{stat}_{who}"] == pytest.approx(want[stat], rel=1e-9)
        ref_centre = [values[label][f"centroid_ref_{a}_mm"] for a in "xyz"]
        pred_centre = [values[label][f"centroid_pred_{a}_mm"] for a in "xyz"]
        assert values[label]["centroid_distance_mm"] == pytest.approx(
            math.dist(ref_centre, pred_centre)
        )
    assert set(values[1]) == set(region_columns(intensity=True))


def test_absent_label_and_2d():
    ref = np.zeros((12, 10), np.uint8)
    ref[2:6, 3:8] = 1
    values = label_descriptors(ref, ref, [1, 3], spacing=(0.5, 2.0), affine=np.eye(4))
    assert values[1]["surface_area_ref_mm2"] == pytest.approx(2 * (5 * 2.0 + 4 * 0.5))  # perimeter
    assert values[1]["centroid_ref_x_mm"] == pytest.approx(3.5)
    assert values[1]["centroid_distance_mm"] == 0.0
    assert values[3]["surface_area_pred_mm2"] == 0.0 and math.isnan(values[3]["compactness_ref"])
    assert "intensity_mean_ref" not in values[1]


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def test_evaluate_writes_descriptive_columns_for_both_regions(tmp_path):
    image, ref = make_phantom((20, 20, 12), num_classes=3, seed=1)
    pred = ndimage.shift(ref, (1, 0, 0), order=0).astype(np.int16)
    _save(tmp_path / "ref" / "case0.nii.gz", ref.astype(np.int16))
    _save(tmp_path / "pred" / "case0.nii.gz", pred)
    _save(tmp_path / "img" / "case0.nii.gz", image.astype(np.float32))
    other = AFFINE.copy()
    other[0, 3] += 5.0
    _save(tmp_path / "ref" / "case1.nii.gz", ref.astype(np.int16), other)
    _save(tmp_path / "pred" / "case1.nii.gz", ref.astype(np.int16), other)
    _save(tmp_path / "img" / "case1.nii.gz", image.astype(np.float32))  # off the reference grid
    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "out", labels=[1, 2, 5],
        image_dir=tmp_path / "img", workers=1, report=False,
    )  # fmt: skip
    assert [p[0] for p in result.problems] == ["case1"] and "grid" in result.problems[0][2]
    with (tmp_path / "out" / "per_case.csv").open() as handle:
        rows = {(r["subject"], r["label"]): r for r in csv.DictReader(handle)}
    row = rows[("case0", "1")]
    want = _expected(pred == 1, image.astype(np.float32), SPACING, AFFINE)
    assert float(row["intensity_median_pred"]) == pytest.approx(want["median"], rel=1e-6)
    assert float(row["compactness_pred"]) == pytest.approx(want["compactness"])
    assert float(row["centroid_distance_mm"]) == pytest.approx(0.7, rel=1e-6)  # one voxel in x
    absent = rows[("case0", "5")]
    assert float(absent["surface_area_ref_mm2"]) == 0.0 and absent["centroid_ref_x_mm"] == "nan"
    with (tmp_path / "out" / "summary.csv").open() as handle:
        summarised = {r["metric"] for r in csv.DictReader(handle)}
    assert {"intensity_kurtosis_ref", "compactness_pred", "dice"} <= summarised


def test_evaluate_without_image_or_descriptive(tmp_path):
    _, ref = make_phantom((16, 16, 8), num_classes=2, seed=2)
    _save(tmp_path / "ref" / "a.nii.gz", ref.astype(np.int16))
    _save(tmp_path / "pred" / "a.nii.gz", ref.astype(np.int16))
    plain = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert "compactness_ref" in plain.rows[0] and "intensity_mean_ref" not in plain.rows[0]
    bare = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1, descriptive=False)
    assert "compactness_ref" not in bare.rows[0]
