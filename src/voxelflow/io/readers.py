"""Read medical images into :class:`~voxelflow.io.image.Image`: one call, any common format.

``read_image(path)`` picks a reader by suffix (or ``reader=`` by name) from :data:`READERS`:

========================================  ============  ====================================
suffixes                                  reader        notes
========================================  ============  ====================================
.nii .nii.gz .hdr .img(.gz) .mgh .mgz     ``nibabel``   affine as nibabel gives it (sform
.mnc                                                    when its code > 0, else qform)
.nrrd .nhdr .mha .mhd                     ``itk``       SimpleITK; LPS+ → RAS+ converted
.png .tif .tiff .jpg .jpeg .bmp           ``raster2d``  2D, no patient geometry (see below)
a folder, .dcm .dicom .ima                ``dicom``     DICOM series (:mod:`voxelflow.io.dicom`)
========================================  ============  ====================================

Data come back as ``(C, *spatial)``: a 3D volume is ``(1, X, Y, Z)``; extra axes of a 4D/5D file
(time, vector components) become channels; nibabel formats are always 3D (a one-slice NIfTI is
``(C, X, Y, 1)``). 2D raster images are ``(C, X, Y)`` with X = width, RGB as 3 channels and an
affine ``diag(sx, sy, 1, 1)`` (their pixel spacing, no flips: they carry no patient axes).

The stored dtype is kept (widened where torch cannot hold it, e.g. uint16 → int32; the original is
``meta["source_dtype"]`` and the writers restore it). Labels (``kind="label"``) must hold whole
numbers and come back as integers.

Register your own reader::

    @register_reader("mine", suffixes=(".mine",), description="my lab's format")
    def read_mine(path: Path, *, series_uid: str | None = None) -> RawImage: ...
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from nibabel.spatialimages import SpatialImage

from voxelflow.errors import ConfigError, DataError, MissingFileError, VoxelflowError
from voxelflow.io.checks import (
    NON_FINITE_POLICIES,
    affine_difference,
    check_label_values,
    check_non_finite,
    torch_compatible,
)
from voxelflow.io.dicom import read_dicom
from voxelflow.io.image import Image, ImageKind
from voxelflow.registry import Registry

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class RawImage:
    """What a reader returns: data ``(C, *spatial)``, a 4×4 RAS+ affine and metadata."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


Reader = Callable[..., RawImage]
READERS: Registry[Reader] = Registry("reader")
#: lower-case suffix → reader name (longest suffix wins).
SUFFIXES: dict[str, str] = {}


def register_reader(
    name: str, *, suffixes: Sequence[str] = (), description: str = ""
) -> Callable[[Reader], Reader]:
    """Decorator registering a reader ``(path, *, series_uid=None) -> RawImage`` for ``suffixes``.

    Raises:
        RegistryError: the name is taken. ConfigError: a suffix is claimed by another reader.
    """

    def decorator(function: Reader) -> Reader:
        taken = {s: SUFFIXES[s.lower()] for s in suffixes if s.lower() in SUFFIXES}
        if taken:
            raise ConfigError(f"reader {name!r}: suffixes already claimed: {taken}")
        READERS.add(name, function, description=description)
        SUFFIXES.update({s.lower(): name for s in suffixes})
        return function

    return decorator


def reader_name_for(path: Path) -> str:
    """The reader registered for ``path``'s suffix (``"dicom"`` for a folder).

    Raises:
        DataError: unknown suffix, listing the supported ones.
    """
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    matches = [suffix for suffix in SUFFIXES if name.endswith(suffix)]
    if not matches:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its suffix; expected one of "
            f"{', '.join(sorted(SUFFIXES))} or a DICOM folder; or name the reader (one of "
            f"{', '.join(READERS.names())}): --reader NAME on the command line, reader=NAME in Python"
        )
    return SUFFIXES[max(matches, key=len)]


def split_suffix(path: Path) -> tuple[str, str]:
    """``("brain", ".nii.gz")`` for ``brain.nii.gz``: the known suffix (longest match) and the stem."""
    name = path.name
    matches = [s for s in SUFFIXES if name.lower().endswith(s)]
    suffix = max(matches, key=len) if matches else path.suffix
    return name[: len(name) - len(suffix)], name[len(name) - len(suffix) :]


