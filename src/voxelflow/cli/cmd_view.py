"""``voxelflow view IMAGE [--label L] [--pred P] [-o out.png]``: look at an image and its labels.

Writes a PNG of the three orthogonal slices (sagittal, coronal, axial) through the foreground
centre, turned to RAS (patient's right on the right, superior up), with the label map and the
prediction as coloured overlays (one row each) and a legend naming the label values.

Example:
    $ voxelflow view case1_t1.nrrd --label case1_seg.nrrd --label-names 1=tumour -o case1.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxelflow.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``view`` sub-command."""
    parser = subparsers.add_parser(
        "view",
        help="write a PNG of orthogonal slices with label / prediction overlays",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("image", help="image file or DICOM folder")
    parser.add_argument("--label", default=None, help="reference label map (same grid)")
    parser.add_argument("--pred", default=None, help="predicted label map (same grid)")
    parser.add_argument(
        "-o", "--output", default=None, help="PNG to write (default: <image name>_view.png here)"
    )
    parser.add_argument(
        "--label-names",
        default=None,
        metavar="NAMES",
        help='legend names: "1=grey_matter,2=white_matter", or a YAML/JSON file {value: name}',
    )
    parser.add_argument(
        "--at",
        default=None,
        metavar="X,Y,Z",
        help="voxel index the slices pass through (default: the foreground centre)",
    )
    parser.add_argument("--channel", type=int, default=0, help="channel shown (default: 0)")
    parser.add_argument("--reader", default=None, help="reader name, overriding the suffix")
    parser.set_defaults(func=run)


def default_output(image: str) -> Path:
    """``<image stem>_view.png`` in the current folder (``.nii.gz`` counts as one suffix)."""
    from voxelflow.io.readers import split_suffix

    path = Path(image)
    stem = path.name if path.is_dir() else split_suffix(path)[0]
    return Path.cwd() / f"{stem}_view.png"


def parse_index(text: str | None) -> tuple[int, ...] | None:
    """``"10,20,5"`` → ``(10, 20, 5)``.

    Raises:
        ConfigError: not comma-separated integers.
    """
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--at: expected voxel indices X,Y,Z, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Read the images, draw the montage, write the PNG; returns 0."""
    from voxelflow.io.plot import parse_label_names, plot_views, save_figure
    from voxelflow.io.readers import read_image

    names = parse_label_names(args.label_names)
    centre = parse_index(args.at)
    image = read_image(args.image, reader=args.reader, non_finite="ignore")
    label = read_image(args.label, kind="label") if args.label else None
    pred = read_image(args.pred, kind="label") if args.pred else None
    figure = plot_views(
        image, label=label, pred=pred, label_names=names, centre=centre, channel=args.channel
    )
    out = save_figure(figure, args.output or default_output(args.image))
    sys.stdout.write(f"{out}\n")
    return 0
