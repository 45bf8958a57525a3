"""DICOM series reading: real pydicom test series and synthetic series with a known affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from voxelflow.errors import DataError, MissingFileError
from voxelflow.io import read_image, write_image
from voxelflow.io.dicom import list_series, read_dicom

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
CT2_WITH_GAP = DICOMDIR_TESTS / "77654033" / "CT2"
MR2_THREE_SERIES = DICOMDIR_TESTS / "98892003" / "MR2"
MR700_RADIAL = DICOMDIR_TESTS / "98892003" / "MR700"
LOCALISER_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481"
TRIPLANAR_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136"


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.6f}"[:16]


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    row_cosines: np.ndarray,
    column_cosines: np.ndarray,
    spacing: tuple[float, float, float],
    origin: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
    skip: tuple[int, ...] = (),
) -> dict:
    """Write ``volume`` (Z, rows, columns) int16 as a DICOM series, files and InstanceNumbers shuffled.

    ``spacing`` is (column spacing, row spacing, slice step) in mm; geometry is LPS as DICOM has it.
    Returns the parsed (rounded) geometry that was written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    orientation = [float(_ds(v)) for v in (*row_cosines, *column_cosines)]
    normal = np.cross(row_cosines, column_cosines)
    order = np.random.default_rng(0).permutation(volume.shape[0])
    positions = {}
    for instance, k in enumerate(order):
        if k in skip:
            continue
        position = [float(_ds(v)) for v in origin + normal * spacing[2] * k]
        positions[int(k)] = np.asarray(position)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "CT", "synthetic", 7
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid
        ds.InstanceNumber = instance + 1  # deliberately unrelated to the position
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # [between rows, between columns]
        ds.SliceThickness = _ds(spacing[2])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        ds.PixelData = volume[k].astype("<i2").tobytes()
        ds.save_as(folder / f"IM{instance:04d}", enforce_file_format=True)
    return {"orientation": np.asarray(orientation), "positions": positions}


def expected_ras_affine(geometry: dict, spacing: tuple[float, float, float]) -> np.ndarray:
    """Hand-built affine: LPS columns (row cosines × column spacing, ...), then x, y negated."""
    orientation, positions = geometry["orientation"], geometry["positions"]
    first, last = positions[min(positions)], positions[max(positions)]
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * spacing[0]
    lps[:3, 1] = orientation[3:] * spacing[1]
    lps[:3, 2] = (last - first) / (max(positions) - min(positions))
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(3).integers(-500, 1500, size=(6, 7, 5)).astype(np.int16)


