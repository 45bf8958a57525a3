"""``voxelflow cv`` and ``infer --folds all`` for regression, classification, autoencoder and GAN:
each scored by its own evaluation and its own default CV metric (checked against hand values and
scikit-learn)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
E2E = Path(__file__).resolve().parents[1] / "e2e"


def _e2e(name: str):
    spec = importlib.util.spec_from_file_location(f"cv_{name}", E2E / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cv(config: Path, args: list[str]) -> None:
    assert main(["train", "-c", str(config), *args, "--fold", "all"]) == 0
    assert main(["cv", "-c", str(config), *args]) == 0


def _sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


@pytest.mark.slow
def test_regression_cv_and_ensemble(tmp_path: Path) -> None:
    e2e = _e2e("test_regression_end_to_end")
    table = e2e.write_table(tmp_path / "data", with_target=True, count=4)
    run = tmp_path / "run"
    args = e2e._sets(table, run, "task.loss_border=2") + _sets("split.folds=2", "split.test=0")
    config = CONFIGS / "regression.yaml"
    _cv(config, args)
    per_case = _rows(run / "cv" / "per_case.csv")
    assert sorted(r["subject"] for r in per_case) == ["s0", "s1", "s2", "s3"]
    metric = json.loads((run / "cv" / "cv_metric.json").read_text())
    assert metric["metric"] == "mae" and not metric["higher_is_better"]
    assert metric["value"] == pytest.approx(np.mean([float(r["mae"]) for r in per_case]))
    merged = {r["subject"]: r for r in _rows(run / "cv" / "predictions" / "inferred.csv")}
    target = nib.load(tmp_path / "data" / "s0_ct.nii.gz").get_fdata()
    prediction = nib.load(merged["s0"]["pred"]).get_fdata()
    assert float(per_case[[r["subject"] for r in per_case].index("s0")]["mae"]) == pytest.approx(
        np.abs(prediction - target).mean(), rel=1e-4
    )
    # the ensemble output is the mean of the two folds' outputs
    out = tmp_path / "ens"
    assert (
        main(
            [
                "infer",
                "-c",
                str(config),
                *args,
                "--folds",
                "all",
                "--input",
                str(table),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    singles = []
    for k in range(2):
        folder = tmp_path / f"single_{k}"
        assert (
            main(
                [
                    "infer",
                    "-c",
                    str(run / f"fold_{k}" / "config.yaml"),
                    "--input",
                    str(table),
                    "--out",
                    str(folder),
                ]
            )
            == 0
        )
        singles.append(nib.load(folder / "s1_pred.nii.gz").get_fdata())
    ensemble = nib.load(out / "s1_pred.nii.gz")
    np.testing.assert_allclose(ensemble.get_fdata(), np.mean(singles, axis=0), rtol=1e-5, atol=1e-4)
    assert ensemble.shape == nib.load(tmp_path / "data" / "s1_mr.nii.gz").shape
    summary = json.loads((out / "ensemble_vs_members.json").read_text())
    errors = [
        np.abs(nib.load(out / f"s{i}_pred.nii.gz").get_fdata()
               - nib.load(tmp_path / "data" / f"s{i}_ct.nii.gz").get_fdata()).mean()
        for i in range(4)
    ]  # fmt: skip
    assert summary["metric"] == "mae" and summary["ensemble"] == pytest.approx(
        np.mean(errors), rel=1e-4
    )
    assert summary["best"] == min(summary["members"].values())


@pytest.mark.slow
def test_classification_cv_balanced_accuracy_and_ensemble(tmp_path: Path) -> None:
    from sklearn.metrics import balanced_accuracy_score

    e2e = _e2e("test_classification_end_to_end")
    table = e2e._write_table(tmp_path / "data", classes=["F", "M"] * 3)
    run = tmp_path / "run"
    args = e2e._args(table, run) + _sets("split.folds=3", "split.test=0")
    config = CONFIGS / "classification.yaml"
    _cv(config, args)
    per_case = _rows(run / "cv" / "per_case.csv")
    assert sorted(r["subject"] for r in per_case) == [f"s{i}" for i in range(6)]
    metric = json.loads((run / "cv" / "cv_metric.json").read_text())
    expected = balanced_accuracy_score(
        [r["reference"] for r in per_case], [r["prediction"] for r in per_case]
    )
    assert metric["metric"] == "balanced_accuracy" and metric["value"] == pytest.approx(expected)
    assert (run / "cv" / "report.html").exists() and (run / "cv" / "summary.csv").exists()
    out = tmp_path / "ens"
    assert (
        main(
            [
                "infer",
                "-c",
                str(config),
                *args,
                "--folds",
                "all",
                "--input",
                str(table),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    singles = []
    for k in range(3):
        folder = tmp_path / f"single_{k}"
        assert (
            main(
                [
                    "infer",
                    "-c",
                    str(run / f"fold_{k}" / "config.yaml"),
                    "--input",
                    str(table),
                    "--out",
                    str(folder),
                ]
            )
            == 0
        )
        singles.append(_rows(folder / "predictions.csv"))
    ensemble = _rows(out / "predictions.csv")
    for i, row in enumerate(ensemble):
        for name in ("prob_F", "prob_M"):
            mean = np.mean([float(s[i][name]) for s in singles])
            assert float(row[name]) == pytest.approx(mean, abs=2e-6)
        assert row["prediction"] == max(("F", "M"), key=lambda c: float(row[f"prob_{c}"]))


@pytest.mark.slow
def test_autoencoder_cv_reconstruction_mae(tmp_path: Path) -> None:
    e2e = _e2e("test_autoencoder_end_to_end")
    table = e2e._write_table(tmp_path / "data")
    run = tmp_path / "run"
    args = _sets(
        *e2e.TINY, f"dataset.csv={table}", f"system.run_dir={run}", "split.folds=2", "split.test=0"
    )
    config = CONFIGS / "autoencoder.yaml"
    _cv(config, args)
    per_case = _rows(run / "cv" / "per_case.csv")
    assert sorted(r["subject"] for r in per_case) == ["s0", "s1", "s2", "s3"]
    metric = json.loads((run / "cv" / "cv_metric.json").read_text())
    assert metric["metric"] == "mae"
    assert metric["value"] == pytest.approx(np.mean([float(r["mae"]) for r in per_case]))
    merged = {r["subject"]: r for r in _rows(run / "cv" / "predictions" / "reconstructions.csv")}
    image = nib.load(tmp_path / "data" / "s2_t1.nii.gz").get_fdata()
    recon = nib.load(merged["s2"]["recon"]).get_fdata()
    s2 = next(r for r in per_case if r["subject"] == "s2")
    assert float(s2["mae"]) == pytest.approx(np.abs(recon - image).mean(), rel=1e-4)
    assert (
        main(
            [
                "infer",
                "-c",
                str(config),
                *args,
                "--folds",
                "all",
                "--input",
                str(table),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_gan_cv_distribution_metric_per_fold(tmp_path: Path) -> None:
    e2e = _e2e("test_gan_end_to_end")
    table = e2e._slices(tmp_path / "data")
    run = tmp_path / "run"
    args = e2e._args(table, run, "training.max_iterations=2", "split.folds=2", "split.test=0")
    config = CONFIGS / "gan.yaml"
    _cv(config, args)
    per_case = _rows(run / "cv" / "per_case.csv")
    assert [r["subject"] for r in per_case] == ["fold_0", "fold_1"]
    metric = json.loads((run / "cv" / "cv_metric.json").read_text())
    assert metric["metric"] == "histogram_wasserstein"
    assert metric["value"] == pytest.approx(
        np.mean([float(r["histogram_wasserstein"]) for r in per_case])
    )
