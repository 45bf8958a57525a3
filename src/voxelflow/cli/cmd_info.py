"""``voxelflow info PATH [PATH ...]``: what is in an image file or DICOM folder.

Prints, for each path: format, shape ``(C, *spatial)``, channels, spacing, orientation, dtype,
intensity range (min/max/mean, non-finite count), the affine, NIfTI qform/sform codes and, for
DICOM, the series. A folder with several DICOM series lists them all (pick one with
``--series-uid``). Exit code 1 when any path cannot be read.

Example:
    $ voxelflow info brain.nii.gz ct_folder/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voxelflow.errors import DataError, VoxelflowError

if TYPE_CHECKING:
    from voxelflow.io.image import Image, ImageKind

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="show shape, spacing, orientation, dtype, intensity range and affine of images",
        description="Describe image files (NIfTI, NRRD, MHA, MGH, PNG/TIFF, DICOM folders).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or DICOM folders")
    parser.add_argument("--kind", default="intensity", choices=("intensity", "label", "weight"))
    parser.add_argument("--reader", default=None, help="reader name, overriding the suffix")
    parser.add_argument("--series-uid", default=None, help="DICOM series to describe")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Describe every path; returns 1 when any could not be read."""
    failures = 0
    for path in args.paths:
        try:
            sys.stdout.write(
                describe(path, kind=args.kind, reader=args.reader, series_uid=args.series_uid)
            )
        except VoxelflowError as exc:
            failures += 1
            sys.stderr.write(f"voxelflow: error: {exc}\n")
    return 1 if failures else 0


def describe(
    path: str,
    *,
    kind: ImageKind = "intensity",
    reader: str | None = None,
    series_uid: str | None = None,
) -> str:
    """The text block ``voxelflow info`` prints for one path.

    Raises:
        DataError: ``path`` is a table (``.csv``/``.tsv``), not an image; or cannot be read.
    """
    if reader is None and Path(path).suffix.lower() in (".csv", ".tsv"):
        raise DataError(
            f"{path!r} is a table, not an image: voxelflow info describes image files (run it "
            "on the files the table lists); voxelflow config validate -c EXPERIMENT checks a "
            "dataset table, and --reader NAME reads a file whose suffix says nothing"
        )
    from voxelflow.io.dicom import list_series  # torch loads only when an image is read
    from voxelflow.io.readers import read_image

    lines = [f"{path}"]
    if Path(path).is_dir() and series_uid is None and (reader in (None, "dicom")):
        series = list_series(path)
        if len(series) > 1:
            lines += ["  series:"] + [f"    {s.summary()}" for s in series]
            lines.append("  several series: pass --series-uid UID to describe one")
            return "\n".join(lines) + "\n"
    image = read_image(path, kind=kind, reader=reader, series_uid=series_uid, non_finite="ignore")
    lines += _image_lines(image)
    return "\n".join(lines) + "\n"


def _image_lines(image: Image) -> list[str]:
    meta = image.meta
    axes = "(C, X, Y, Z)" if image.spatial_dims == 3 else "(C, X, Y)"
    lines = [
        f"  format: {meta.get('format', '?')} (reader {meta.get('reader', '?')})",
        f"  shape: {tuple(image.data.shape)} {axes}",
        f"  channels: {image.num_channels}",
        f"  spacing: {' x '.join(f'{s:.6g}' for s in image.spacing)} mm",
        f"  orientation: {image.orientation}",
        f"  dtype: {str(image.dtype).removeprefix('torch.')} (stored {meta.get('source_dtype', '?')})",
        f"  intensity: {_intensity_summary(image)}",
        "  affine (voxel → RAS+ mm):",
    ]
    lines += [f"    [{' '.join(f'{v:11.5f}' for v in row)}]" for row in image.affine]
    if "qform_code" in meta:
        lines.append(f"  qform_code: {meta['qform_code']}, sform_code: {meta['sform_code']}")
    if "qform_sform_mismatch" in meta:
        lines.append(f"  warning: qform and sform disagree ({meta['qform_sform_mismatch']})")
    if meta.get("format") == "dicom":
        lines.append(
            f"  series: {meta['series_uid']} (#{meta['series_number']} {meta['series_description']!r}, "
            f"{meta['modality']}, {meta['num_slices']} slices)"
        )
    return lines


def _intensity_summary(image: Image) -> str:
    values = image.numpy().astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return "no finite values"
    kept = values[finite]
    text = f"min {kept.min():.6g}, max {kept.max():.6g}, mean {kept.mean():.6g}"
    missing = int(values.size - kept.size)
    return text + (f", {missing} non-finite voxels" if missing else "")
