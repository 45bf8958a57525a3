"""``voxelflow export RUN_DIR|NAME --format onnx|torch-export --out FILE``.

Exports the network of a run folder (best checkpoint) or an installed zoo entry, with dynamic
batch and spatial sizes where the network allows, and writes ``<out>.preprocessing.json`` next
to it (the preprocessing the exported graph expects, with the fitted state and head).

Example:
    $ voxelflow export runs/brain --format onnx --out brain.onnx --head softmax
"""

from __future__ import annotations

import argparse
import sys

from voxelflow.zoo.export import FORMATS, HEADS, export_source, preprocessing_json_path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained network to ONNX or a torch.export program",
        description="Export the network of a run folder or zoo entry, with its preprocessing JSON.",
    )
    parser.add_argument(
        "source", metavar="RUN_DIR|NAME", help="run folder, zoo entry name or folder"
    )
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    parser.add_argument("--head", default="logits", choices=HEADS, help="append softmax or argmax")
    parser.add_argument("--static", action="store_true", help="fixed batch and spatial sizes")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the example input")
    parser.add_argument(
        "--window", type=int, nargs="+", default=None, help="spatial size of the example input"
    )
    parser.add_argument("--trust-code", action="store_true", help="import the entry's plugin code")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export and report the written files."""
    out = export_source(
        args.source,
        format=args.format,
        out=args.out,
        head=args.head,
        dynamic=not args.static,
        batch_size=args.batch_size,
        window=args.window,
        trust_code=args.trust_code,
    )
    sys.stdout.write(f"exported {out} and {preprocessing_json_path(out)}\n")
    return 0
