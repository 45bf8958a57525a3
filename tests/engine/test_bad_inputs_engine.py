"""Bad inputs of the engine (issue #6) not covered elsewhere: more label values than
``num_classes``, and a checkpoint written by another application (train resume and infer)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.cli.main import main
from voxelflow.engine.checkpoint import check_application, find_checkpoint
from voxelflow.errors import CheckpointError
from voxelflow.networks import build_network
from voxelflow.synthetic import make_phantom, phantom_affine


def _write_experiment(root: Path, *, label_classes: int = 3, extra: str = "") -> Path:
    data = root / "data"
    data.mkdir()
    lines = ["subject,image,label"]
    for i in range(3):
        image, label = make_phantom((16, 14, 12), num_classes=label_classes, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), data / f"s{i}_image.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), data / f"s{i}_label.nii.gz")
        lines.append(f"s{i},{data}/s{i}_image.nii.gz,{data}/s{i}_label.nii.gz")
    (data / "table.csv").write_text("\n".join(lines) + "\n")
    config = root / "experiment.yaml"
    config.write_text(
        f"""dataset: {{csv: {data / "table.csv"}, inputs: {{image: [image], label: [label]}}}}
split: {{validation: 0.34, test: 0.0}}
sampling: {{window: [8, 8, 8], windows_per_subject: 1, queue_length: 1}}
network: {{name: toynet}}
loss: {{name: dice_ce}}
training: {{max_iterations: 1, batch_size: 1, num_workers: 0, validate_every: 1}}
evaluation: {{metrics: [dice]}}
system: {{run_dir: {root / "run"}, device: cpu}}
{extra}"""
    )
    return config


def test_more_label_values_than_num_classes_fails_at_data_preparation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(tmp_path, label_classes=4, extra="num_classes: 2\n")
    assert main(["train", "-c", str(config)]) == 2  # a configuration error, one line
    error = capsys.readouterr().err
    assert "num_classes: expected at least 4 classes for the label values [0, 1, 2, 3]" in error
    assert "got num_classes: 2" in error and "Traceback" not in error
    run = tmp_path / "run"
    assert not (run / "cache").exists() and not (run / "checkpoints").exists()  # before any work


def test_configured_label_values_missing_a_value_names_file_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(
        tmp_path, label_classes=4, extra="num_classes: 2\npreprocessing: {label_values: [0, 1]}\n"
    )
    assert main(["train", "-c", str(config)]) != 0
    error = capsys.readouterr().err
    assert "unknown label value 2" in error and "_label.nii.gz" in error
    assert "expected one of [0, 1]" in error


def _replace_with_regression_checkpoint(run: Path) -> Path:
    """Overwrite the run's checkpoints with a regression application's (1 output channel)."""
    path = find_checkpoint(run, which="last")
    state = torch.load(path, weights_only=True)
    other = build_network("toynet", spatial_dims=3, in_channels=1, out_channels=1)
    state["application"] = "regression"
    state["modules"] = {"network": other.state_dict()}
    for checkpoint in (run / "checkpoints").glob("step_*.pt"):
        torch.save(state, checkpoint)
    return path


@pytest.mark.slow
def test_checkpoint_of_another_application_is_refused_naming_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(tmp_path)
    assert main(["train", "-c", str(config)]) == 0
    run = tmp_path / "run"
    path = _replace_with_regression_checkpoint(run)
    capsys.readouterr()

    out = tmp_path / "predictions"
    assert main(["infer", "-c", str(config), "--input", str(tmp_path / "data" / "table.csv"),
                 "--out", str(out), "--checkpoint", "last"]) == 1  # fmt: skip
    error = capsys.readouterr().err
    assert f"{path}: expected a checkpoint of application 'segmentation', got 'regression'" in error
    assert "shape mismatch:" in error and "(expected (3," in error and "got (1," in error

    resume = ["train", "-c", str(config), "--set", "training.max_iterations=2"]
    assert main(resume) == 1
    error = capsys.readouterr().err
    assert "expected a checkpoint of application 'segmentation', got 'regression'" in error
    assert "shape mismatch:" in error


class _App:
    name = "segmentation"

    def __init__(self) -> None:
        self.modules = {"network": torch.nn.Conv3d(1, 2, 1)}


def test_check_application_lists_missing_unexpected_and_absent_modules() -> None:
    app = _App()
    check_application({"application": "segmentation", "modules": {}}, app, source="x.pt")
    check_application({"modules": {}}, app, source="x.pt")  # older checkpoints: no name
    renamed = {f"inner.{k}": v for k, v in app.modules["network"].state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"x\.pt: expected a checkpoint of application 'segmentation', got 'gan'; 'network': "
        r"missing keys: bias, weight; unexpected keys: inner\.bias, inner\.weight",
    ):
        check_application({"application": "gan", "modules": {"network": renamed}}, app,
                          source="x.pt")  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"module 'network' absent \(it has \['generator'\]\)"
    ):
        check_application({"application": "gan", "modules": {"generator": {}}}, app, source="x.pt")
    same = {"network": app.modules["network"].state_dict()}
    with pytest.raises(CheckpointError, match="'network': same keys and shapes"):
        check_application({"application": "regression", "modules": same}, app, source="x.pt")
