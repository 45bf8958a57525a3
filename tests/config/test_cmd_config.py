"""`voxelflow config schema|show|validate|convert` and the `net_segment` alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from voxelflow.cli import main as cli_main
from voxelflow.cli.niftynet_scripts import net_segment
from voxelflow.config.load import load_experiment
from voxelflow.errors import ConfigError
from voxelflow.niftynet.commands import split_arguments

INI = """
[img]
path_to_search = ./images
filename_contains = T1
spatial_window_size = (16, 16, 16)
[seg]
path_to_search = ./images
filename_contains = seg
[SYSTEM]
model_dir = ./model
num_threads = 0
[NETWORK]
name = toynet
batch_size = 2
[TRAINING]
lr = 0.001
max_iter = 4
loss_type = Dice
[SEGMENTATION]
image = img
label = seg
num_classes = 3
"""


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    path = tmp_path / "toy.ini"
    path.write_text(INI)
    return path


def test_schema_is_json_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    training = schema["$defs"]["TrainingConfig"]["properties"]["max_iterations"]
    assert training["description"] == "optimiser steps in total"


def test_show_resolves_defaults_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "e.yaml"
    config.write_text("training: {max_iterations: 7}\n")
    assert (
        cli_main.main(["config", "show", "-c", str(config), "--set", "training.batch_size=5"]) == 0
    )
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["max_iterations"] == 7 and shown["training"]["batch_size"] == 5
    assert shown["sampling"]["queue_length"] == 64


def test_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("traning: {}\ntraining: {batch_size: 0}\n")
    assert cli_main.main(["config", "validate", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "did you mean 'training'" in err
    assert "training.batch_size: expected greater than or equal to 1, got 0 (int)" in err
    config.write_text("training: {batch_size: 3}\n")
    # without a dataset the config cannot run: validate says so, --no-data checks the rest only
    assert cli_main.main(["config", "validate", "-c", str(config)]) == 2
    assert "dataset: expected exactly one of csv, folders, msd" in capsys.readouterr().err
    assert cli_main.main(["config", "validate", "-c", str(config), "--no-data"]) == 0
    assert "valid" in capsys.readouterr().out


def test_convert_prints_yaml_and_report(ini: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["config", "convert", str(ini)]) == 0
    captured = capsys.readouterr()
    converted = yaml.safe_load(captured.out)
    assert converted["network"] == {"name": "toynet"} and converted["num_classes"] == 3
    assert "[SYSTEM] num_threads" not in captured.err  # mapped keys are not reported by default
    assert "keys:" in captured.err and "mapped" in captured.err


def test_convert_to_file_round_trips(ini: Path, tmp_path: Path) -> None:
    out = tmp_path / "toy.yaml"
    assert cli_main.main(["config", "convert", str(ini), "-o", str(out), "--all"]) == 0
    assert load_experiment(out) == load_experiment(ini)


def test_split_arguments() -> None:
    action, config, sets, overrides, passed = split_arguments(
        ["inference", "-c", "x.ini", "--max_iter", "5", "--lr=0.1", "--set", "a.b=1", "--resume"]
    )
    assert (action, config, sets, passed) == ("infer", "x.ini", ["a.b=1"], ["--resume"])
    assert overrides == {"max_iter": "5", "lr": "0.1"}
    with pytest.raises(
        ConfigError, match="expected an action train, inference or evaluation, got 'fit'"
    ):
        split_arguments(["fit", "-c", "x.ini"])
    with pytest.raises(ConfigError, match="expected -c CONFIG"):
        split_arguments(["train"])


def test_net_segment_converts_and_dispatches(ini: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_main(argv: list[str]) -> int:
        seen["argv"] = list(argv)
        seen["experiment"] = load_experiment(argv[2])  # read while the converted file exists
        return 0

    monkeypatch.setattr(cli_main, "main", fake_main)
    assert (
        net_segment(["train", "-c", str(ini), "--max_iter", "9", "--set", "training.seed=4"]) == 0
    )
    argv = seen["argv"]
    assert argv[0] == "train" and argv[1] == "-c" and argv[2].endswith("toy.yaml")
    assert argv[3:] == ["--set", "training.seed=4"]
    experiment = seen["experiment"]
    assert experiment.training.max_iterations == 9 and experiment.network.name == "toynet"


def test_net_segment_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert net_segment(["train"]) == 2
    assert "expected -c CONFIG" in capsys.readouterr().err
