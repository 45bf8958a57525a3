"""Small first-hour slips (issue 19, item 11): help texts, messages, demo output, finished runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

import voxelflow as vf
from voxelflow.cli.cmd_demo import default_out, voxelflow_checkout
from voxelflow.cli.main import build_parser, main
from voxelflow.demo.data import config_yaml
from voxelflow.errors import VoxelflowError


def _subcommand_help(*names: str) -> str:
    parser = build_parser()
    for name in names:
        action = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
        parser = action.choices[name]
    return parser.format_help()


@pytest.mark.parametrize("command", [("train",), ("infer",), ("config", "show")])
def test_run_dir_help_names_the_real_key(command: tuple[str, ...]) -> None:
    text = " ".join(_subcommand_help(*command).split())
    assert "system.run_dir" in text and "output.run_dir" not in text


def test_info_on_an_unknown_suffix_names_the_cli_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "subjects.csv"
    table.write_text("subject,image\ns1,a.nii.gz\n")
    assert main(["info", str(table)]) == 1
    err = capsys.readouterr().err
    assert "is a table, not an image" in err and "--reader NAME" in err
    assert "config validate" in err and "subjects.csv" in err
    other = tmp_path / "scan.xyz"
    other.write_text("?")
    assert main(["info", str(other)]) == 1
    err = capsys.readouterr().err
    assert "--reader NAME on the command line" in err and "nibabel" in err
    assert "pass reader=" not in err


def _fake_checkout(root: Path) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "voxelflow"\nversion = "0"\n')
    return root


def test_demo_default_out_leaves_a_voxelflow_checkout(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "src" / "voxelflow")
    inside = checkout / "docs"
    inside.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    assert voxelflow_checkout(inside) == checkout.resolve()
    assert default_out("segmentation", cwd=inside, home=home) == home / "voxelflow-demo"
    assert default_out("gan", cwd=checkout, home=home) == home / "voxelflow-demo-gan"


def test_demo_default_out_is_the_current_folder_elsewhere(tmp_path: Path) -> None:
    other = tmp_path / "project"
    (other / ".git").mkdir(parents=True)  # a git checkout, but not of voxelflow
    (other / "pyproject.toml").write_text('[project]\nname = "voxelflow-plugins"\n')
    assert voxelflow_checkout(other) is None
    assert (
        default_out("segmentation", cwd=other, home=tmp_path) == other.resolve() / "voxelflow-demo"
    )


def test_demo_default_out_refuses_when_home_is_the_checkout(tmp_path: Path) -> None:
    checkout = _fake_checkout(tmp_path / "voxelflow")
    with pytest.raises(VoxelflowError, match="--out DIR"):
        default_out("segmentation", cwd=checkout, home=checkout)


def test_demo_config_yaml_has_no_anchors() -> None:
    window = [32, 32, 32]
    config = {"sampling": {"window": window}, "inference": {"window": window}}
    text = config_yaml(config)
    assert "&id" not in text and "*id" not in text
    assert text.count("- 32") == 6
    assert yaml.safe_load(text) == config


def test_the_segmentation_demo_config_written_has_no_anchors(tmp_path: Path) -> None:
    """The demo trains a planned config; the plan's YAML writer never writes anchors."""
    from voxelflow.planning.planner import Configuration
    from voxelflow.planning.write import configuration_yaml

    window = [32, 32, 32]
    config = {"sampling": {"window": window}, "inference": {"window": window}}
    configuration = Configuration("3d_fullres", [1.0] * 3, window, 2, [], [], config, {})
    text = configuration_yaml(configuration)
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == config


def test_training_a_finished_run_says_so_in_one_line(
    tmp_path: Path,
    phantom_table,
    tiny_segmentation_config,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = phantom_table(tmp_path / "data")
    config = tiny_segmentation_config(table, tmp_path / "run")
    first = vf.Experiment.from_dict(config).train()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="voxelflow"):
        again = vf.Experiment.from_dict(config).train()
    notes = [r.getMessage() for r in caplog.records if "already finished" in r.getMessage()]
    assert len(notes) == 1 and "at step 2" in notes[0] and "max_iterations" in notes[0]
    assert again["step"] == first["step"] == 2.0
    assert again["dice"] == pytest.approx(first["dice"])
    assert "it/s" not in capsys.readouterr().err  # no empty progress bar
    # more iterations: training continues rather than reporting a finished run
    longer = vf.Experiment.from_dict(config, ["training.max_iterations=3"]).train()
    assert longer["step"] == 3.0


def test_cli_train_on_a_finished_run_and_training_without_validation_say_so_once(
    tmp_path: Path,
    phantom_table,
    tiny_segmentation_config,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from voxelflow.cli.main import main

    table = phantom_table(tmp_path / "data")
    config = tiny_segmentation_config(
        table, tmp_path / "run", split={"validation": 0.0},
        training={"max_iterations": 4, "validate_every": 1},
    )  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.INFO, logger="voxelflow"):
        assert main(["train", "-c", str(path)]) == 0
    said = [r.getMessage() for r in caplog.records if "no validation subjects" in r.getMessage()]
    assert len(said) == 1 and not any("validation on 0" in r.getMessage() for r in caplog.records)
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="voxelflow"):
        assert main(["train", "-c", str(path)]) == 0
    assert any("already finished" in r.getMessage() for r in caplog.records)
    assert "it/s" not in capsys.readouterr().err
