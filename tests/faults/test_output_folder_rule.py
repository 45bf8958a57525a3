"""The one output-folder rule (voxelflow.io.folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxelflow.errors import ConfigError
from voxelflow.io.folders import input_folders, refuse_inside_inputs


def test_a_series_folder_is_its_own_input_folder_so_a_sibling_output_is_allowed(tmp_path: Path) -> None:
    series = tmp_path / "patient1" / "series_ct"
    series.mkdir(parents=True)
    folders = input_folders([series])
    assert folders == {series.resolve()}
    refuse_inside_inputs(tmp_path / "patient1" / "out", folders, key="inference output folder")
    with pytest.raises(ConfigError, match="inference output folder: expected a folder outside"):
        refuse_inside_inputs(series / "out", folders, key="inference output folder")


def test_a_file_input_makes_its_folder_an_input_folder(tmp_path: Path) -> None:
    image = tmp_path / "data" / "s1.nii.gz"
    image.parent.mkdir()
    image.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"system\.run_dir: .* inside"):
        refuse_inside_inputs(tmp_path / "data" / "deep" / "run", input_folders([image]), key="system.run_dir")
    refuse_inside_inputs(tmp_path / "run", input_folders([image]), key="system.run_dir")