def test_ct5n_affine_and_values_by_hand() -> None:
    image = read_image(CT5N)
    assert image.data.shape == (1, 16, 16, 5)
    expected = np.array(
        [
            [-0.488281, 0, 0, 72.199997],
            [0, -0.488281, 0, 143.0],
            [0, 0, 2.5, -1.2375],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_allclose(image.affine, expected, atol=1e-6)
    assert image.orientation == "".join(nib.aff2axcodes(expected)) == "LPS"
    # first slice is the lowest position (file 3353, InstanceNumber 10), not InstanceNumber 6
    lowest = pydicom.dcmread(CT5N / "3353")
    np.testing.assert_array_equal(
        image.numpy()[0, :, :, 0], lowest.pixel_array.T.astype(np.int32) - 1024
    )
    assert image.meta["num_slices"] == 5 and image.meta["modality"] == "CT"


def test_ct5n_matches_simpleitk_series_reader() -> None:
    image = read_image(CT5N)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT5N)))
    reference = reader.Execute()
    np.testing.assert_array_equal(
        image.numpy()[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    )
    for index in [(0, 0, 0), (15, 3, 4), (2, 11, 1)]:
        x, y, z = reference.TransformIndexToPhysicalPoint(index)
        world = image.affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(world[:3], [-x, -y, z], atol=1e-4)


def test_gap_is_refused_naming_the_folder() -> None:
    with pytest.raises(DataError, match="missing slice") as info:
        read_image(CT2_WITH_GAP)
    assert "CT2" in str(info.value)


def test_several_series_are_listed() -> None:
    with pytest.raises(DataError) as info:
        read_image(MR2_THREE_SERIES)
    message = str(info.value)
    assert "found 3" in message and LOCALISER_UID in message and "FAST LOCALIZER" in message
    assert "1 slice)" in message and "series_uid" in message
    assert len(list_series(MR2_THREE_SERIES)) == 3


def test_series_uid_picks_the_localiser_as_2d() -> None:
    image = read_image(MR2_THREE_SERIES, series_uid=LOCALISER_UID)
    assert image.data.shape == (1, 16, 16) and image.meta["single_slice"]
    header = pydicom.dcmread(MR2_THREE_SERIES / "15970")
    # IOP rows (0,1,0), columns (0,0,-1): x → P, y → I; third column along the normal (−1,0,0) = R
    np.testing.assert_allclose(image.affine[:3, 0], [0, -1.367188, 0], atol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 1], [0, 0, -1.367188], atol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 2], [10.0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(image.numpy()[0], header.pixel_array.T)


def test_mixed_orientations_are_refused() -> None:
    with pytest.raises(DataError, match="orientation"):
        read_image(MR700_RADIAL)
    with pytest.raises(DataError, match="orientation"):
        read_image(MR2_THREE_SERIES, series_uid=TRIPLANAR_UID)


def test_unknown_series_uid_lists_the_series() -> None:
    with pytest.raises(DataError, match="FAST LOCALIZER"):
        read_image(MR2_THREE_SERIES, series_uid="1.2.3")


def test_synthetic_oblique_series_has_the_written_affine(
    tmp_path: Path, volume: np.ndarray
) -> None:
    angle = 0.3
    row_cosines = np.array([np.cos(angle), np.sin(angle), 0.0])
    column_cosines = np.array(
        [-np.sin(angle) * np.cos(0.2), np.cos(angle) * np.cos(0.2), -np.sin(0.2)]
    )
    spacing = (0.8, 0.6, 2.0)
    geometry = write_series(
        tmp_path / "s",
        volume,
        row_cosines=row_cosines,
        column_cosines=column_cosines,
        spacing=spacing,
        origin=np.array([-20.0, 10.0, 35.0]),
        slope=2.0,
        intercept=-100.0,
    )
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    image = read_image(tmp_path / "s")
    np.testing.assert_allclose(image.affine, expected_ras_affine(geometry, spacing), atol=1e-9)
    np.testing.assert_allclose(image.numpy()[0], volume.transpose(2, 1, 0) * 2.0 - 100.0)
    assert image.dtype.is_floating_point


def test_synthetic_sagittal_series_orientation(tmp_path: Path, volume: np.ndarray) -> None:
    # rows along LPS +y (P), columns along −z (I); normal r × c = (−1, 0, 0) (R): codes P, I, R
    write_series(
        tmp_path / "sag",
        volume,
        row_cosines=np.array([0.0, 1.0, 0.0]),
        column_cosines=np.array([0.0, 0.0, -1.0]),
        spacing=(1.0, 1.5, 3.0),
        origin=np.array([0.0, 0.0, 0.0]),
        intercept=-1024.0,
    )
    image = read_image(tmp_path / "sag")
    assert "".join(nib.aff2axcodes(image.affine)) == "PIR" == image.orientation
    assert image.spacing == pytest.approx((1.0, 1.5, 3.0))
    assert image.data.dtype.is_floating_point is False
    np.testing.assert_array_equal(
        image.numpy()[0], volume.transpose(2, 1, 0).astype(np.int32) - 1024
    )


def test_synthetic_series_matches_simpleitk(tmp_path: Path, volume: np.ndarray) -> None:
    write_series(
        tmp_path / "s",
        volume,
        row_cosines=np.array([1.0, 0.0, 0.0]),
        column_cosines=np.array([0.0, 0.8, -0.6]),
        spacing=(0.7, 0.9, 1.25),
        origin=np.array([5.0, -3.0, 12.0]),
    )
    image = read_image(tmp_path / "s")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = reader.Execute()
    np.testing.assert_array_equal(
        image.numpy()[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    )
    for index in [(0, 0, 0), (4, 6, 5), (1, 2, 3)]:
        x, y, z = reference.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((image.affine @ [*index, 1.0])[:3], [-x, -y, z], atol=1e-4)


def test_missing_slice_in_synthetic_series(tmp_path: Path, volume: np.ndarray) -> None:
    kwargs = {"row_cosines": np.eye(3)[0], "column_cosines": np.eye(3)[1], "spacing": (1, 1, 2)}
    write_series(tmp_path / "gap", volume, origin=np.zeros(3), skip=(3,), **kwargs)
    with pytest.raises(DataError, match=r"about 1 missing slice") as info:
        read_image(tmp_path / "gap")
    assert "gap" in str(info.value)


def test_duplicate_positions_are_refused(tmp_path: Path, volume: np.ndarray) -> None:
    kwargs = {"row_cosines": np.eye(3)[0], "column_cosines": np.eye(3)[1], "spacing": (1, 1, 2)}
    uid = generate_uid()
    write_series(tmp_path / "echo", volume[:3], origin=np.zeros(3), series_uid=uid, **kwargs)
    for path in sorted((tmp_path / "echo").iterdir()):  # a second echo at the same positions
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = generate_uid()
        dataset.save_as(path.with_name(path.name + "_echo2"))
    with pytest.raises(DataError, match="one slice per position"):
        read_image(tmp_path / "echo")


def test_single_file_is_a_2d_slice() -> None:
    array, affine, meta = read_dicom(CT5N / "2062")
    assert array.shape == (1, 16, 16) and meta["single_slice"]
    np.testing.assert_allclose(affine[:3, 3], [72.199997, 143.0, 8.7625], atol=1e-6)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="found none"):
        read_image(tmp_path)
    with pytest.raises(MissingFileError):
        list_series(tmp_path / "absent")


def test_shifted_slice_is_refused(tmp_path: Path, volume: np.ndarray) -> None:
    kwargs = {"row_cosines": np.eye(3)[0], "column_cosines": np.eye(3)[1], "spacing": (1, 1, 2)}
    write_series(tmp_path / "shift", volume, origin=np.zeros(3), **kwargs)
    victim = sorted((tmp_path / "shift").iterdir())[2]
    dataset = pydicom.dcmread(victim)
    x, y, z = (float(v) for v in dataset.ImagePositionPatient)
    dataset.ImagePositionPatient = [_ds(x + 3.0), _ds(y), _ds(z)]  # moved 3 mm in-plane
    dataset.save_as(victim)
    with pytest.raises(DataError, match="on one line") as info:
        read_image(tmp_path / "shift")
    assert victim.name in str(info.value)


def test_dicom_to_nifti_keeps_geometry_and_dtype(tmp_path: Path) -> None:
    image = read_image(CT5N)
    back = read_image(write_image(image, tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
    np.testing.assert_array_equal(back.numpy(), image.numpy())
    assert back.meta["source_dtype"] == "int16" and back.orientation == "LPS"
