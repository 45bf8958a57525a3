"""``voxelflow evaluate`` takes its subjects from ``inferred.csv``: references from the config's
dataset table (or a folder, ``<subject>_*`` names), extra outputs (probabilities, uncertainty)
and unpredicted subjects are not problems."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from voxelflow.cli.main import main


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    data, pred = tmp_path / "data", tmp_path / "run" / "predictions"
    data.mkdir()
    pred.mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    label = np.zeros((10, 10, 6), np.uint8)
    label[2:6, 2:6, 1:4] = 1
    lines = ["subject,image,label"]
    for name in ("a", "b", "c"):  # c is in the table but was not inferred
        nib.save(nib.Nifti1Image(label, affine), data / f"{name}_label.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.float32), affine), data / f"{name}_t1.nii.gz")
        lines.append(f"{name},{data / f'{name}_t1.nii.gz'},{data / f'{name}_label.nii.gz'}")
    (data / "table.csv").write_text("\n".join(lines) + "\n")
    shifted = np.roll(label, 1, axis=0)
    for name, prediction in (("a", label), ("b", shifted)):
        nib.save(nib.Nifti1Image(prediction, affine), pred / f"{name}_seg.nii.gz")
        nib.save(nib.Nifti1Image(np.ones((10, 10, 6), np.float32), affine),
                 pred / f"{name}_uncertainty.nii.gz")
    with open(pred / "inferred.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "prediction", "uncertainty"])
        for name in ("a", "b"):
            writer.writerow([name, pred / f"{name}_seg.nii.gz", pred / f"{name}_uncertainty.nii.gz"])
    config = tmp_path / "experiment.yaml"
    config.write_text(f"dataset: {{csv: {data / 'table.csv'}}}\nsystem: {{run_dir: {tmp_path / 'run'}}}\n"
                      "evaluation: {metrics: [dice]}\n")
    return config, data


def _dice(out: Path) -> dict[str, float]:
    with open(out / "per_case.csv", newline="") as handle:
        return {row["subject"]: float(row["dice"]) for row in csv.DictReader(handle)}


def test_references_from_the_dataset_table(tmp_path: Path) -> None:
    config, _ = _setup(tmp_path)
    assert main(["evaluate", "-c", str(config), "--no-report"]) == 0
    dice = _dice(tmp_path / "run" / "evaluation")
    assert set(dice) == {"a", "b"} and dice["a"] == 1.0
    assert abs(dice["b"] - 0.75) < 1e-9  # 4×4×3 box shifted by one voxel: overlap 3/4


def test_references_from_a_folder_with_suffixed_names(tmp_path: Path) -> None:
    config, data = _setup(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "-c", str(config), "--ref", str(data), "--out", str(out), "--no-report"]) == 1
    # the data folder holds a_label and a_t1: the prefix match is ambiguous, so a and b lack a reference
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("a", "b"):
        (refs / f"{name}_label.nii.gz").write_bytes((data / f"{name}_label.nii.gz").read_bytes())
    assert main(["evaluate", "--pred", str(tmp_path / "run" / "predictions"), "--ref", str(refs),
                 "--out", str(out), "--no-report"]) == 0
    assert set(_dice(out)) == {"a", "b"}
