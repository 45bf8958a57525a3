"""DICOM series: discovery, slice sorting and the voxel-to-world affine, built with pydicom.

A folder is read as one series of single-frame slices:

1. every readable DICOM file is grouped by ``SeriesInstanceUID``; a folder with several series
   is an error listing each UID (with its number, description and slice count) unless
   ``series_uid`` picks one;
2. slices must share ``ImageOrientationPatient``, size and ``PixelSpacing`` (a tri-planar or
   radial localiser, whose slices point different ways, is refused: it is not a volume);
3. slices are sorted by their position projected on the slice normal (the cross product of the
   row and column direction cosines), never by ``InstanceNumber``;
4. the spacing between consecutive positions must be regular: a missing slice or two slices at
   the same position (several echoes or time points mixed in one series) is an error;
5. ``RescaleSlope``/``RescaleIntercept`` are applied per slice.

The affine maps ``(x, y, z)`` = (column, row, sorted slice) indices to RAS+ mm: DICOM's patient
coordinates are LPS+, so the first two rows of the LPS affine are negated. The third column is the
step between the first and the last slice positions, so gantry tilt is kept as a shear.

**Single slices** (one file, or a series of one slice such as a localiser) are returned as 2D
images ``(1, X, Y)`` with a 4×4 affine whose third column is the slice normal times the slice
thickness; ``meta["single_slice"]`` is ``True`` so callers can refuse them when they need volumes.

Enhanced multi-frame and colour DICOM are not supported yet (a clear error says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from voxelflow.errors import DataError, MissingFileError
from voxelflow.io.checks import smallest_integer_dtype
from voxelflow.registry import suggest

logger = logging.getLogger(__name__)

#: Tolerances of the slice geometry checks.
ORIENTATION_TOLERANCE = 1e-4
POSITION_TOLERANCE_MM = 1e-3
RELATIVE_STEP_TOLERANCE = 0.02
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder.

    Args:
        uid: ``SeriesInstanceUID``.
        description: ``SeriesDescription`` (may be empty).
        number: ``SeriesNumber`` or ``None``.
        modality: ``Modality`` (``"CT"``, ``"MR"``, ...).
        files: the slice files, in folder order (not sorted geometrically).
    """

    uid: str
    description: str
    number: int | None
    modality: str
    files: tuple[Path, ...]

    @property
    def num_slices(self) -> int:
        """Number of files (slices) in the series."""
        return len(self.files)

    def summary(self) -> str:
        """One line: ``UID (#number 'description', CT, 5 slices)``."""
        number = f"#{self.number} " if self.number is not None else ""
        return (
            f"{self.uid} ({number}{self.description!r}, {self.modality or '?'}, "
            f"{self.num_slices} slice{'s' if self.num_slices != 1 else ''})"
        )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of an image file, or ``None`` for non-DICOM files and DICOMDIRs."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError):
        return None
    if "SeriesInstanceUID" not in header or "Rows" not in header:
        return None
    return header


