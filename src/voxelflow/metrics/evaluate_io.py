"""File side of the evaluate action: subject ids, folder listing, reading, nearest resampling."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias, cast

import numpy as np
from scipy import ndimage

from voxelflow.errors import DataError, VoxelflowError
from voxelflow.io.image import Image, ImageKind, check_same_grid
from voxelflow.metrics.descriptive import label_descriptors

IMAGE_SUFFIXES = (
    ".png",
    ".tif",
    ".tiff",
    ".nii.gz",
    ".nii",
    ".mgz",
    ".mgh",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".img",
    ".hdr",
)

#: one row of a per-case or summary table: subject, label (an int) and metric values
MetricRow: TypeAlias = dict[str, float | str]


def subject_id(path: Path) -> str | None:
    """``case01`` for ``case01.nii.gz``; ``None`` when the suffix is not an image suffix."""
    lower = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def list_images(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Subject id → image file of a folder (non-image files are ignored).

    Raises:
        DataError: the folder does not exist, or two files share a subject id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"expected a folder of images, got {str(root)!r} (not a folder)")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        name = subject_id(path)
        if name is None or not path.is_file():
            continue
        if name in found:
            raise DataError(
                f"two files for subject {name!r} in {str(root)!r}: {found[name].name}, {path.name}"
            )
        found[name] = path
    return found


def read_label_image(path: Path, *, kind: ImageKind = "label") -> Image:
    """Read a label (or intensity) image with voxelflow's readers, nibabel as a fallback."""
    try:
        from voxelflow.io.readers import read_image
    except ImportError:  # readers not available: NIfTI through nibabel
        import nibabel as nib
        from nibabel.spatialimages import SpatialImage

        try:
            loaded = cast(SpatialImage, nib.load(str(path)))  # a NIfTI file: a SpatialImage
            data = np.asanyarray(loaded.dataobj)
        except Exception as exc:  # any nibabel failure is an unreadable file
            raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
        # nibabel types affine as optional; a NIfTI image always has one
        return Image(np.ascontiguousarray(data)[None], loaded.affine, kind=kind, path=path)  # type: ignore[arg-type]
    try:
        return read_image(path, kind=kind)
    except VoxelflowError:
        raise
    except Exception as exc:  # a reader's low-level failure still names the file
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc


def resample_nearest(image: Image, target: Image) -> Image:
    """``image`` resampled onto ``target``'s grid with nearest-neighbour interpolation.

    Voxels of the target that fall outside ``image`` become 0 (background).
    """
    voxel_to_voxel = np.linalg.inv(image.affine) @ target.affine
    dims = image.spatial_dims
    matrix, offset = voxel_to_voxel[:dims, :dims], voxel_to_voxel[:dims, 3]
    source = image.numpy()[0]
    moved = ndimage.affine_transform(
        source,
        matrix,
        offset=offset,
        output_shape=target.spatial_shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return image.with_data(moved[None].copy(), affine=target.affine.copy())


def load_case_files(
    ref_files: Mapping[str, Path],
    pred_files: Mapping[str, Path],
    images: Mapping[str, Path],
    subject: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Reference, prediction, optional image arrays and spacing of one subject, for the report."""
    ref_image = read_label_image(ref_files[subject])
    pred = read_label_image(pred_files[subject]).numpy()[0]
    image = None
    if subject in images:
        image = read_label_image(images[subject], kind="intensity").numpy()[0]
    return ref_image.numpy()[0], pred, image, ref_image.spacing


def describe_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: list[int],
    ref_image: Image,
    image: Image | None,
    subject: str,
) -> dict[int, dict[str, float]]:
    """Descriptive columns of each label of one subject (intensities from channel 0 of ``image``).

    Raises:
        GeometryError: ``image`` is not on the reference grid (naming both files).
    """
    pixels = None
    if image is not None:
        check_same_grid(image, ref_image, what=f"image and reference of subject {subject!r}")
        pixels = image.numpy()[0]
    return label_descriptors(
        pred, ref, labels, spacing=ref_image.spacing, affine=ref_image.affine, image=pixels
    )


def write_csv(path: Path, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> None:
    """Write rows (dicts) with the given column order; floats with full precision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def label_array(image: Image) -> np.ndarray:
    """The single-channel integer array of a label image."""
    if image.num_channels != 1:
        raise DataError(
            f"expected a single-channel label map, got {image.num_channels} channels in {image.path}"
        )
    data: np.ndarray = image.numpy()[0]
    if not np.issubdtype(data.dtype, np.integer) and np.any(np.mod(data, 1) != 0):
        raise DataError(
            f"expected integer label values in {str(image.path)!r}, got non-integer values"
        )
    return data


def match_subjects(
    pred_files: Mapping[str, Path],
    ref_files: Mapping[str, Path],
    problems: list[tuple[str, str, str]],
) -> list[str]:
    """Subjects present in both folders; the others are appended to ``problems``."""
    for name in sorted(set(ref_files) - set(pred_files)):
        message = f"no prediction for reference {ref_files[name]}"
        problems.append((name, "missing prediction", message))
    for name in sorted(set(pred_files) - set(ref_files)):
        message = f"no reference for prediction {pred_files[name]}"
        problems.append((name, "missing reference", message))
    return sorted(set(pred_files) & set(ref_files))