def _channels_first(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``(*spatial, *extra)`` → ``(C, *spatial)`` with all extra axes flattened into C."""
    spatial = array.shape[:spatial_dims]
    moved = array.reshape(*spatial, -1)
    return np.moveaxis(moved, -1, 0)


# -- nibabel -------------------------------------------------------------------------------------
@register_reader(
    "nibabel",
    suffixes=(".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".hdr.gz", ".mgh", ".mgz", ".mnc"),
    description="NIfTI-1/2, Analyze, MGH/MGZ, MINC via nibabel (affine as nibabel defines it)",
)
def read_nibabel(path: Path, *, series_uid: str | None = None) -> RawImage:
    """Read with nibabel; the array is made 3D-or-more and its extra axes become channels."""
    # every format of the suffixes above loads as a SpatialImage (data object, affine, header)
    image = cast(SpatialImage, nib.load(str(path)))
    array = np.asanyarray(image.dataobj)
    while array.ndim < 3:
        array = array[..., None]
    meta: dict[str, Any] = {
        "format": type(image).__name__,
        "source_dtype": image.get_data_dtype().name,
    }
    header = image.header
    if isinstance(header, nib.Nifti1Header):  # also NIfTI-2
        _nifti_codes(header, meta, path)
    return RawImage(_channels_first(array, 3), np.asarray(image.affine, dtype=np.float64), meta)


def _nifti_codes(header: nib.Nifti1Header, meta: dict[str, Any], path: Path) -> None:
    """Record qform/sform codes; warn when both are set and disagree."""
    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    meta["qform_code"], meta["sform_code"] = int(qform_code), int(sform_code)
    if qform_code > 0 and sform_code > 0:
        difference = affine_difference(qform, sform)
        if difference is not None:
            meta["qform_sform_mismatch"] = difference
            # kept so that outputs in this image's grid carry its own qform, not a copy of the sform
            meta["qform_affine"] = np.asarray(qform, dtype=np.float64).tolist()
            meta["sform_affine"] = np.asarray(sform, dtype=np.float64).tolist()
            warnings.warn(
                f"{str(path)!r}: qform and sform disagree ({difference}); using the sform "
                "(as nibabel does). Check the file's orientation in a viewer.",
                UserWarning,
                stacklevel=4,
            )


# -- SimpleITK -----------------------------------------------------------------------------------
def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The 4×4 RAS+ affine of a 2D/3D/4D SimpleITK image (its first three axes for 4D).

    ITK stores ``direction @ diag(spacing)`` and ``origin`` in LPS+; the first two rows are negated.
    A 2D image gets a third axis of 1 mm along the slice normal.
    """
    dims = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dims, dims)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    used = min(dims, 3)
    lps = np.eye(4)
    lps[:used, :used] = direction[:used, :used] @ np.diag(spacing[:used])
    lps[:used, 3] = origin[:used]
    return LPS_TO_RAS @ lps


def _sitk_read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:  # ITK's message is long; keep its first line
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise DataError(f"cannot read {str(path)!r} with SimpleITK: {first_line}") from exc


def _sitk_array(image: sitk.Image) -> np.ndarray:
    """``(C, *spatial)`` in (x, y[, z]) index order; a 4th ITK axis and vector components → C."""
    array = sitk.GetArrayFromImage(image)  # (t?, z?, y, x[, components])
    dims = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() == 1:
        array = array[..., None]
    spatial_dims = min(dims, 3)
    array = np.moveaxis(array, range(dims), range(dims)[::-1])  # → (x, y, z?, t?, components)
    return _channels_first(array, spatial_dims)


@register_reader(
    "itk",
    suffixes=(".nrrd", ".nhdr", ".mha", ".mhd"),
    description="NRRD and MetaImage via SimpleITK (LPS+ converted to RAS+)",
)
def read_itk(path: Path, *, series_uid: str | None = None) -> RawImage:
    """Read NRRD/MetaImage with SimpleITK and convert the geometry to RAS+."""
    image = _sitk_read(path)
    array = _sitk_array(image)
    meta = {"format": path.suffix.lstrip(".").lower(), "source_dtype": array.dtype.name}
    return RawImage(array, sitk_affine(image), meta)


@register_reader(
    "raster2d",
    suffixes=(".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"),
    description="2D PNG/TIFF/JPEG/BMP via SimpleITK (C, X, Y); affine diag(spacing) with no flips",
)
def read_raster2d(path: Path, *, series_uid: str | None = None) -> RawImage:
    """Read a 2D picture; colour components become channels."""
    image = _sitk_read(path)
    if image.GetDimension() != 2:
        raise DataError(
            f"expected a 2D image in {str(path)!r}, got {image.GetDimension()} dimensions"
        )
    spacing = image.GetSpacing()
    affine = np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])
    array = _sitk_array(image)
    return RawImage(
        array, affine, {"format": path.suffix.lstrip(".").lower(), "source_dtype": array.dtype.name}
    )


@register_reader(
    "dicom",
    suffixes=(".dcm", ".dicom", ".ima"),
    description="DICOM series folder (or one slice file) via pydicom, sorted along the slice normal",
)
def read_dicom_image(path: Path, *, series_uid: str | None = None) -> RawImage:
    """Read a DICOM folder or file (see :func:`voxelflow.io.dicom.read_dicom`)."""
    array, affine, meta = read_dicom(path, series_uid=series_uid)
    meta["source_dtype"] = array.dtype.name
    return RawImage(array, affine, meta)


