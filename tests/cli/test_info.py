"""``voxelflow info``: run through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxelflow.cli.main import main

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


@pytest.fixture
def nifti(tmp_path: Path) -> Path:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    data[0, 0, 0] = np.nan
    affine = np.diag([-0.8, 1.2, 2.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_info_on_nifti(nifti: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(nifti)]) == 0
    out = capsys.readouterr().out
    assert "shape: (1, 4, 5, 6) (C, X, Y, Z)" in out
    assert "channels: 1" in out
    assert "spacing: 0.8 x 1.2 x 2.5 mm" in out
    assert "orientation: LAS" in out
    assert "dtype: float32" in out
    # NaN excluded from the statistics (values 1..119), and counted
    assert "min 1, max 119, mean 60, 1 non-finite voxels" in out
    assert "[   -0.80000     0.00000     0.00000    10.00000]" in out
    assert "qform_code: 0, sform_code: 2" in out  # nibabel's defaults for a new image


def test_info_on_dicom_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(DICOMDIR_TESTS / "98892001" / "CT5N")]) == 0
    out = capsys.readouterr().out
    assert "format: dicom" in out and "shape: (1, 16, 16, 5)" in out and "orientation: LPS" in out
    assert "SmartScore - Gated 0.5 sec" in out and "5 slices" in out
    assert "min -888, max 85" in out


def test_info_lists_several_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(DICOMDIR_TESTS / "98892003" / "MR2")]) == 0
    out = capsys.readouterr().out
    assert out.count("1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.") == 3
    assert "--series-uid" in out
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481"
    assert main(["info", str(DICOMDIR_TESTS / "98892003" / "MR2"), "--series-uid", uid]) == 0
    assert "shape: (1, 16, 16) (C, X, Y)" in capsys.readouterr().out


def test_info_reports_bad_paths_and_continues(
    nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tmp_path / "absent.nii"), str(nifti)]) == 1
    captured = capsys.readouterr()
    assert "absent.nii" in captured.err and "missing path" in captured.err
    assert "shape: (1, 4, 5, 6)" in captured.out
