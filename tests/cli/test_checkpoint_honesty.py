"""Without validation subjects, ``best`` is the last checkpoint and inference says so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from voxelflow.engine.checkpoint import CheckpointManager, find_checkpoint


def _run(tmp_path: Path, metrics: list[float | None]) -> Path:
    manager = CheckpointManager(tmp_path / "run" / "checkpoints", keep_last=5)
    for step, metric in enumerate(metrics, start=1):
        manager.save({"step": step, "weights": torch.zeros(1)}, step=step, metric=metric)
    return tmp_path / "run"


def test_best_without_validation_is_the_last_and_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _run(tmp_path, [None, None, None])
    with caplog.at_level(logging.INFO, logger="voxelflow.engine.checkpoint"):
        path = find_checkpoint(run, which="best")
    assert path.name == "step_00000003.pt"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "'best' is the last checkpoint, step 3" in notes[0]
    assert "no validation subjects" in notes[0]


def test_best_with_validation_is_the_best_and_says_nothing_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _run(tmp_path, [0.5, 0.9, 0.7])
    with caplog.at_level(logging.INFO, logger="voxelflow.engine.checkpoint"):
        assert find_checkpoint(run, which="best").name == "step_00000002.pt"
        assert find_checkpoint(run, which="last").name == "step_00000003.pt"
    assert not caplog.records


def test_api_infer_names_the_checkpoint_it_uses(tmp_path, caplog):
    import logging

    import nibabel as nib
    import numpy as np

    import voxelflow as vf

    folder = tmp_path / "data"
    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(2):
        image, label = vf.make_phantom((12, 12, 8), num_classes=2, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    config = {
        "dataset": {"csv": str(folder / "table.csv")},
        "split": {"validation": 0.5},
        "sampling": {"window": [8, 8, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0,
                     "validate_every": 2, "checkpoint_every": 2},
        "inference": {"window": [8, 8, 8]},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    experiment = vf.Experiment.from_dict(config)
    experiment.train()
    with caplog.at_level(logging.INFO, logger="voxelflow"):
        experiment.infer(vf.read_image(folder / "s0_img.nii.gz"))
    said = [
        r.getMessage()
        for r in caplog.records
        if "inference with the best checkpoint" in r.getMessage()
    ]
    assert len(said) == 1 and "step_00000002.pt" in said[0] and "(step 2" in said[0]
