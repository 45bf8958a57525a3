"""Python API: ``Experiment.cross_validate()`` and ``Experiment.infer(..., folds="all")``."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cv_data import segmentation_config, write_phantoms

from voxelflow import Experiment
from voxelflow.cli.main import main


@pytest.mark.slow
def test_cross_validate_then_infer_with_all_folds(tmp_path: Path) -> None:
    table = write_phantoms(tmp_path / "data", 6)
    experiment = Experiment.from_dict(segmentation_config(table, tmp_path / "run"))
    result = experiment.cross_validate()
    assert result.metric.name == "dice" and len(result.per_subject) == 6
    assert sorted(result.fold_of) == [f"s{i}" for i in range(6)]
    with open(result.out_dir / "per_case.csv", newline="") as handle:
        assert {row["subject"] for row in csv.DictReader(handle)} == set(result.per_subject)
    assert result.postprocessing is not None and "before" in result.postprocessing
    # a second call trains nothing (folds finished) and gives the same figures
    again = experiment.cross_validate()
    assert again.value == pytest.approx(result.value)
    # in-memory ensemble == the CLI ensemble of the same image
    image = nib.load(tmp_path / "data" / "s0_img.nii.gz")
    predictions = experiment.infer((np.asarray(image.dataobj), image.affine), folds="all")
    assert len(predictions) == 1
    seg = predictions[0].images["seg"].numpy()[0]
    out = tmp_path / "cli"
    assert (
        main(
            [
                "infer",
                "-c",
                str(experiment.run_dir / "fold_0" / "config.yaml"),
                "--folds",
                "all",
                "--run-dir",
                str(experiment.run_dir),
                "--input",
                str(tmp_path / "data" / "s0_img.nii.gz"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(seg, np.asarray(nib.load(out / "s0_img_seg.nii.gz").dataobj))
    assert seg.shape == image.shape
