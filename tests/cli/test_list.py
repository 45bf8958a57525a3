"""``voxelflow list``: one line per registered component, through the real CLI entry point."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from voxelflow.cli import cmd_list
from voxelflow.cli.main import main
from voxelflow.losses import LOSSES
from voxelflow.optim import OPTIMIZERS, SCHEDULERS


def test_list_losses_one_line_per_entry_with_description(capsys):
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"losses ({len(LOSSES)}):"
    assert len(lines) == 1 + len(LOSSES)
    for entry in LOSSES.entries():
        assert any(
            line.split()[0] == entry.name and entry.description in line for line in lines[1:]
        )
    assert "soft Dice" in next(line for line in lines if line.split()[0] == "dice")


def test_list_optimizers_and_schedulers(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in OPTIMIZERS.names())
    assert main(["list", "schedulers"]) == 0
    out = capsys.readouterr().out
    assert "poly" in out and "nnU-Net" in out
    assert len(out.splitlines()) == 1 + len(SCHEDULERS)


def test_missing_module_is_skipped_with_a_note(capsys, monkeypatch):
    ghost = cmd_list.RegistrySource("ghosts", "voxelflow.no_such_module", "GHOSTS")
    monkeypatch.setitem(cmd_list.KINDS, "samplers", (ghost,))
    assert main(["list", "samplers"]) == 0
    assert (
        "ghosts: skipped (module voxelflow.no_such_module is not available)"
        in capsys.readouterr().out
    )


def test_missing_registry_attribute_is_skipped_with_a_note(capsys, monkeypatch):
    absent = cmd_list.RegistrySource("things", "voxelflow.losses", "THINGS")
    monkeypatch.setitem(cmd_list.KINDS, "readers", (absent,))
    assert main(["list", "readers"]) == 0
    assert (
        "things: skipped (voxelflow.losses defines no THINGS registry yet)"
        in capsys.readouterr().out
    )


def test_list_all_covers_every_kind(capsys):
    assert main(["list", "--no-params"]) == 0
    out = capsys.readouterr().out
    for kind, sources in cmd_list.KINDS.items():
        for source in sources:
            assert f"{source.title} (" in out or f"{source.title}: skipped" in out, kind


def test_networks_show_parameter_count_at_3d_defaults(capsys):
    networks = pytest.importorskip("voxelflow.networks")
    if not hasattr(networks, "NETWORKS") or "toynet" not in networks.NETWORKS:
        pytest.skip("voxelflow.networks has no toynet yet")
    model = networks.build_network("toynet", spatial_dims=3, in_channels=1, out_channels=2)
    expected = sum(p.numel() for p in model.parameters())
    assert main(["list", "networks"]) == 0
    line = next(
        line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["toynet"]
    )
    assert f"{expected:,} params" in line


def test_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "lossess"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_registries_are_imported_lazily():
    source = importlib.util.find_spec("voxelflow.cli.cmd_list").origin
    with open(source, encoding="utf-8") as handle:
        text = handle.read()
    assert "import voxelflow.networks" not in text and "from voxelflow.networks" not in text
