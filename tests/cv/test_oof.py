"""``voxelflow cv -c X``: out-of-fold predictions of every subject, evaluated once each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.cv.oof import run_cv
from voxelflow.errors import VoxelflowError


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    both = pred.sum() + ref.sum()
    return float("nan") if both == 0 else 2.0 * float((pred & ref).sum()) / both


def test_unfinished_fold_is_named_with_the_command(seg_config: Path, capsys) -> None:
    assert main(["train", "-c", str(seg_config), "--fold", "0"]) == 0
    assert main(["cv", "-c", str(seg_config)]) == 1
    err = capsys.readouterr().err
    assert "fold 1" in err and f"voxelflow train -c {seg_config} --fold 1" in err


@pytest.mark.slow
def test_cv_segmentation_every_subject_once(seg_config: Path, capsys) -> None:
    assert main(["train", "-c", str(seg_config), "--fold", "all"]) == 0
    assert main(["cv", "-c", str(seg_config)]) == 0
    out = capsys.readouterr().out
    assert "out-of-fold dice" in out and "postprocessing" in out
    root = Path(load_experiment(seg_config).system.run_dir)
    cv = root / "cv"
    per_case = _rows(cv / "per_case.csv")
    assert {r["subject"] for r in per_case} == {f"s{i}" for i in range(6)}
    pairs = [(r["subject"], r["label"]) for r in per_case]
    assert len(pairs) == len(set(pairs))  # every subject and label exactly once
    # same columns as `voxelflow evaluate` on the same predictions
    assert (
        main(
            [
                "evaluate",
                "-c",
                str(root / "fold_0" / "config.yaml"),
                "--pred",
                str(cv / "predictions" / "fold_0"),
                "--out",
                str(root / "ev"),
                "--no-report",
            ]
        )
        == 0
    )
    assert list(_rows(root / "ev" / "per_case.csv")[0]) == list(per_case[0])
    assert (cv / "summary.csv").exists() and (cv / "report.html").exists()
    # every prediction came from the model of the fold that validated it (the split's fold)
    split = {r["subject"]: r["fold"] for r in _rows(root / "split.csv")}
    merged = _rows(cv / "predictions" / "inferred.csv")
    assert {r["subject"]: r["fold"] for r in merged} == split
    # the Dice in per_case.csv is the hand-computed Dice of the written prediction
    data = root.parent / "data"
    for row in per_case:
        pred = np.asarray(
            nib.load(
                cv
                / "predictions"
                / f"fold_{split[row['subject']]}"
                / f"{row['subject']}_seg.nii.gz"
            ).dataobj
        )
        ref = np.asarray(nib.load(data / f"{row['subject']}_seg.nii.gz").dataobj)
        label = int(row["label"])
        expected = _dice(pred == label, ref == label)
        assert (np.isnan(expected) and row["dice"] in ("nan", "")) or float(
            row["dice"]
        ) == pytest.approx(expected)
    metric = json.loads((cv / "cv_metric.json").read_text())
    assert metric["metric"] == "dice" and metric["n"] == 6
    means = {}
    for row in per_case:
        if row["dice"] not in ("nan", ""):
            means.setdefault(row["subject"], []).append(float(row["dice"]))
    for subject, values in means.items():
        assert metric["per_subject"][subject] == pytest.approx(sum(values) / len(values))
    decision = json.loads((cv / "postprocessing.json").read_text())
    assert decision["after"] >= decision["before"] - 1e-12
    assert set(decision["classes"]) <= {"2", "4"}


def test_a_subject_in_two_validation_folds_is_refused(seg_config: Path) -> None:
    experiment = load_experiment(seg_config)
    root = Path(experiment.system.run_dir)
    from voxelflow.cv.folds import ensure_split
    from voxelflow.cv.oof import validation_folds
    from voxelflow.io.table import load_table

    path = ensure_split(experiment, root)
    rows = load_table(experiment.dataset)
    fold_of = validation_folds(experiment, root, rows)
    assert sorted(fold_of) == sorted(r.name for r in rows)
    # a hand-edited file listing one subject twice is refused when read
    lines = path.read_text().splitlines()
    path.write_text(
        "\n".join([*lines, lines[1].replace(",0,", ",1,").replace(",2,", ",1,")]) + "\n"
    )
    with pytest.raises(VoxelflowError, match="appears twice"):
        validation_folds(experiment, root, rows)
    with pytest.raises(VoxelflowError, match="fold 0"):
        run_cv(experiment, root)
