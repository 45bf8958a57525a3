"""Fixtures of the cross-validation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cv_data import segmentation_config, write_config, write_phantoms


@pytest.fixture
def seg_config(tmp_path: Path) -> Path:
    table = write_phantoms(tmp_path / "data", 6)
    return write_config(tmp_path / "exp.yaml", segmentation_config(table, tmp_path / "run"))
