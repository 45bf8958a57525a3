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
