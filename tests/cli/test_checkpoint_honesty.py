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


def test_api_infer_names_the_checkpoint_it_uses(
    tmp_path, phantom_table, caplog, tiny_segmentation_config
):
    import logging

    import voxelflow as vf

    table = phantom_table(tmp_path / "data")
    folder = table.parent
    config = tiny_segmentation_config(table, tmp_path / "run", inference={"window": [8, 8, 8]})
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
