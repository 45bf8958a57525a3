"""The classification and image-regression reference configs train, resume, infer and evaluate
through the CLI on tiny phantoms; bad targets fail naming subjects and values; the quick demo runs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.engine.run import train_experiment
from voxelflow.errors import DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Shrink a reference config to seconds on CPU; every other setting stays as shipped.
TINY = [
    "sampling.window=[12,12,8]",
    "sampling.queue_length=2",
    "training.max_iterations=2",
    "training.batch_size=2",
    "training.num_workers=0",
    "training.validate_every=2",
    "training.checkpoint_every=2",
    "split.validation=0.34",
    "scheduler.warmup_iterations=1",
    "network.features=[4,8]",
    "preprocessing.spacing=null",
    "split.stratify_column=null",
]


def _write_table(folder: Path, *, classes: list[str], name: str = "table.csv") -> Path:
    """Phantoms whose brightness follows the class (sex) and the value (age)."""
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir(exist_ok=True)
    rows = []
    for i, sex in enumerate(classes):
        image, _ = make_phantom((16, 18, 12), num_classes=3, seed=i)
        scaled = (image * (1.0 + (sex == "M"))).astype(np.float32)
        path = folder / f"s{i}_t1.nii.gz"
        nib.save(nib.Nifti1Image(scaled, phantom_affine((1.0, 1.2, 1.5))), path)
        rows.append({"subject": f"s{i}", "t1": str(path), "sex": sex, "age": str(20 + 7 * i)})
    with open(folder / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / name


def _args(table: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [*TINY, f"dataset.csv={table}", f"system.run_dir={run_dir}", *extra]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["classification.yaml", "image_regression.yaml"])
def test_reference_config_train_resume_infer_evaluate(config: str, tmp_path: Path) -> None:
    path = CONFIGS / config
    kind = load_experiment(path).task["kind"]
    table = _write_table(tmp_path / "data", classes=["F", "M", "F", "M", "F", "M"])
    run_dir = tmp_path / "run"
    args = _args(table, run_dir)
    assert main(["train", "-c", str(path), *args]) == 0
    assert main(["train", "-c", str(path), *args, "--set", "training.max_iterations=3"]) == 0
    assert (run_dir / "checkpoints").is_dir()
    predictions = tmp_path / "pred"
    assert (
        main(["infer", "-c", str(path), *args, "--input", str(table), "--out", str(predictions)])
        == 0
    )
    with open(predictions / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["subject"] for row in rows] == [f"s{i}" for i in range(6)]
    if kind == "class":
        assert {row["prediction"] for row in rows} <= {"F", "M"}
        for row in rows:
            assert float(row["prob_F"]) + float(row["prob_M"]) == pytest.approx(1.0, abs=1e-5)
    else:  # values come back in years, not standardised units
        assert all(5.0 < float(row["prediction"]) < 80.0 for row in rows)
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "-c", str(path), *args, "--pred", str(predictions), "--out", str(out)])
        == 0
    )
    with open(out / "summary.csv", newline="") as handle:
        summary = {row["metric"]: float(row["value"]) for row in csv.DictReader(handle)}
    assert summary["num_subjects"] == 6
    assert ("accuracy" in summary) if kind == "class" else ("mae" in summary)


def test_training_subjects_without_target_are_listed(tmp_path: Path) -> None:
    table = _write_table(tmp_path / "data", classes=["F", "", "M", "", "F", "M"])
    experiment = load_experiment(
        CONFIGS / "classification.yaml",
        [*TINY, f"dataset.csv={table}", f"system.run_dir={tmp_path / 'run'}", "split.validation=0"],
    )

    with pytest.raises(DataError, match=r"'sex'.*2 subject\(s\): \['s1', 's3'\]"):
        train_experiment(experiment)


@pytest.mark.slow
def test_unseen_class_at_inference_names_subject_and_value(tmp_path: Path, capsys) -> None:
    config = str(CONFIGS / "classification.yaml")
    table = _write_table(tmp_path / "data", classes=["F", "M", "F", "M"])
    args = _args(table, tmp_path / "run", "split.validation=0.5")
    assert main(["train", "-c", config, *args]) == 0
    new = _write_table(tmp_path / "new", classes=["F", "X"], name="new.csv")
    capsys.readouterr()
    assert (
        main(["infer", "-c", config, *args, "--input", str(new), "--out", str(tmp_path / "pred")])
        != 0
    )
    assert re.search(r"subject 's1'.*\['F', 'M'\], got 'X'", capsys.readouterr().err)


@pytest.mark.slow
def test_quick_demo_writes_report_with_pictures(tmp_path: Path) -> None:
    from voxelflow.demo.classification import LEVELS, run_demo

    figures = run_demo(tmp_path / "demo", quick=True)
    report = figures["report"].read_text()
    assert "ONE anatomy" in report and "majority class" in report
    for picture in (
        "examples-quick.png",
        "run-classification-quick/evaluation/confusion_matrix.png",
        "run-regression-quick/evaluation/scatter.png",
    ):
        assert picture in report and (tmp_path / "demo" / picture).stat().st_size > 1000
    assert 0.0 <= figures["classification"]["accuracy"] <= 1.0
    assert figures["baseline"]["majority_class"] in LEVELS
    assert figures["regression"]["mae"] > 0


def test_class_balanced_config_weights_the_training_queue(tmp_path: Path) -> None:
    from voxelflow.engine.run import build_training_pipeline

    table = _write_table(tmp_path / "data", classes=["F", "F", "F", "M", "F", "M"])
    experiment = load_experiment(
        CONFIGS / "classification.yaml", [*TINY, f"dataset.csv={table}", "split.validation=0"]
    )
    pipeline = build_training_pipeline(experiment, tmp_path / "run")
    # 4 F and 2 M subjects: each F drawn with weight 1/4, each M with 1/2 (sum 2)
    expected = [0.125, 0.125, 0.125, 0.25, 0.125, 0.25]
    np.testing.assert_allclose(pipeline.queue.subject_probabilities, expected)
