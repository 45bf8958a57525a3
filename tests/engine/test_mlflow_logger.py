"""The optional MLflow logger, against a local ``sqlite:///`` store (skipped without mlflow)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import voxelflow as vf
from voxelflow.engine.logging import MLFLOW_RUN_FILE, flat_params, log_artifacts, read_scalars
from voxelflow.errors import ConfigError


def test_flat_params_by_hand() -> None:
    config = {
        "network": {"name": "unet", "channels": [8, 16]},
        "augmentation": [{"name": "flip", "p": 0.5}],
        "split": {"test": None, "stratify": False},
    }
    assert flat_params(config) == {
        "network.name": "unet",
        "network.channels": "[8, 16]",
        "augmentation.0.name": "flip",
        "augmentation.0.p": "0.5",
        "split.test": "null",
        "split.stratify": "false",
    }


def test_missing_mlflow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxelflow.engine.logging import MlflowLogger

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"voxelflow\[mlflow\]"):
        MlflowLogger(tmp_path, {"tracking_uri": "sqlite:///x.db"}, None)


def _dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = ["subject,image,label"]
    for i in range(2):
        image, label = vf.make_phantom((12, 12, 8), num_classes=2, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


@pytest.mark.slow
def test_training_logs_params_metrics_and_artifacts_to_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")  # the sqlite store needs it (and alembic)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "dataset": {"csv": str(_dataset(tmp_path / "data"))},
        "split": {"validation": 0.5},
        "sampling": {"window": [8, 8, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0,
                     "validate_every": 2, "checkpoint_every": 2, "log_every": 1},
        "logging": {"mlflow": {"tracking_uri": uri, "experiment": "first-hour",
                               "artifact_location": str(tmp_path / "artifacts")}},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    vf.Experiment.from_dict(config).train()
    run_dir = tmp_path / "run"
    assert (run_dir / MLFLOW_RUN_FILE).is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("first-hour")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["network.name"] == "unet" and params["network.channels"] == "[2, 4]"
    assert params["training.max_iterations"] == "2"
    assert params["logging.mlflow.experiment"] == "first-hour"
    # every scalar of scalars.csv (the run folder's own record) is in MLflow, same step and value
    csv_rows = read_scalars(run_dir / "scalars.csv")
    assert {name for _, name, _ in csv_rows} >= {"train/loss"}
    for step, name, value in csv_rows:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        assert history[step] == pytest.approx(value, rel=1e-6), (name, step)
    assert "scalars.csv" in [a.path for a in client.list_artifacts(run.info.run_id)]

    # later steps (evaluation report, zoo entry) upload into the same run
    report = tmp_path / "evaluation"
    report.mkdir()
    (report / "summary.csv").write_text("label,dice\n1,0.5\n")
    assert log_artifacts(run_dir, {"evaluation": report})
    names = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")]
    assert names == ["evaluation/summary.csv"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # still finished
    from voxelflow.zoo.pack import pack_run

    pack_run(run_dir, out=tmp_path / "entry.zip", name="first-hour")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "zoo")] == ["zoo/entry.zip"]

    # a resumed training continues the same MLflow run
    vf.Experiment.from_dict(config, ["training.max_iterations=3"]).train()
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [1, 2, 3]


def test_log_artifacts_is_a_no_op_without_mlflow(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("logging: {mlflow: null}\n")
    assert log_artifacts(tmp_path, {"evaluation": tmp_path}) is False
