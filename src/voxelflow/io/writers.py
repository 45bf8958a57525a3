"""Write :class:`~voxelflow.io.image.Image` objects to disk, keeping their geometry and dtype.

``write_image(image, path)`` picks a writer by suffix from :data:`WRITERS`:

==============================================  ============  ===================================
suffixes                                        writer        notes
==============================================  ============  ===================================
.nii .nii.gz .hdr/.img (NIfTI pair) .mgh .mgz    ``nibabel``   qform/sform codes from
                                                              ``meta`` (default 1 = scanner)
.nrrd .nhdr .mha .mhd                           ``itk``       RAS+ → LPS+, compressed
.png .tif .tiff .jpg .jpeg .bmp                 ``raster2d``  2D only; spacing kept, no axes
==============================================  ============  ===================================

What is preserved:

* the affine (RAS+ mm) exactly as far as the format can hold it (2D ITK/raster formats cannot
  hold an oblique slice: a warning says so);
* the dtype: an explicit ``dtype=``, else the file's original dtype (``meta["source_dtype"]``) when
  the values still fit it and are of the same kind (integer/float), else the tensor's dtype.
  Labels (``kind="label"``) are always written as integers (smallest of uint8/int16/int32);
* channels: ``(C, X, Y, Z)`` with C > 1 becomes a 4D NIfTI or a vector NRRD/MHA.
  A 2D image written to a nibabel format becomes a one-slice 3D volume ``(X, Y, 1)``.

Writes are atomic: the file is written in a temporary folder next to the target, then moved
into place with ``os.replace``, so a crash never leaves a half-written image. An image is never
written over the file it was read from.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from voxelflow.errors import ConfigError, DataError
from voxelflow.io.checks import affine_difference, check_label_values, smallest_integer_dtype
from voxelflow.io.disk import writing
from voxelflow.io.image import Image
from voxelflow.registry import Registry

logger = logging.getLogger(__name__)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: (array (C, *spatial), affine 4×4 RAS+, meta, path) → None
Writer = Callable[[np.ndarray, np.ndarray, dict[str, Any], Path], None]
WRITERS: Registry[Writer] = Registry("writer")
#: lower-case suffix → writer name.
WRITE_SUFFIXES: dict[str, str] = {}
DEFAULT_XFORM_CODE = 1  # NIFTI_XFORM_SCANNER_ANAT


def register_writer(
    name: str, *, suffixes: Sequence[str] = (), description: str = ""
) -> Callable[[Writer], Writer]:
    """Decorator registering a writer ``(array, affine, meta, path) -> None`` for ``suffixes``."""

    def decorator(function: Writer) -> Writer:
        taken = {s: WRITE_SUFFIXES[s.lower()] for s in suffixes if s.lower() in WRITE_SUFFIXES}
        if taken:
            raise ConfigError(f"writer {name!r}: suffixes already claimed: {taken}")
        WRITERS.add(name, function, description=description)
        WRITE_SUFFIXES.update({s.lower(): name for s in suffixes})
        return function

    return decorator


def writer_name_for(path: Path) -> str:
    """The writer registered for ``path``'s suffix.

    Raises:
        DataError: unknown suffix, listing the supported ones.
    """
    name = path.name.lower()
    matches = [suffix for suffix in WRITE_SUFFIXES if name.endswith(suffix)]
    if not matches:
        raise DataError(
            f"cannot write {str(path)!r}: expected a suffix among {', '.join(sorted(WRITE_SUFFIXES))}"
        )
    return WRITE_SUFFIXES[max(matches, key=len)]


# -- nibabel -------------------------------------------------------------------------------------
def _spatial_last(array: np.ndarray, *, min_spatial: int) -> np.ndarray:
    """``(C, *spatial)`` → ``(*spatial[, 1], C)``, with C dropped when it is 1."""
    data = np.moveaxis(array, 0, -1)
    while data.ndim - 1 < min_spatial:
        data = data[..., None, :]
    return data[..., 0] if data.shape[-1] == 1 else data


@register_writer(
    "nibabel",
    suffixes=(".nii", ".nii.gz", ".hdr", ".img", ".mgh", ".mgz"),
    description="NIfTI-1 (single file or .hdr/.img pair) and MGH/MGZ via nibabel",
)
def write_nibabel(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], path: Path) -> None:
    """Write with nibabel; NIfTI keeps the qform/sform codes of ``meta``."""
    data = _spatial_last(array, min_spatial=3)
    name = path.name.lower()
    if name.endswith((".mgh", ".mgz")):
        data = data.astype(_mgh_dtype(data))
        nib.save(nib.MGHImage(data, affine), str(path))
        return
    if (
        data.dtype == np.int64
        and data.size
        and np.iinfo(np.int32).min <= data.min()
        and data.max() <= np.iinfo(np.int32).max
    ):
        data = data.astype(np.int32)  # int64 NIfTI is poorly supported by other tools
    image_class: type[nib.Nifti1Pair] = nib.Nifti1Pair if name.endswith((".hdr", ".img")) else nib.Nifti1Image
    image = image_class(data, affine, dtype=data.dtype)
    _set_xform_codes(image, affine, meta, path)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def _mgh_dtype(data: np.ndarray) -> np.dtype:
    if data.dtype in (np.uint8, np.int16, np.int32, np.float32):
        return data.dtype
    if np.issubdtype(data.dtype, np.integer) and data.size:
        return (
            smallest_integer_dtype(float(data.min()), float(data.max()))
            if data.max() < 2**31
            else np.dtype(np.float32)
        )
    return np.dtype(np.float32)


def _set_xform_codes(image: nib.Nifti1Pair, affine: np.ndarray, meta: dict[str, Any], path: Path) -> None:
    """Write the affine with the source's codes; a sheared affine goes to the sform only."""
    qform_code = int(meta.get("qform_code", DEFAULT_XFORM_CODE))
    sform_code = int(meta.get("sform_code", DEFAULT_XFORM_CODE))
    if qform_code == 0 and sform_code == 0:  # would drop the affine: record it as scanner space
        qform_code = sform_code = DEFAULT_XFORM_CODE
    image.set_qform(affine, code=qform_code)
    if (
        affine_difference(image.header.get_qform(), affine) is not None
    ):  # shear: qform cannot hold it
        if sform_code == 0:
            warnings.warn(
                f"{str(path)!r}: the affine has shear the qform cannot hold; writing it as the "
                f"sform (code {qform_code}) instead of dropping it",
                UserWarning,
                stacklevel=4,
            )
            sform_code = qform_code
        image.set_qform(affine, code=0)  # an approximate qform would disagree with the sform
    image.set_sform(affine, code=sform_code)
    source_qform, source_sform = meta.get("qform_affine"), meta.get("sform_affine")
    if (
        source_qform is not None
        and source_sform is not None
        and qform_code > 0
        and affine_difference(np.asarray(source_sform), affine) is None
    ):  # written in the source's own grid: keep its qform rather than a copy of the sform
        image.set_qform(np.asarray(source_qform, dtype=np.float64), code=qform_code)


