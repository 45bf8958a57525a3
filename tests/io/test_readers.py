"""Readers: nibabel's shipped files, LPS→RAS for ITK formats, 2D pictures, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nibabel.testing import data_path

from voxelflow.errors import ConfigError, DataError, MissingFileError, RegistryError
from voxelflow.io import RawImage, read_image, register_reader
from voxelflow.io.readers import READERS, SUFFIXES, split_suffix
from voxelflow.synthetic import make_phantom, phantom_affine

NIBABEL_DATA = Path(data_path)


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("anatomical.nii", 1),
        ("example4d.nii.gz", 2),
        ("functional.nii", 20),
        ("example_nifti2.nii.gz", 2),
        ("standard.nii.gz", 1),
        ("minc1_1_scale.mnc", 1),
    ],
)
def test_nibabel_shipped_files_match_nibabel(name: str, channels: int) -> None:
    path = NIBABEL_DATA / name
    image = read_image(path)
    reference = nib.load(str(path))
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-6)
    expected = np.asanyarray(reference.dataobj)
    expected = expected.reshape(*expected.shape[:3], -1)
    assert image.data.shape == (channels, *expected.shape[:3])
    np.testing.assert_allclose(image.numpy(), np.moveaxis(expected, -1, 0), rtol=1e-6)
    assert image.orientation == "".join(nib.aff2axcodes(reference.affine))
    assert image.path == path and image.meta["reader"] == "nibabel"


def test_analyze_pair(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.AnalyzeImage(data, np.diag([1.5, 2.0, 2.5, 1.0])), str(tmp_path / "a.hdr"))
    reference = nib.load(str(tmp_path / "a.img"))
    for name in ("a.hdr", "a.img"):
        image = read_image(tmp_path / name)
        np.testing.assert_allclose(image.affine, reference.affine)
        np.testing.assert_array_equal(image.numpy()[0], data)
        assert image.meta["format"].endswith("AnalyzeImage")


def test_example4d_orientation_vs_io_orientation() -> None:
    image = read_image(NIBABEL_DATA / "example4d.nii.gz")
    ornt = nib.orientations.io_orientation(image.affine)
    assert "".join(nib.orientations.ornt2axcodes(ornt)) == image.orientation == "LAS"
    assert image.meta["qform_code"] == 1 and image.meta["sform_code"] == 1


def _write_itk(
    path: Path, array_zyx: np.ndarray, direction: np.ndarray, origin, spacing
) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return image


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
def test_itk_formats_convert_lps_to_ras(tmp_path: Path, suffix: str) -> None:
    angle = 0.4
    direction = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]]
    )
    array = np.random.default_rng(0).normal(size=(5, 7, 6)).astype(np.float32)  # (z, y, x)
    reference = _write_itk(
        tmp_path / f"a{suffix}", array, direction, (3.0, -4.0, 5.5), (0.7, 1.1, 2.5)
    )
    image = read_image(tmp_path / f"a{suffix}")
    assert image.data.shape == (1, 6, 7, 5)
    np.testing.assert_array_equal(image.numpy()[0], array.transpose(2, 1, 0))
    for index in [(0, 0, 0), (5, 6, 4), (2, 1, 3)]:
        x, y, z = reference.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((image.affine @ [*index, 1.0])[:3], [-x, -y, z], atol=1e-5)


def test_nrrd_affine_matches_torchio(tmp_path: Path) -> None:
    torchio = pytest.importorskip("torchio")
    direction = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, -1.0, 0]])
    _write_itk(tmp_path / "b.nrrd", np.zeros((4, 5, 6), np.int16), direction, (1, 2, 3), (1, 2, 3))
    image = read_image(tmp_path / "b.nrrd")
    np.testing.assert_allclose(
        image.affine, torchio.ScalarImage(tmp_path / "b.nrrd").affine, atol=1e-6
    )


def test_vector_and_4d_itk_images_become_channels(tmp_path: Path) -> None:
    vector = np.arange(4 * 5 * 6 * 3, dtype=np.float32).reshape(4, 5, 6, 3)  # (z, y, x, components)
    sitk.WriteImage(sitk.GetImageFromArray(vector, isVector=True), str(tmp_path / "v.nrrd"))
    image = read_image(tmp_path / "v.nrrd")
    assert image.data.shape == (3, 6, 5, 4)
    np.testing.assert_array_equal(image.numpy(), vector.transpose(3, 2, 1, 0))
    series = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)  # (t, z, y, x)
    joined = sitk.JoinSeries([sitk.GetImageFromArray(volume) for volume in series])
    sitk.WriteImage(joined, str(tmp_path / "t.mha"))
    image = read_image(tmp_path / "t.mha")
    assert image.data.shape == (2, 5, 4, 3)
    np.testing.assert_array_equal(image.numpy(), series.transpose(0, 3, 2, 1))


def test_png_rgb_and_grey(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(
        0, 255, size=(9, 11, 3), dtype=np.uint8
    )  # (rows, cols, 3)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    image = read_image(tmp_path / "rgb.png")
    assert image.data.shape == (3, 11, 9) and image.spatial_dims == 2
    np.testing.assert_array_equal(image.numpy(), rgb.transpose(2, 1, 0))
    np.testing.assert_array_equal(image.affine, np.eye(4))
    grey = rgb[..., 0]
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.tif"))
    image = read_image(tmp_path / "grey.tif")
    assert image.data.shape == (1, 11, 9)
    np.testing.assert_array_equal(image.numpy()[0], grey.T)


def test_uint16_is_widened_for_torch(tmp_path: Path) -> None:
    data = np.array([[[0, 65535]]], dtype=np.uint16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "u.nii.gz"))
    image = read_image(tmp_path / "u.nii.gz")
    assert image.dtype == torch.int32 and image.meta["source_dtype"] == "uint16"
    assert int(image.data.max()) == 65535


def test_sform_preferred_and_qform_fallback(tmp_path: Path) -> None:
    data = np.zeros((3, 4, 5), np.float32)
    qform, sform = np.diag([2.0, 3.0, 4.0, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0])
    image = nib.Nifti1Image(data, None)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=0)
    nib.save(image, str(tmp_path / "q.nii"))
    loaded = read_image(tmp_path / "q.nii")
    np.testing.assert_allclose(loaded.affine, qform)
    assert (loaded.meta["qform_code"], loaded.meta["sform_code"]) == (1, 0)
    image.set_sform(sform, code=2)
    nib.save(image, str(tmp_path / "s.nii"))
    with pytest.warns(UserWarning, match="qform and sform disagree"):
        loaded = read_image(tmp_path / "s.nii")
    np.testing.assert_allclose(loaded.affine, sform)
    assert "qform_sform_mismatch" in loaded.meta


# -- bad input -----------------------------------------------------------------------------------
def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        read_image(tmp_path / "absent.nii.gz")
    assert isinstance(info.value, MissingFileError) and "absent.nii.gz" in str(info.value)


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "a.xyz").write_bytes(b"x")
    with pytest.raises(DataError, match=r"\.nii\.gz.*\.nrrd|\.nrrd.*\.nii\.gz") as info:
        read_image(tmp_path / "a.xyz")
    assert "a.xyz" in str(info.value)


def _phantom_nifti(path: Path) -> np.ndarray:
    image, _ = make_phantom((12, 10, 8), seed=2)
    nib.save(nib.Nifti1Image(image, phantom_affine()), str(path))
    return image


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    _phantom_nifti(tmp_path / "full.nii.gz")
    raw = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz") as info:
        read_image(tmp_path / "cut.nii.gz")
    assert info.value.__cause__ is not None


def test_header_larger_than_data(tmp_path: Path) -> None:
    _phantom_nifti(tmp_path / "full.nii")
    raw = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "short.nii").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"short\.nii"):
        read_image(tmp_path / "short.nii")


def test_garbage_with_nifti_suffix(tmp_path: Path) -> None:
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not an image at all"))
    with pytest.raises(DataError, match=r"junk\.nii\.gz"):
        read_image(tmp_path / "junk.nii.gz")


def test_non_finite_policies(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.warns(UserWarning, match=r"3 non-finite voxels \(1 NaN, 2 ±Inf\)"):
        image = read_image(tmp_path / "nan.nii.gz")
    assert torch.isnan(image.data).sum() == 1
    with pytest.raises(DataError, match=r"nan\.nii\.gz"):
        read_image(tmp_path / "nan.nii.gz", non_finite="error")
    with pytest.warns(UserWarning, match="replaced"):
        image = read_image(tmp_path / "nan.nii.gz", non_finite="zero")
    assert torch.isfinite(image.data).all() and float(image.data.sum()) == 61.0
    with pytest.raises(ConfigError, match="non_finite"):
        read_image(tmp_path / "nan.nii.gz", non_finite="drop")


def test_label_values(tmp_path: Path) -> None:
    labels = np.array([[[0.0, 1.0], [2.0, 300.0]]], np.float32)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "seg.nii.gz"))
    image = read_image(tmp_path / "seg.nii.gz", kind="label")
    assert image.dtype == torch.int16 and image.kind == "label"
    np.testing.assert_array_equal(image.numpy()[0], labels.astype(np.int16))
    nib.save(nib.Nifti1Image(labels + 0.5, np.eye(4)), str(tmp_path / "soft.nii.gz"))
    with pytest.raises(DataError, match=r"soft\.nii\.gz.*non-integer"):
        read_image(tmp_path / "soft.nii.gz", kind="label")


@pytest.fixture
def scratch_readers():
    """Readers registered by a test are removed afterwards (other tests list the registry)."""
    entries, suffixes = dict(READERS._entries), dict(SUFFIXES)
    yield
    READERS._entries.clear()
    READERS._entries.update(entries)
    SUFFIXES.clear()
    SUFFIXES.update(suffixes)


@pytest.mark.usefixtures("scratch_readers")
def test_reader_override_and_custom_reader(tmp_path: Path) -> None:
    data = _phantom_nifti(tmp_path / "image.nii")
    by_itk = read_image(tmp_path / "image.nii", reader="itk")  # SimpleITK reads NIfTI too
    assert by_itk.meta["reader"] == "itk"
    np.testing.assert_allclose(by_itk.affine, phantom_affine(), atol=1e-5)
    np.testing.assert_array_equal(by_itk.numpy()[0], data)
    with pytest.raises(RegistryError, match="Did you mean"):
        read_image(tmp_path / "image.nii", reader="nibabl")

    name = "test_npy_reader"
    if name not in READERS:

        @register_reader(name, suffixes=(".testnpy",))
        def read_npy(path: Path, *, series_uid: str | None = None) -> RawImage:
            return RawImage(np.load(path, allow_pickle=False)[None], np.diag([2.0, 2.0, 2.0, 1.0]))

    np.save(tmp_path / "x.npy", np.zeros((3, 4, 5), np.float32))
    (tmp_path / "x.npy").rename(tmp_path / "x.testnpy")
    image = read_image(tmp_path / "x.testnpy")
    assert image.data.shape == (1, 3, 4, 5) and image.spacing == (2.0, 2.0, 2.0)
    assert SUFFIXES[".testnpy"] == name


@pytest.mark.usefixtures("scratch_readers")
def test_reader_failures_become_data_errors(tmp_path: Path) -> None:
    (tmp_path / "x.testfail").write_bytes(b"x")
    if "test_failing_reader" not in READERS:

        @register_reader("test_failing_reader", suffixes=(".testfail",))
        def read_fail(path: Path, *, series_uid: str | None = None) -> RawImage:
            raise ModuleNotFoundError("No module named 'h5py'", name="h5py")

    if "test_not_a_reader" not in READERS:
        READERS.add("test_not_a_reader", lambda path, series_uid=None: np.zeros((2, 2, 2)))

    with pytest.raises(DataError, match=r"x\.testfail.*missing package h5py"):
        read_image(tmp_path / "x.testfail")
    with pytest.raises(DataError, match="must return a RawImage"):
        read_image(tmp_path / "x.testfail", reader="test_not_a_reader")


def test_split_suffix_knows_double_suffixes() -> None:
    assert split_suffix(Path("d/brain.nii.gz")) == ("brain", ".nii.gz")
    assert split_suffix(Path("case.v2.NRRD")) == ("case.v2", ".NRRD")
    assert split_suffix(Path("notes.txt")) == ("notes", ".txt")
