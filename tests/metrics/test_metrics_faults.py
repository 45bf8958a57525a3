"""Regression tests: empty-both subjects in per_case.csv, invalid NSD tolerances."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.metrics import segmentation_metrics
from voxelflow.metrics.evaluate import EvaluationResult, evaluate_folders
from voxelflow.metrics.surface import normalized_surface_dice


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.int16), np.eye(4)), str(path))


def _per_case(out: Path) -> list[dict[str, str]]:
    with open(out / "per_case.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _evaluate(tmp_path: Path, metrics: list[str]) -> EvaluationResult:
    return evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "out", workers=1, report=False,
        metrics=metrics,
    )


def test_empty_both_subject_keeps_its_own_name(tmp_path: Path) -> None:
    full = np.zeros((8, 8, 8))
    full[2:6, 2:6, 2:6] = 1
    _save(tmp_path / "pred" / "a.nii.gz", full)
    _save(tmp_path / "ref" / "a.nii.gz", full)
    _save(tmp_path / "pred" / "b.nii.gz", np.zeros((8, 8, 8)))
    _save(tmp_path / "ref" / "b.nii.gz", np.zeros((8, 8, 8)))
    result = _evaluate(tmp_path, ["dice", "nsd"])
    rows = _per_case(tmp_path / "out")
    assert sorted((r["subject"], r["label"]) for r in rows) == [("a", "1"), ("b", "1")]
    assert {row["subject"] for row in result.rows} == {"a", "b"}
    b = next(r for r in result.rows if r["subject"] == "b")
    assert math.isnan(float(b["dice"]))  # empty-mask convention: nan (docs/metrics.md)
    assert math.isnan(float(b["nsd"]))


def test_single_empty_both_subject_is_evaluated(tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "only.nii.gz", np.zeros((6, 6, 6)))
    _save(tmp_path / "ref" / "only.nii.gz", np.zeros((6, 6, 6)))
    result = _evaluate(tmp_path, ["dice"])
    assert result.ok
    rows = _per_case(tmp_path / "out")
    assert [(r["subject"], r["label"]) for r in rows] == [("only", "1")]


@pytest.mark.parametrize("tolerance", [float("nan"), -0.22, float("inf")])
def test_invalid_tolerance_is_refused(tolerance: float) -> None:
    mask = np.zeros((6, 6, 6), bool)
    mask[1:4, 1:4, 1:4] = True
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(mask, mask, tolerance=tolerance)
    with pytest.raises(ValueError, match=repr(tolerance).replace("(", r"\(")):
        segmentation_metrics(
            mask.astype(int), mask.astype(int), metrics=["nsd"], tolerance=tolerance
        )