# -- SimpleITK -----------------------------------------------------------------------------------
def _sitk_image(array: np.ndarray, affine: np.ndarray, path: Path) -> sitk.Image:
    """``(C, *spatial)`` + RAS+ affine → a SimpleITK image in LPS+ (vector when C > 1)."""
    channels, spatial_dims = array.shape[0], array.ndim - 1
    data = np.moveaxis(array, 0, -1)  # (x, y[, z], C)
    data = np.transpose(data, (*range(spatial_dims)[::-1], spatial_dims))  # ([z,] y, x, C)
    image = sitk.GetImageFromArray(data if channels > 1 else data[..., 0], isVector=channels > 1)
    lps = RAS_TO_LPS @ affine
    if spatial_dims == 2 and (np.abs(lps[2, :2]).max() > 1e-6 or abs(lps[2, 3]) > 1e-6):
        warnings.warn(
            f"{str(path)!r}: a 2D file cannot hold an oblique or offset slice plane; "
            "the out-of-plane part of the affine is dropped",
            UserWarning,
            stacklevel=4,
        )
    columns = lps[:spatial_dims, :spatial_dims]
    spacing = np.linalg.norm(lps[:3, :spatial_dims], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (columns / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:spatial_dims, 3]])
    return image


@register_writer(
    "itk",
    suffixes=(".nrrd", ".nhdr", ".mha", ".mhd"),
    description="NRRD and MetaImage via SimpleITK (RAS+ converted to LPS+), compressed",
)
def write_itk(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], path: Path) -> None:
    """Write NRRD/MetaImage; channels become vector components."""
    sitk.WriteImage(_sitk_image(array, affine, path), str(path), useCompression=True)


_RASTER_DTYPES = {
    ".png": ("uint8", "uint16"),
    ".jpg": ("uint8",),
    ".jpeg": ("uint8",),
    ".bmp": ("uint8",),
}


