from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.errors import GeometryError, ShapeError
from voxelflow.io.image import Image, Subject, check_same_grid
from voxelflow.synthetic import phantom_affine


def test_geometry_properties_match_nibabel() -> None:
    affine = phantom_affine((0.7, 0.8, 3.0))
    img = Image(torch.zeros(2, 5, 6, 7), affine)
    assert img.num_channels == 2 and img.spatial_shape == (5, 6, 7) and img.spatial_dims == 3
    np.testing.assert_allclose(img.spacing, nib.affines.voxel_sizes(affine))
    assert img.orientation == "".join(nib.aff2axcodes(affine))


def test_bad_shapes_are_clear() -> None:
    with pytest.raises(ShapeError, match=r"\(C, X, Y\)"):
        Image(torch.zeros(5, 5))
    with pytest.raises(ShapeError, match="4×4"):
        Image(torch.zeros(1, 5, 5), np.eye(3))


def test_grid_policy_names_both_files(tmp_path) -> None:
    a = Image(torch.zeros(1, 4, 4, 4), np.eye(4), path=tmp_path / "a.nii.gz")
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    b = Image(torch.zeros(1, 4, 4, 4), shifted, path=tmp_path / "b.nii.gz")
    with pytest.raises(GeometryError, match=r"a\.nii\.gz.*b\.nii\.gz.*origin"):
        check_same_grid(a, b)
    tiny = np.eye(4)
    tiny[0, 3] = 1e-5
    check_same_grid(a, Image(torch.zeros(1, 4, 4, 4), tiny))  # within tolerance
    subject = Subject("s", {"image": a, "label": b})
    with pytest.raises(GeometryError):
        subject.check_grid()
