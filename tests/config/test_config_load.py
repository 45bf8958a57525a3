"""Loading, overrides, error messages, dump and diff of experiment configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from voxelflow.config.load import (
    apply_overrides,
    dump_experiment,
    experiment_diff,
    flatten,
    load_experiment,
    parse_override,
)
from voxelflow.config.schema import Experiment
from voxelflow.errors import ConfigError, MissingFileError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_file_with_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path / "exp.yaml",
        "training:\n  max_iterations: 7\nnetwork: {name: unet, channels: [8, 16]}\n",
    )
    experiment = load_experiment(config)
    assert experiment.training.max_iterations == 7
    assert experiment.training.batch_size == 2  # default kept
    assert experiment.network.kwargs == {"channels": [8, 16]}


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_experiment(write(tmp_path / "e.yaml", "")) == Experiment()


def test_overrides_use_yaml_scalars() -> None:
    experiment = load_experiment(
        {},
        [
            "training.max_iterations=10",
            "network.channels=[8,16]",
            "preprocessing.spacing=[1.0, 1, 2.5]",
            "training.amp=off",
            "training.compile=true",
            "dataset.inputs.image=[t1, t2]",
        ],
    )
    assert experiment.training.max_iterations == 10
    assert experiment.network.name == "unet"  # the default component name is kept
    assert experiment.network.kwargs["channels"] == [8, 16]
    assert experiment.preprocessing.spacing == [1.0, 1.0, 2.5]
    assert experiment.training.amp == "off" and experiment.training.compile is True
    assert experiment.dataset.inputs["image"] == ["t1", "t2"]


def test_override_null_and_list_item() -> None:
    base = {"augmentation": [{"name": "flip", "p": 0.5}], "preprocessing": {"spacing": [1, 1, 1]}}
    experiment = load_experiment(base, ["augmentation.0.p=1.0", "preprocessing.spacing=null"])
    assert experiment.augmentation[0].kwargs == {"p": 1.0}
    assert experiment.preprocessing.spacing is None
    assert base["augmentation"][0]["p"] == 0.5  # the input is not modified


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("traning.max_iterations=3", "unknown key 'traning'; did you mean 'training'?"),
        (
            "training.max_iter=3",
            "unknown key 'max_iter' in 'training'; did you mean 'max_iterations'?",
        ),
        ("training.max_iterations", "expected KEY.PATH=VALUE"),
        ("augmentation.3.p=1", "expected an index of the existing list (0 item(s))"),
    ],
)
def test_bad_override_paths(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="--set") as info:
        load_experiment({}, [override])
    assert expected in str(info.value)


def test_parse_override_types() -> None:
    assert parse_override("a.b=10") == (["a", "b"], 10)
    assert parse_override("a=[8,16]") == (["a"], [8, 16])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=x=y") == (["a"], "x=y")


def test_unknown_keys_with_suggestions(tmp_path: Path) -> None:
    config = write(
        tmp_path / "typo.yaml", "traning:\n  max_iterations: 3\nsampling:\n  windw: [8, 8, 8]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_experiment(config)
    message = str(info.value)
    assert "typo.yaml" in message
    assert "traning: unknown key 'traning'; did you mean 'training'?" in message
    assert "sampling.windw: unknown key 'windw'; did you mean 'window'?" in message


def test_wrong_types_say_expected_and_got() -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(
            {"training": {"max_iterations": "ten", "amp": "fp8"}, "split": {"validation": 2}}
        )
    message = str(info.value)
    assert "3 problem(s)" in message
    assert (
        "training.max_iterations: expected a valid integer" in message
        and "got 'ten' (str)" in message
    )
    assert (
        "training.amp: expected 'auto', 'off', 'fp16' or 'bf16'" in message and "'fp8'" in message
    )
    assert "split.validation: expected less than 1" in message and "got 2 (int)" in message


def test_missing_required_nested_key() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.folders\.t1\.path: required key is missing"):
        load_experiment({"dataset": {"folders": {"t1": {"glob": "*.nii.gz"}}}})


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.yaml", "training:\n  max_iterations: 3\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_experiment(config)
    config = write(tmp_path / "tab.yaml", "training:\n\tmax_iterations: 3\n")
    with pytest.raises(ConfigError, match=r"tab\.yaml:2:1: invalid YAML"):
        load_experiment(config)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="expected a mapping of sections at the top level, got list"
    ):
        load_experiment(write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_missing_file() -> None:
    with pytest.raises(MissingFileError, match=r"nope.yaml"):
        load_experiment("nope.yaml")


def test_dump_round_trip_and_atomic(tmp_path: Path) -> None:
    experiment = load_experiment(
        {"network": {"name": "vnet", "base_channels": 8}}, ["training.seed=3"]
    )
    target = dump_experiment(experiment, tmp_path / "run" / "config.yaml")
    assert load_experiment(target) == experiment
    text = yaml.safe_load(target.read_text())
    assert text["training"]["batch_size"] == 2  # defaults are written
    assert next(iter(text)) == "application"  # section order kept
    assert sorted(os.listdir(target.parent)) == ["config.yaml"]  # no temporary file left


def test_experiment_diff() -> None:
    a = load_experiment({})
    b = load_experiment(
        {}, ["training.max_iterations=5", "network.channels=[4]", "sampling.window=[8,8,8]"]
    )
    assert experiment_diff(a, a) == []
    assert experiment_diff(a, b) == [
        "network.channels",
        "sampling.window",
        "training.max_iterations",
    ]


def test_flatten_and_apply_overrides_on_plain_dicts() -> None:
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    assert apply_overrides({"training": {"seed": 1}}, ["training.seed=2"]) == {
        "training": {"seed": 2}
    }


def test_every_schema_field_has_a_description() -> None:
    from pydantic import BaseModel

    missing = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(prefix + name)
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(Experiment, "")
    assert missing == []


def test_yaml_12_booleans(tmp_path: Path) -> None:
    config = write(
        tmp_path / "b.yaml", "training:\n  amp: off\n  deterministic: yes\n  compile: true\n"
    )
    experiment = load_experiment(config)
    assert experiment.training.amp == "off"  # YAML 1.1 would have made it False
    assert experiment.training.deterministic is True and experiment.training.compile is True


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(
            {"dataset": {"csv": "a.csv", "msd": "b"}, "split": {"validation": 0.6, "test": 0.5}}
        )
    message = str(info.value)
    assert "dataset: expected at most one of csv, folders, msd, got ['csv', 'msd']" in message
    assert "split: expected validation + test < 1, got 0.6 + 0.5" in message
    with pytest.raises(ConfigError, match=r"split: expected fold in 0\.\.4, got 5"):
        load_experiment({"split": {"folds": 5, "fold": 5}})


def test_duplicate_key_is_refused_with_both_lines(tmp_path) -> None:
    from voxelflow.config.load import load_experiment
    from voxelflow.errors import ConfigError

    path = tmp_path / "dup.yaml"
    path.write_text("inference: {overlap: 0.3}\ntraining: {max_iterations: 3}\ninference: {overlap: 0.4}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3:1: .*duplicate key 'inference' \(first given on line 1\)"):
        load_experiment(path)