# -- public entry point --------------------------------------------------------------------------
def read_image(
    path: str | Path,
    *,
    kind: ImageKind = "intensity",
    reader: str | None = None,
    series_uid: str | None = None,
    non_finite: str = "warn",
) -> Image:
    """Read a medical image file (or DICOM folder) into an :class:`Image`.

    Args:
        path: a file (NIfTI, Analyze, MGH, NRRD, MetaImage, PNG/TIFF/JPEG, DICOM) or DICOM folder.
        kind: ``"intensity"``, ``"label"`` (values must be whole numbers; returned as integers) or
            ``"weight"``.
        reader: a registered reader name (or ``pkg.mod:function``) overriding the suffix choice.
        series_uid: for a DICOM folder holding several series, the one to read.
        non_finite: NaN/Inf policy: ``"warn"`` (default), ``"error"``, ``"ignore"`` or ``"zero"``.

    Returns:
        The image, with ``meta["format"]``, ``meta["source_dtype"]`` and format-specific keys
        (``qform_code``/``sform_code`` for NIfTI, ``series_uid`` ... for DICOM).

    Raises:
        MissingFileError: the path does not exist (also a ``FileNotFoundError``).
        DataError: unknown suffix, unreadable/truncated file, non-integer labels, non-finite
            voxels with ``non_finite="error"``, bad DICOM series; each message names the file.
        RegistryError: unknown ``reader`` name.

    Shape:
        data: ``(C, X, Y, Z)`` for volumes, ``(C, X, Y)`` for 2D images.

    Example:
        >>> image = read_image("brain.nii.gz")  # doctest: +SKIP
        >>> image.data.shape, image.spacing, image.orientation  # doctest: +SKIP
        (torch.Size([1, 182, 218, 182]), (1.0, 1.0, 1.0), 'LAS')
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(
            f"expected an image file or DICOM folder, got a missing path {str(path)!r}"
        )
    if kind not in ("intensity", "label", "weight"):
        raise ConfigError(f"kind: expected 'intensity', 'label' or 'weight', got {kind!r}")
    if non_finite not in NON_FINITE_POLICIES:
        raise ConfigError(f"non_finite: expected one of {NON_FINITE_POLICIES}, got {non_finite!r}")
    name = reader or reader_name_for(path)
    if series_uid is not None and name != "dicom":
        logger.warning("%s: series_uid=%r is ignored by the %r reader", path, series_uid, name)
    function = READERS.get(name)
    raw = _call_reader(function, name, path, series_uid)
    array = _validated_array(raw, path, kind=kind, non_finite=non_finite)
    meta = {"reader": name, **raw.meta}
    meta.setdefault("source_dtype", np.asarray(raw.array).dtype.name)
    return Image(torch.from_numpy(array), raw.affine, kind=kind, path=path, meta=meta)


def _call_reader(function: Reader, name: str, path: Path, series_uid: str | None) -> RawImage:
    """Run a reader; any failure that is not already a voxelflow error becomes a DataError."""
    try:
        raw = function(path, series_uid=series_uid)
    except (VoxelflowError, MemoryError):
        raise
    except ImportError as exc:  # e.g. MINC2 needs h5py
        raise DataError(
            f"reading {str(path)!r} with the {name!r} reader needs the missing package "
            f"{exc.name or exc!s}; install it with pip"
        ) from exc
    except Exception as exc:  # nibabel/numpy/gzip/ITK errors: re-raise naming the file
        raise DataError(
            f"cannot read {str(path)!r} with the {name!r} reader ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); "
            "the file may be truncated, corrupt, or not in the format its suffix says"
        ) from exc
    if not isinstance(raw, RawImage):
        raise DataError(
            f"reader {name!r} must return a RawImage, got {type(raw).__name__} for {str(path)!r}"
        )
    return raw


def _validated_array(raw: RawImage, path: Path, *, kind: str, non_finite: str) -> np.ndarray:
    """Check shape, affine, non-finite values and labels; return a torch-compatible array."""
    array = np.asarray(raw.array)
    if array.ndim not in (3, 4):
        raise DataError(
            f"expected (C, X, Y) or (C, X, Y, Z) data from {str(path)!r}, got shape {array.shape}"
        )
    affine = np.asarray(raw.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"expected a finite 4×4 affine in {str(path)!r}, got {affine.tolist()}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"expected an invertible affine in {str(path)!r}, got {affine.tolist()}")
    source = str(path)
    if kind == "label":
        array = check_label_values(array, source=source)
    else:
        array = check_non_finite(array, policy=non_finite, source=source)
    return torch_compatible(array)
