"""Writers: round trips across formats, dtype and qform/sform preservation, atomic writes."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from voxelflow.errors import DataError
from voxelflow.io import Image, read_image, write_image
from voxelflow.synthetic import make_phantom, phantom_affine

SHAPE = (12, 10, 8)


@pytest.fixture
def phantom() -> Image:
    image, _ = make_phantom(SHAPE, seed=4)
    return Image(torch.from_numpy(image[None]), phantom_affine((0.9, 1.3, 2.2), angle=0.35))


@pytest.fixture
def label() -> Image:
    _, label = make_phantom(SHAPE, seed=4)
    return Image(
        torch.from_numpy(label[None]).long(), phantom_affine((0.9, 1.3, 2.2)), kind="label"
    )


def test_round_trip_nifti_nrrd_mha_nifti(tmp_path: Path, phantom: Image) -> None:
    current = phantom
    for suffix in (".nii.gz", ".nrrd", ".mha", ".mhd", ".nhdr", ".hdr", ".mgz", ".nii"):
        current = read_image(write_image(current, tmp_path / f"step{suffix}"))
        np.testing.assert_allclose(current.affine, phantom.affine, atol=1e-5, err_msg=suffix)
        np.testing.assert_array_equal(current.numpy(), phantom.numpy(), err_msg=suffix)
        assert current.dtype == torch.float32
        assert current.orientation == "".join(nib.aff2axcodes(phantom.affine))


def test_written_geometry_agrees_with_simpleitk_and_torchio(tmp_path: Path, phantom: Image) -> None:
    torchio = pytest.importorskip("torchio")
    for suffix in (".nii.gz", ".nrrd"):
        path = write_image(phantom, tmp_path / f"x{suffix}")
        reference = sitk.ReadImage(str(path))
        for index in [(0, 0, 0), (11, 9, 7), (3, 5, 2)]:
            x, y, z = reference.TransformIndexToPhysicalPoint(index)
            world = (phantom.affine @ [*index, 1.0])[:3]
            np.testing.assert_allclose(world, [-x, -y, z], atol=1e-4, err_msg=suffix)
        np.testing.assert_allclose(torchio.ScalarImage(path).affine, phantom.affine, atol=1e-5)


def test_labels_are_written_as_integers(tmp_path: Path, label: Image) -> None:
    as_float = label.with_data(label.data.float())
    path = write_image(as_float, tmp_path / "seg.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    back = read_image(path, kind="label")
    np.testing.assert_array_equal(back.numpy(), label.numpy())
    soft = label.with_data(label.data.float() + 0.25)
    with pytest.raises(DataError, match="non-integer"):
        write_image(soft, tmp_path / "soft.nii.gz")
    path = write_image(label, tmp_path / "seg.nrrd")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8


def test_source_dtype_is_restored(tmp_path: Path) -> None:
    data = np.array([[[0, 40000], [7, 65535]]], dtype=np.uint16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "u16.nii.gz"))
    image = read_image(tmp_path / "u16.nii.gz")
    assert image.dtype == torch.int32
    path = write_image(image, tmp_path / "out" / "u16.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), data)
    normalised = image.with_data(image.data.float() / 65535)
    assert nib.load(str(write_image(normalised, tmp_path / "f.nii"))).get_data_dtype() == np.float32
    too_big = image.with_data(image.data * 2)  # no longer fits uint16: keep int32
    assert nib.load(str(write_image(too_big, tmp_path / "i.nii"))).get_data_dtype() == np.int32


def test_float64_results_of_a_float32_source_are_written_as_float32(
    tmp_path: Path, phantom: Image
) -> None:
    source = read_image(write_image(phantom, tmp_path / "f32.nii.gz"))
    result = source.with_data(source.data.double() * 2)
    path = write_image(result, tmp_path / "result.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.float32
    in_memory = Image(torch.zeros(1, 2, 2, 2, dtype=torch.float64))  # no source: kept
    assert (
        nib.load(str(write_image(in_memory, tmp_path / "f64.nii"))).get_data_dtype() == np.float64
    )


def test_explicit_dtype(tmp_path: Path, phantom: Image) -> None:
    scaled = phantom.with_data(torch.round(phantom.data * 100))
    path = write_image(scaled, tmp_path / "i.nii.gz", dtype="int16")
    assert nib.load(str(path)).get_data_dtype() == np.int16
    with pytest.raises(DataError, match="int16"):
        write_image(phantom, tmp_path / "bad.nii.gz", dtype=np.int16)


def test_qform_sform_codes_are_kept(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=4)  # MNI
    nib.save(image, str(tmp_path / "in.nii.gz"))
    written = write_image(read_image(tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz")
    header = nib.load(str(written)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 4)


def test_shear_affine_survives_a_qform_only_source(tmp_path: Path, phantom: Image) -> None:
    sheared = phantom.affine.copy()
    sheared[0, 1] += 0.4
    image = phantom.with_data(phantom.data, affine=sheared)
    image.meta.update(qform_code=1, sform_code=0)
    with pytest.warns(UserWarning, match="shear"):
        path = write_image(image, tmp_path / "shear.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no qform/sform disagreement on our own output
        np.testing.assert_allclose(read_image(path).affine, sheared, atol=1e-5)


def test_channels_and_2d(tmp_path: Path, phantom: Image) -> None:
    two = phantom.with_data(torch.cat([phantom.data, -phantom.data]))
    path = write_image(two, tmp_path / "c.nii.gz")
    assert nib.load(str(path)).shape == (*SHAPE, 2)
    np.testing.assert_array_equal(read_image(path).numpy(), two.numpy())
    back = read_image(write_image(two, tmp_path / "c.nrrd"))
    np.testing.assert_array_equal(back.numpy(), two.numpy())
    flat = Image(phantom.data[:, :, :, 0], np.diag([0.5, 0.7, 1.0, 1.0]))
    as_nifti = read_image(write_image(flat, tmp_path / "flat.nii.gz"))
    assert as_nifti.data.shape == (1, 12, 10, 1)
    as_mha = read_image(write_image(flat, tmp_path / "flat.mha"))
    assert as_mha.data.shape == (1, 12, 10)
    np.testing.assert_allclose(as_mha.affine, flat.affine, atol=1e-9)


def test_png_round_trip_and_range_check(tmp_path: Path) -> None:
    rgb = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8)
    image = Image(rgb, np.diag([0.5, 0.25, 1.0, 1.0]))
    back = read_image(write_image(image, tmp_path / "rgb.png"))
    assert torch.equal(back.data, rgb)
    grey = Image(torch.arange(63, dtype=torch.float32).reshape(1, 9, 7) * 1000)
    back = read_image(write_image(grey, tmp_path / "grey.png"))
    assert back.meta["source_dtype"] == "uint16"
    np.testing.assert_array_equal(back.numpy(), grey.numpy())
    with pytest.raises(DataError, match="uint8"):
        write_image(Image(torch.full((1, 4, 4), 0.5)), tmp_path / "half.jpg")


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path, phantom: Image) -> None:
    for name in ("a.nii.gz", "b.mhd", "c.hdr"):
        write_image(phantom, tmp_path / name)
    write_image(phantom, tmp_path / "a.nii.gz")  # overwrite a previous output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.nii.gz",
        "b.mhd",
        "b.zraw",
        "c.hdr",
        "c.img",
    ]


def test_failed_write_keeps_the_old_file(tmp_path: Path, phantom: Image) -> None:
    target = write_image(Image(torch.zeros((1, 4, 4), dtype=torch.uint8)), tmp_path / "keep.png")
    before = target.read_bytes()
    with pytest.raises(DataError):
        write_image(phantom, target)  # a 3D float volume cannot go to PNG
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_never_overwrites_the_source(tmp_path: Path, phantom: Image) -> None:
    path = write_image(phantom, tmp_path / "source.nii.gz")
    image = read_image(path)
    with pytest.raises(DataError, match="read from"):
        write_image(image, tmp_path / "." / "source.nii.gz")


def test_unknown_suffix(tmp_path: Path, phantom: Image) -> None:
    with pytest.raises(DataError, match=r"\.nii\.gz"):
        write_image(phantom, tmp_path / "x.vtk")
