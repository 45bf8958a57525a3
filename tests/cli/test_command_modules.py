"""Every listed sub-command exists and is shown; none is skipped silently."""

from __future__ import annotations

import importlib

import pytest

from voxelflow.cli import main as cli_main


def test_every_listed_command_module_imports_and_is_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name, module in cli_main.COMMANDS.items():
        assert hasattr(importlib.import_module(module), "add_parser"), name
    with pytest.raises(SystemExit):
        cli_main.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in cli_main.COMMANDS)


def test_a_missing_command_module_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_main.COMMANDS, "nothing", "voxelflow.cli.cmd_nothing")
    with pytest.raises(ModuleNotFoundError, match="cmd_nothing"):
        cli_main.build_parser()
