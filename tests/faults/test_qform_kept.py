"""Outputs in the input's grid keep the input's own qform (not a copy of its sform)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.io import read_image, write_image
from voxelflow.io.image import Image


def _input_with_disagreeing_forms(path: Path) -> tuple[np.ndarray, np.ndarray]:
    sform = np.diag([2.0, 2.0, 3.0, 1.0])
    sform[:3, 3] = [-20.0, -30.0, 5.0]
    qform = sform.copy()
    qform[0, 3] += 10.0  # origin 10 mm away, as in the case reported
    image = nib.Nifti1Image(np.random.default_rng(0).random((6, 5, 4)).astype(np.float32), sform)
    image.set_sform(sform, code=2)
    image.set_qform(qform, code=1)
    nib.save(image, str(path))
    return qform, sform


def test_prediction_keeps_the_input_qform_and_sform(tmp_path: Path) -> None:
    qform, sform = _input_with_disagreeing_forms(tmp_path / "t1.nii.gz")
    with pytest.warns(UserWarning, match="qform and sform disagree"):
        source = read_image(tmp_path / "t1.nii.gz")
    label = torch.zeros(source.data.shape, dtype=torch.uint8)
    out = tmp_path / "out" / "t1_seg.nii.gz"
    out.parent.mkdir()
    write_image(Image(label, source.affine.copy(), kind="label", meta=dict(source.meta)), out)
    header = nib.load(str(out)).header
    written_qform, qcode = header.get_qform(coded=True)
    written_sform, scode = header.get_sform(coded=True)
    np.testing.assert_allclose(written_qform, qform, atol=1e-4)
    np.testing.assert_allclose(written_sform, sform, atol=1e-4)
    assert (int(qcode), int(scode)) == (1, 2)


def test_output_on_another_grid_does_not_take_the_input_qform(tmp_path: Path) -> None:
    _input_with_disagreeing_forms(tmp_path / "t1.nii.gz")
    with pytest.warns(UserWarning):
        source = read_image(tmp_path / "t1.nii.gz")
    resampled = source.affine.copy()
    resampled[:3, :3] *= 2.0
    out = tmp_path / "out.nii.gz"
    write_image(Image(torch.zeros((1, 3, 3, 2)), resampled, meta=dict(source.meta)), out)
    np.testing.assert_allclose(nib.load(str(out)).header.get_qform(), resampled, atol=1e-4)
