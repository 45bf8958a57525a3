from __future__ import annotations

import pytest

from voxelflow.errors import RegistryError
from voxelflow.registry import Registry


def test_register_get_and_describe() -> None:
    reg: Registry[type] = Registry("network")

    @reg.register("tiny_net")
    class TinyNet:
        """A tiny network."""

    assert reg.get("tiny_net") is TinyNet
    assert reg.entries()[0].description == "A tiny network."
    assert "tiny_net" in reg and len(reg) == 1


def test_unknown_name_suggests_close_match() -> None:
    reg: Registry[object] = Registry("loss")
    reg.add("dice", object())
    reg.add("dice_ce", object())
    with pytest.raises(RegistryError, match="Did you mean: 'dice'"):
        reg.get("dic")


def test_duplicate_is_an_error() -> None:
    reg: Registry[object] = Registry("loss")
    reg.add("dice", object())
    with pytest.raises(RegistryError, match="duplicate loss name 'dice'"):
        reg.add("dice", object())


def test_plugin_path_is_imported_only_when_named(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_plugin_mod.py").write_text("class MyNet:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[object] = Registry("network")
    obj = reg.get("my_plugin_mod:MyNet")
    assert obj.__name__ == "MyNet"
    with pytest.raises(RegistryError, match="cannot import plugin module"):
        reg.get("no_such_module_xyz:Thing")
    with pytest.raises(RegistryError, match="has no attribute"):
        reg.get("my_plugin_mod:Missing")
