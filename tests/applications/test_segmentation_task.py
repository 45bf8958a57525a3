"""Segmentation's task (segmentation/task.py), its evaluation summary and its postprocessing
decision reached through the Application interface (default: none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxelflow.applications import APPLICATIONS
from voxelflow.applications.segmentation.evaluation import summarize
from voxelflow.applications.segmentation.task import SegmentationTask, read_decision
from voxelflow.errors import ConfigError, DataError


def test_task_from_config_counts_classes_and_keeps_label_values() -> None:
    assert SegmentationTask.from_config({}, num_classes=3) == SegmentationTask(3, (0, 1, 2))
    task = SegmentationTask.from_config({}, num_classes=None, label_values=[0, 2, 4])
    assert task == SegmentationTask(3, (0, 2, 4))


def test_task_from_config_refuses_options_and_a_missing_count() -> None:
    with pytest.raises(ConfigError, match=r"task\.kind: segmentation takes no task options"):
        SegmentationTask.from_config({"kind": "class"}, num_classes=2)
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationTask.from_config({}, num_classes=None)


def test_postprocess_decision_only_where_the_application_has_one(tmp_path: Path) -> None:
    (tmp_path / "cv").mkdir()
    decision = {"classes": {"1": {"keep_largest": True}}}
    (tmp_path / "cv" / "postprocessing.json").write_text(json.dumps(decision))
    assert APPLICATIONS.get("segmentation").postprocess_decision(tmp_path) == decision
    for name in ("regression", "classification", "autoencoder", "gan"):
        assert APPLICATIONS.get(name).postprocess_decision(tmp_path) is None
    assert read_decision(tmp_path / "elsewhere") is None


def test_a_broken_decision_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "postprocessing.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"postprocessing\.json"):
        read_decision(tmp_path)
    (tmp_path / "cv" / "postprocessing.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        read_decision(tmp_path)


def test_summary_is_the_nan_free_mean_per_label() -> None:
    rows = [
        {"subject": "a", "label": 1, "dice": 0.5, "hd95": float("nan")},
        {"subject": "b", "label": 1, "dice": 1.0, "hd95": 2.0},
        {"subject": "a", "label": 2, "dice": 0.0, "hd95": 4.0, "label_name": "liver"},
    ]
    assert summarize(rows) == {"dice/1": 0.75, "hd95/1": 2.0, "dice/2": 0.0, "hd95/2": 4.0}


def test_one_resized_affine_matches_the_stepwise_formula_in_2d_and_3d() -> None:
    """The autoencoder's former copy (affine @ a scale-and-shift matrix) is the reference."""
    import numpy as np

    from voxelflow.applications.common import resized_affine

    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    for shape, size in (((20, 12, 9), (8, 6, 3)), ((20, 12), (5, 4))):
        step = np.eye(4)
        for axis, factor in enumerate(np.asarray(shape, float) / np.asarray(size, float)):
            step[axis, axis], step[axis, 3] = factor, 0.5 * factor - 0.5
        np.testing.assert_allclose(resized_affine(affine, shape, size), affine @ step)
    # a shape longer than size (a 3D grid resized in its first two axes) keeps the third
    out = resized_affine(affine, (20, 12, 9), (10, 6))
    np.testing.assert_allclose(out[:, 2], affine[:, 2])


def test_middle_slice_of_3d_and_2d() -> None:
    import numpy as np

    from voxelflow.applications.common import middle_slice

    volume = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(middle_slice(volume), volume[:, :, 2])
    np.testing.assert_array_equal(middle_slice(volume[:, :, 0]), volume[:, :, 0])
