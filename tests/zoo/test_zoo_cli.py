"""``voxelflow zoo ...`` and ``voxelflow export`` through the CLI entry point."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from voxelflow.cli.main import main


def test_pack_install_list_info_remove(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    card = tmp_path / "card.yaml"
    card.write_text(
        yaml.safe_dump(
            {"description": "toy brain model", "outputs": {"labels": {0: "bg", 1: "wm", 2: "gm"}}}
        )
    )
    entry = tmp_path / "brain.zip"
    assert main(["zoo", "pack", str(run_dir), "--out", str(entry), "--card", str(card)]) == 0
    assert main(["zoo", "--home", str(home), "install", str(entry)]) == 0
    assert main(["zoo", "--home", str(home), "list"]) == 0
    listing = capsys.readouterr().out
    assert "brain" in listing and "toy brain model" in listing
    assert main(["zoo", "--home", str(home), "info", "brain"]) == 0
    info = yaml.safe_load(capsys.readouterr().out)
    assert info["outputs"]["labels"] == {0: "bg", 1: "wm", 2: "gm"}
    assert main(["zoo", "--home", str(home), "remove", "brain"]) == 0
    assert not (home / "entries" / "brain").exists()
    assert main(["zoo", "--home", str(home), "remove", "brain"]) == 2  # unknown name: usage error


def test_env_home_and_refused_archive_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "env_home"
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(home))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../escape.txt", "x")
    assert main(["zoo", "install", str(bad)]) == 1
    assert "path traversal" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists()
    assert main(["zoo", "list"]) == 0
    assert str(home) in capsys.readouterr().out


def test_bad_card_is_a_configuration_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.yaml"
    card.write_text("descripton: typo\n")
    assert (
        main(["zoo", "pack", str(run_dir), "--out", str(tmp_path / "x.zip"), "--card", str(card)])
        == 2
    )
    assert "descripton" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_export_command_writes_program_and_preprocessing(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported" / "brain.pt2"
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--format",
                "torch-export",
                "--out",
                str(out),
                "--head",
                "argmax",
            ]
        )
        == 0
    )
    description = json.loads((tmp_path / "exported" / "brain.preprocessing.json").read_text())
    assert description["head"] == "argmax" and description["preprocessing"]["spacing"] == [
        1.0,
        1.0,
        2.5,
    ]
    assert description["fitted_state"]["label_values"] == [0, 1, 4]
    assert out.is_file()
