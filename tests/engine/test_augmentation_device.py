"""``training.augmentation_device`` (``augmentation.device``): the batched device path in training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from voxelflow.config.load import validate_experiment
from voxelflow.engine import augment_device
from voxelflow.engine.augment_device import resolve_augmentation_path
from voxelflow.engine.run import build_training_pipeline, train_experiment
from voxelflow.errors import ConfigError
from voxelflow.transforms.compose import build_augmentation

AUGMENTATION = [{"name": "flip"}, {"name": "affine", "rotation": 10, "scaling": 0.1},
                {"name": "gamma", "p": 0.5}]


def test_issue_spelling_augmentation_device_maps_to_the_training_key() -> None:
    experiment = validate_experiment({"augmentation": {"device": "batched", "transforms": AUGMENTATION}})
    assert experiment.training.augmentation_device == "batched"
    assert [c.name for c in experiment.augmentation] == ["flip", "affine", "gamma"]
    assert validate_experiment({}).training.augmentation_device == "auto"
    assert validate_experiment({"augmentation": AUGMENTATION}).augmentation[0].name == "flip"


def test_augmentation_section_refuses_unknown_keys_and_a_second_spelling() -> None:
    with pytest.raises(ConfigError, match=r"augmentation\.device: given twice"):
        validate_experiment({"augmentation": {"device": "cpu"},
                             "training": {"augmentation_device": "cuda"}})
    with pytest.raises(ConfigError, match="unknown keys"):
        validate_experiment({"augmentation": {"devices": "cpu"}})
    with pytest.raises(ConfigError, match="augmentation_device"):
        validate_experiment({"training": {"augmentation_device": "gpu"}})


def test_cuda_without_a_cuda_device_names_the_key() -> None:
    transforms = build_augmentation(AUGMENTATION).transforms
    with pytest.raises(ConfigError, match=r"training\.augmentation_device: expected a CUDA"):
        resolve_augmentation_path("cuda", torch.device("cpu"), transforms, window=(8, 8, 8))


def test_auto_resolves_by_training_device_and_falls_back_with_the_reason() -> None:
    transforms = build_augmentation(AUGMENTATION).transforms
    assert not resolve_augmentation_path("auto", torch.device("cpu"), transforms, window=(8,) * 3).batched
    cuda = torch.device("cuda")  # resolution only looks at the type: no GPU needed
    assert resolve_augmentation_path("auto", cuda, transforms, window=(8,) * 3).batched
    fallback = resolve_augmentation_path("auto", cuda, transforms, window=(8,) * 3, label_window=(4,) * 3)
    assert not fallback.batched and "label_window" in fallback.reason
    cubic = build_augmentation([{"name": "affine", "rotation": 5, "interpolation": "cubic"}]).transforms
    assert "cubic" in resolve_augmentation_path("auto", cuda, cubic, window=(8,) * 3).describe()
    with pytest.raises(ConfigError, match=r"'batched' cannot batch this augmentation: .*cubic"):
        resolve_augmentation_path("batched", torch.device("cpu"), cubic, window=(8,) * 3)


def test_train_with_the_batched_path_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    """``batched`` runs the GPU path's code on the CPU: workers read margin windows, the trainer
    augments and crops each batch to the window before the forward pass."""
    config = tiny_segmentation_config(
        phantom_table(tmp_path / "data"), tmp_path / "run", augmentation=AUGMENTATION,
        training={"augmentation_device": "batched", "validate_every": 0},
    )
    experiment = validate_experiment(config)
    pipeline = build_training_pipeline(experiment, tmp_path / "probe")
    assert pipeline.augmentation_path.batched and pipeline.queue.transform is None
    raw = next(iter(pipeline.loader))
    margin = pipeline.queue.sampler.read_margin
    assert raw["image"].shape[2:] == tuple(8 + 2 * m for m in margin) and min(margin) > 0
    assert pipeline.batch_transform(raw)["image"].shape[2:] == (8, 8, 8)

    shapes: list[tuple[int, ...]] = []
    original = augment_device.DeviceAugmentation.__call__

    def spy(self: Any, batch: dict[str, Any]) -> dict[str, Any]:
        out = original(self, batch)
        shapes.append(tuple(out["image"].shape[2:]))
        return out

    monkeypatch.setattr(augment_device.DeviceAugmentation, "__call__", spy)
    train_experiment(experiment)
    assert shapes == [(8, 8, 8)] * 2  # two iterations, each batch augmented on the device
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_cpu_setting_keeps_augmentation_in_the_workers(
    tmp_path: Path, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    config = tiny_segmentation_config(phantom_table(tmp_path / "data"), tmp_path / "run",
                                      augmentation=AUGMENTATION)
    pipeline = build_training_pipeline(validate_experiment(config), tmp_path / "run")
    assert not pipeline.augmentation_path.batched and pipeline.batch_transform is None
    assert pipeline.queue.transform is not None and pipeline.queue.sampler.read_margin is None
    assert next(iter(pipeline.loader))["image"].shape[2:] == (8, 8, 8)
