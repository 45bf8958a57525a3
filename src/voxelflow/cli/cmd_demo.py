"""``voxelflow demo [--out DIR] [--quick]``: the whole pipeline on real MRI in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train, infer and evaluate a tissue segmentation on generated MRI subjects",
        description="Builds subjects from the MNI152 template shipped by nilearn (phantoms without it), "
        "trains a U-Net, segments held-out subjects, evaluates them against an intensity baseline.",
    )
    parser.add_argument("--out", default="voxelflow-demo", help="folder for data, config and run (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a tiny version that finishes in well under a minute")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxelflow.demo.run import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0
