"""What users and outside benchmarks import keeps working across the architecture moves.

Issue 13 moved the applications into packages and the NiftyNet importer into its own package;
these names are used by scripts outside the repository and must stay importable and usable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


def test_validate_experiment_is_importable_and_validates(
    tmp_path: Path, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    from voxelflow.config.load import validate_experiment
    from voxelflow.config.schema import ExperimentConfig

    config = tiny_segmentation_config(phantom_table(tmp_path / "data"), tmp_path / "run")
    experiment = validate_experiment(config)
    assert isinstance(experiment, ExperimentConfig)
    assert experiment.network.name == "unet"


def test_build_training_pipeline_loader_yields_windows(
    tmp_path: Path, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    from voxelflow.config.load import validate_experiment
    from voxelflow.engine.run import build_training_pipeline

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    experiment = validate_experiment(
        tiny_segmentation_config(phantom_table(tmp_path / "data"), run_dir)
    )
    batch = next(iter(build_training_pipeline(experiment, run_dir).loader))
    assert batch["image"].shape == (1, 1, 8, 8, 8)
    assert batch["label"].shape[-3:] == (8, 8, 8)


def test_sliding_window_is_importable_and_stitches_identity() -> None:
    from voxelflow.sampling import sliding_window

    volume = torch.rand(1, 1, 20, 18, 9)
    out = sliding_window(lambda x: x, volume, (8, 8, 8), overlap=0.5)
    torch.testing.assert_close(out, volume, atol=1e-5, rtol=1e-5)


def test_old_application_names_still_resolve_from_config() -> None:
    from voxelflow.applications import APPLICATIONS

    for name in ("segmentation", "regression", "classification", "autoencoder", "gan"):
        cls = APPLICATIONS.get(name)
        assert cls.__module__ == f"voxelflow.applications.{name}.application"


def test_old_optim_module_path_still_works_with_a_warning() -> None:
    import importlib
    import sys

    sys.modules.pop("voxelflow.engine.optim", None)
    with pytest.warns(DeprecationWarning, match="voxelflow.optim"):
        old = importlib.import_module("voxelflow.engine.optim")
    from voxelflow.optim import OPTIMIZERS, build_optimizer

    assert old.OPTIMIZERS is OPTIMIZERS and old.build_optimizer is build_optimizer