@register_writer(
    "raster2d",
    suffixes=(".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"),
    description="2D PNG/TIFF/JPEG/BMP via SimpleITK (spacing kept; orientation is not stored)",
)
def write_raster2d(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], path: Path) -> None:
    """Write a 2D image ``(C, X, Y)`` (or ``(C, X, Y, 1)``); C must be 1, 3 or 4."""
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise DataError(
            f"expected a 2D image (C, X, Y) with C in 1, 3, 4 for {str(path)!r}, got {array.shape}"
        )
    allowed = _RASTER_DTYPES.get(path.suffix.lower())
    if allowed and array.dtype.name not in allowed:
        array = _cast_checked(
            array, np.dtype(allowed[-1] if array.max(initial=0) > 255 else allowed[0]), path
        )
    image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1).transpose(1, 0, 2), isVector=True)
    if array.shape[0] == 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    image.SetSpacing([float(s) for s in np.linalg.norm(affine[:3, :2], axis=0)])
    sitk.WriteImage(image, str(path))


def _cast_checked(array: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """Cast to ``dtype``; integers must be whole and in range (else DataError naming the file)."""
    if not np.issubdtype(dtype, np.integer) or array.size == 0:
        return array.astype(dtype)
    rounded = np.rint(array) if np.issubdtype(array.dtype, np.floating) else array
    info = np.iinfo(dtype)
    low, high = float(rounded.min()), float(rounded.max())
    if (
        not np.isfinite([low, high]).all()
        or low < info.min
        or high > info.max
        or np.any(rounded != array)
    ):
        raise DataError(
            f"cannot write {str(path)!r} as {dtype.name}: expected whole numbers in "
            f"[{info.min}, {info.max}], got values in [{low:g}, {high:g}] (rescale, or choose another dtype/format)"
        )
    return rounded.astype(dtype)


# -- dtype policy and the public entry point -----------------------------------------------------
def output_array(
    image: Image, *, dtype: npt.DTypeLike | None = None, path: Path | None = None
) -> np.ndarray:
    """The image's data as the numpy array that will be written (dtype policy of this module)."""
    array = image.numpy()
    source = str(path or image.path or "<in-memory image>")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if dtype is not None:
        return _cast_checked(array, np.dtype(dtype), Path(source))
    if image.kind == "label":
        array = check_label_values(array, source=source)
    original = _known_dtype(image.meta.get("source_dtype"))
    if original is not None and _fits(array, original):
        return array.astype(original)
    if image.kind == "label" and array.size:
        return array.astype(smallest_integer_dtype(float(array.min()), float(array.max())))
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _known_dtype(name: object) -> np.dtype | None:
    """``np.dtype(name)``, or ``None`` when ``name`` is missing or not a dtype."""
    try:
        return None if name is None else np.dtype(str(name))
    except TypeError:
        return None


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    """True when ``array`` can be cast to ``dtype`` keeping its kind (and integer values)."""
    if array.dtype == dtype:
        return True
    if np.issubdtype(array.dtype, np.integer) and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return array.size == 0 or (info.min <= array.min() and array.max() <= info.max)
    # float → float always fits: float64 results of a float32 source go back to float32
    return bool(np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.floating))


def write_image(
    image: Image, path: str | os.PathLike[str], *, dtype: npt.DTypeLike | None = None
) -> Path:
    """Write ``image`` to ``path`` (format from the suffix), atomically.

    Args:
        image: the image; its affine, kind and ``meta`` (source dtype, qform/sform codes) are used.
        path: the target file; parent folders are created.
        dtype: force the stored dtype (integers must fit and be whole); default: see module doc.

    Returns:
        The written path.

    Raises:
        DataError: unknown suffix, target is the image's own source file, non-integer labels,
            values that do not fit ``dtype`` or the format.
        DiskWriteError: the disk is full, read-only or not writable (the message names
            ``path``; an existing file there is left as it was).

    Example:
        >>> write_image(image, "out/seg.nii.gz")  # doctest: +SKIP
        PosixPath('out/seg.nii.gz')
    """
    path = Path(path).expanduser()
    writer = WRITERS.get(writer_name_for(path))
    if (
        image.path is not None
        and image.path.exists()
        and path.exists()
        and path.resolve() == image.path.resolve()
    ):
        raise DataError(
            f"refusing to overwrite {str(path)!r}, the file this image was read from; write elsewhere"
        )
    array = output_array(image, dtype=dtype, path=path)
    with writing(path, what="image", keeps="no existing file was replaced"):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            lambda target: writer(array, image.affine, dict(image.meta), target), path
        )
    logger.debug("wrote %s %s to %s", array.dtype, array.shape, path)
    return path


def _write_atomically(write: Callable[[Path], Any], path: Path) -> None:
    """Write into a temporary folder beside ``path`` and move every produced file into place.

    A folder (not a temporary file name) keeps header/data pairs (.hdr/.img, .mhd/.raw) consistent:
    they are written under their final names.
    """
    staging = Path(tempfile.mkdtemp(prefix=".voxelflow-write-", dir=path.parent))
    try:
        write(staging / path.name)
        produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)  # main file last
        for item in produced:
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
