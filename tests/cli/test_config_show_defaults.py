"""``voxelflow config show --defaults``: the resolved config with every component's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.config.options import component_kind


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "network": {"name": "unet", "channels": [8, 16]},
                "augmentation": [{"name": "flip", "p": 0.3}],
                "optimizer": {"name": "sgd"},
                "scheduler": {"name": "poly"},
            }
        )
    )
    return path


def test_show_defaults_fills_every_component(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show", "-c", str(config), "--defaults"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    # given values win; the rest are the constructors' defaults (hand-checked)
    assert shown["network"]["channels"] == [8, 16]
    assert shown["network"]["num_convs"] == 2 and shown["network"]["norm"] == "instance"
    assert "in_channels" not in shown["network"]  # set by voxelflow, not the config
    assert shown["augmentation"][0] == {
        "name": "flip", "axes": [0, 1, 2], "flip_probability": 0.5, "interpolation": "linear",
        "p": 0.3, "include": None, "exclude": None, "seed": None,
    }  # fmt: skip
    assert shown["optimizer"] == {
        "name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
    }  # fmt: skip
    assert shown["scheduler"]["exponent"] == 0.9 and "max_iterations" not in shown["scheduler"]
    assert shown["loss"]["name"] == "dice_ce" and shown["loss"]["lambda_ce"] == 1.0
    assert shown["preprocessing"]["normalization"][0]["name"] == "zscore"
    assert shown["sampling"]["sampler"]["name"] == "uniform"
    assert shown["training"]["max_iterations"] == 1000  # sections as plain `show`


def test_show_defaults_output_is_a_valid_equivalent_config(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show", "-c", str(config), "--defaults"]) == 0
    full = tmp_path / "full.yaml"
    full.write_text(capsys.readouterr().out)
    assert main(["config", "validate", "-c", str(full), "--no-data"]) == 0
    original, expanded = load_experiment(config), load_experiment(full)
    assert expanded.network.kwargs["channels"] == original.network.kwargs["channels"]
    assert expanded.optimizer.kwargs["lr"] == 0.01


def test_plain_show_keeps_only_what_was_given(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show", "-c", str(config)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["network"] == {"name": "unet", "channels": [8, 16]}


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("network", "networks"),
        ("augmentation.2", "augmentations"),
        ("preprocessing.normalization.0", "normalizers"),
        ("sampling.sampler", "samplers"),
        ("task.discriminator", "networks"),
        ("task.discriminator_optimizer", "optimizers"),
        ("training", None),
    ],
)
def test_component_kind_of_a_key(key: str, kind: str | None) -> None:
    assert component_kind(key) == kind


def test_show_defaults_fills_the_task_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cls.yaml"
    path.write_text("application: classification\ntask: {target_column: grade}\n")
    assert main(["config", "show", "-c", str(path), "--defaults"]) == 0
    task = yaml.safe_load(capsys.readouterr().out)["task"]
    assert task == {
        "target_column": "grade", "kind": "class", "class_balanced": False, "classes": None,
    }  # fmt: skip