def list_series(folder: str | Path) -> list[DicomSeries]:
    """Group the DICOM image files of ``folder`` (not recursive) by ``SeriesInstanceUID``.

    Args:
        folder: a directory of DICOM files (any file names; non-DICOM files are skipped).

    Returns:
        The series, sorted by series number then UID.

    Raises:
        MissingFileError: the folder does not exist.
        DataError: the folder holds no DICOM image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"expected a DICOM folder, got a missing path {str(folder)!r}")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        header = _read_header(path)
        if header is not None:
            groups.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
    if not groups:
        raise DataError(f"expected DICOM image files in folder {str(folder)!r}, found none")
    series = [_series_from_group(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (s.number if s.number is not None else -1, s.uid))


def _series_from_group(uid: str, members: list[tuple[Path, pydicom.Dataset]]) -> DicomSeries:
    first = members[0][1]
    number = first.get("SeriesNumber")
    return DicomSeries(
        uid=uid,
        description=str(first.get("SeriesDescription", "")).strip(),
        number=int(number) if number not in (None, "") else None,
        modality=str(first.get("Modality", "")),
        files=tuple(path for path, _ in members),
    )


def select_series(folder: str | Path, *, series_uid: str | None = None) -> DicomSeries:
    """The one series of ``folder``, or the one whose UID is ``series_uid``.

    Raises:
        DataError: several series and no ``series_uid`` (the message lists them), or an unknown UID.
    """
    series = list_series(folder)
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            uids = [s.uid for s in series]
            raise DataError(
                f"expected series_uid to be one of the series in {str(folder)!r}, got "
                f"{series_uid!r}.{suggest(series_uid, uids)} Series: "
                + "; ".join(s.summary() for s in series)
            )
        return chosen[0]
    if len(series) > 1:
        listing = "\n  ".join(s.summary() for s in series)
        raise DataError(
            f"expected one DICOM series in {str(folder)!r}, found {len(series)}; pick one with "
            f"series_uid= (or --series-uid):\n  {listing}"
        )
    return series[0]


@dataclass(frozen=True)
class _Slice:
    path: Path
    header: pydicom.Dataset
    orientation: np.ndarray  # (6,) row cosines then column cosines, LPS
    position: np.ndarray  # (3,) LPS mm
    spacing: tuple[float, float]  # (between rows, between columns)


def _slice_geometry(path: Path, header: pydicom.Dataset) -> _Slice:
    missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient") if k not in header]
    if missing:
        raise DataError(f"expected {' and '.join(missing)} in DICOM file {str(path)!r}, got none")
    if int(header.get("NumberOfFrames", 1) or 1) > 1 or int(header.get("SamplesPerPixel", 1)) > 1:
        raise DataError(
            f"DICOM file {str(path)!r} is multi-frame or colour, which voxelflow does not read yet; "
            "convert the series to NIfTI (e.g. with dcm2niix)"
        )
    pixel_spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
    if not pixel_spacing:
        logger.warning("%s: no PixelSpacing; assuming 1 x 1 mm pixels", path)
        pixel_spacing = [1.0, 1.0]
    return _Slice(
        path=path,
        header=header,
        orientation=np.asarray([float(v) for v in header.ImageOrientationPatient]),
        position=np.asarray([float(v) for v in header.ImagePositionPatient]),
        spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
    )


def _check_same_plane(slices: list[_Slice], folder: Path) -> None:
    orientations = np.stack([s.orientation for s in slices])
    distinct = np.unique(np.round(orientations / ORIENTATION_TOLERANCE).astype(np.int64), axis=0)
    if np.max(np.abs(orientations - orientations[0])) > ORIENTATION_TOLERANCE:
        raise DataError(
            f"expected one slice orientation in DICOM series of {str(folder)!r}, found "
            f"{len(distinct)} different ImageOrientationPatient values (a localiser or radial "
            "series is not a volume); read one slice file instead"
        )
    sizes = {(int(s.header.Rows), int(s.header.Columns)) for s in slices}
    spacings = {tuple(np.round(s.spacing, 4)) for s in slices}
    if len(sizes) > 1 or len(spacings) > 1:
        raise DataError(
            f"expected slices of one size and pixel spacing in {str(folder)!r}, got sizes "
            f"{sorted(sizes)} and spacings {sorted(spacings)}"
        )


def _sort_along_normal(slices: list[_Slice], folder: Path) -> tuple[list[_Slice], float]:
    """Sort slices along the normal; check regular spacing. Returns (sorted, step in mm)."""
    row_cosines, column_cosines = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row_cosines, column_cosines)
    distances = np.asarray([float(s.position @ normal) for s in slices])
    order = np.argsort(distances, kind="stable")
    slices, distances = [slices[i] for i in order], distances[order]
    if len(slices) == 1:
        return slices, 0.0
    steps = np.diff(distances)
    if np.min(steps) < POSITION_TOLERANCE_MM:
        clash = int(np.argmin(steps))
        raise DataError(
            f"expected one slice per position in {str(folder)!r}, but {slices[clash].path.name!r} "
            f"and {slices[clash + 1].path.name!r} are both at {distances[clash]:.3f} mm along the "
            "normal (several echoes, time points or acquisitions mixed in one series?)"
        )
    step = float(np.median(steps))
    irregular = np.flatnonzero(
        np.abs(steps - step) > max(POSITION_TOLERANCE_MM, RELATIVE_STEP_TOLERANCE * step)
    )
    if irregular.size:
        i = int(irregular[0])
        missing = round(steps[i] / step) - 1
        raise DataError(
            f"expected regularly spaced slices in {str(folder)!r} (step {step:.4g} mm), got a "
            f"step of {steps[i]:.4g} mm between {slices[i].path.name!r} and "
            f"{slices[i + 1].path.name!r}"
            + (f" (about {missing} missing slice(s))" if missing >= 1 else " (irregular spacing)")
        )
    return slices, step


def _check_collinear(slices: list[_Slice], folder: Path) -> None:
    """Slice positions must lie on one line (regular steps along the normal are checked before)."""
    if len(slices) < 3:
        return
    positions = np.stack([s.position for s in slices])
    design = np.stack([np.ones(len(slices)), np.arange(len(slices))], axis=1)
    fit, *_ = np.linalg.lstsq(design, positions, rcond=None)  # least-squares line
    offset = np.linalg.norm(positions - design @ fit, axis=1)
    worst = int(np.argmax(offset))
    step = float(np.linalg.norm(fit[1]))
    if offset[worst] > max(10 * POSITION_TOLERANCE_MM, RELATIVE_STEP_TOLERANCE * step):
        raise DataError(
            f"expected slice positions on one line in {str(folder)!r}, but "
            f"{slices[worst].path.name!r} is {offset[worst]:.3g} mm off it (shifted slices "
            "cannot form one regular grid)"
        )


def _lps_affine(slices: list[_Slice]) -> np.ndarray:
    first = slices[0]
    row_cosines, column_cosines = first.orientation[:3], first.orientation[3:]
    affine = np.eye(4)
    affine[:3, 0] = row_cosines * first.spacing[1]  # x = column index, moves along the row
    affine[:3, 1] = column_cosines * first.spacing[0]  # y = row index
    if len(slices) > 1:
        affine[:3, 2] = (slices[-1].position - first.position) / (len(slices) - 1)
    else:
        thickness = float(first.header.get("SliceThickness") or 1.0)
        affine[:3, 2] = np.cross(row_cosines, column_cosines) * thickness
    affine[:3, 3] = first.position
    return affine


def _pixels(item: _Slice) -> tuple[np.ndarray, float, float]:
    """Raw stored values ``(rows, columns)`` of one slice, with its slope and intercept."""
    try:
        raw = item.header.pixel_array
    except Exception as exc:  # decoder missing or corrupt pixel data: name the file
        syntax = getattr(getattr(item.header, "file_meta", None), "TransferSyntaxUID", "?")
        raise DataError(
            f"cannot decode the pixel data of DICOM file {str(item.path)!r} (transfer syntax "
            f"{syntax}): {exc}"
        ) from exc
    slope = float(item.header.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(item.header.get("RescaleIntercept", 0.0) or 0.0)
    return raw, slope, intercept


def _stack_pixels(slices: list[_Slice]) -> np.ndarray:
    """Stack rescaled slices into ``(X, Y, Z)`` (columns, rows, sorted slices)."""
    loaded = [_pixels(s) for s in slices]
    volume: np.ndarray = np.stack([raw.T for raw, _, _ in loaded], axis=-1)
    slopes = np.asarray([slope for _, slope, _ in loaded])
    intercepts = np.asarray([intercept for _, _, intercept in loaded])
    if np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)):
        values = volume.astype(np.int64) + intercepts.astype(np.int64)
        if values.size == 0:
            return values
        return values.astype(smallest_integer_dtype(float(values.min()), float(values.max())))
    rescaled: np.ndarray = (volume.astype(np.float64) * slopes + intercepts).astype(np.float32)
    return rescaled


def read_dicom(
    path: str | Path, *, series_uid: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a DICOM series folder (or one DICOM file) into an array and a RAS+ affine.

    Args:
        path: a folder holding one series (or several, with ``series_uid``), or a single file.
        series_uid: the ``SeriesInstanceUID`` to read when the folder holds several.

    Returns:
        ``(array, affine, meta)``: ``array`` is ``(1, X, Y, Z)`` for a volume or ``(1, X, Y)`` for
        a single slice; ``affine`` is 4×4 RAS+ mm; ``meta`` holds the series UID, number,
        description, modality, slice count and ``single_slice``.

    Raises:
        MissingFileError: the path does not exist.
        DataError: no series, several series, mixed orientations, gaps or duplicate positions,
            undecodable pixel data; each message names the folder.

    Shape:
        array: ``(1, X, Y, Z)`` or ``(1, X, Y)`` with X = columns, Y = rows.
    """
    path = Path(path)
    if path.is_dir():
        series = select_series(path, series_uid=series_uid)
        folder = path
    elif path.is_file():
        series, folder = _single_file_series(path), path
    else:
        raise MissingFileError(f"expected a DICOM folder or file, got a missing path {str(path)!r}")
    slices = [_slice_geometry(f, _read_dataset(f)) for f in series.files]
    _check_same_plane(slices, folder)
    slices, step = _sort_along_normal(slices, folder)
    _check_collinear(slices, folder)
    affine = LPS_TO_RAS @ _lps_affine(slices)
    volume = _stack_pixels(slices)
    single = len(slices) == 1
    array = volume[None, :, :, 0] if single else volume[None]
    if single:
        logger.info("%s: single-slice DICOM series read as a 2D image", path)
    meta = {
        "format": "dicom",
        "series_uid": series.uid,
        "series_number": series.number,
        "series_description": series.description,
        "modality": series.modality,
        "num_slices": len(slices),
        "slice_step_mm": step,
        "single_slice": single,
        "files": [str(s.path) for s in slices],
    }
    return array, affine, meta


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # truncated or corrupt file: name it
        raise DataError(f"cannot read DICOM file {str(path)!r}: {exc}") from exc


def _single_file_series(path: Path) -> DicomSeries:
    header = _read_header(path)
    if header is None:
        raise DataError(f"expected a DICOM image file, got {str(path)!r} (not DICOM, or no image)")
    return _series_from_group(str(header.SeriesInstanceUID), [(path, header)])
