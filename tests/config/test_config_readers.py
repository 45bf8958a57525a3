"""Config files other than YAML are read by the ``voxelflow.config_readers`` entry points."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from voxelflow.config.load import CONFIG_READERS, config_reader, load_experiment, read_yaml
from voxelflow.errors import ConfigError


def test_the_installed_package_reads_niftynet_ini_through_its_entry_point() -> None:
    (point,) = [p for p in importlib.metadata.entry_points(group=CONFIG_READERS) if p.name == "ini"]
    assert point.value == "voxelflow.niftynet.conversion:read_niftynet_ini"
    from voxelflow.niftynet.conversion import read_niftynet_ini

    assert config_reader(Path("x.ini")) is read_niftynet_ini
    assert config_reader(Path("x.cfg")) is read_yaml  # no reader: YAML as before


def _fake_points(monkeypatch: pytest.MonkeyPatch, *points: importlib.metadata.EntryPoint) -> None:
    def entry_points(*, group: str) -> tuple[importlib.metadata.EntryPoint, ...]:
        return points if group == CONFIG_READERS else ()

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def read_fake_format(path: Path) -> dict[str, object]:
    """A reader another package could register: ``key=value`` lines as dotted overrides."""
    return {"training": {"max_iterations": int(path.read_text().split("=")[1])}}


def test_another_package_can_add_a_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    point = importlib.metadata.EntryPoint(
        "kv", f"{__name__}:read_fake_format", CONFIG_READERS
    )
    _fake_points(monkeypatch, point)
    path = tmp_path / "run.kv"
    path.write_text("max_iterations=7")
    assert load_experiment(path).training.max_iterations == 7


def test_a_broken_reader_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    point = importlib.metadata.EntryPoint("kv", "no_such_module_here:read", CONFIG_READERS)
    _fake_points(monkeypatch, point)
    with pytest.raises(ConfigError, match=r"run\.kv.*'\.kv'.*no_such_module_here:read"):
        load_experiment(tmp_path / "run.kv")


def test_ini_without_the_installed_entry_point_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_points(monkeypatch)
    with pytest.raises(ConfigError, match="pip install -e"):
        config_reader(Path("x.ini"))
