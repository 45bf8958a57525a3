"""``voxelflow demo [--app APP] [--out DIR] [--quick]``: a whole application on real MRI in minutes."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

#: application → module whose ``run_demo(out, *, quick)`` runs its demo.
DEMOS = {
    "segmentation": "voxelflow.demo.run",
    "regression": "voxelflow.demo.regression",
    "super_resolution": "voxelflow.demo.super_resolution",
    "classification": "voxelflow.demo.classification",
    "autoencoder": "voxelflow.demo.autoencoder",
    "gan": "voxelflow.demo.gan",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train, infer and evaluate an application on subjects generated from real MRI",
        description="Builds subjects from the MNI152 template shipped by nilearn (phantoms without it), "
        "trains, infers on held-out subjects and evaluates against a stated baseline. "
        "Default: tissue segmentation with a U-Net.",
    )
    parser.add_argument("--app", choices=sorted(DEMOS), default="segmentation",
                        help="which application's demo (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="folder for data, config and run (default: voxelflow-demo, or voxelflow-demo-APP)")
    parser.add_argument("--quick", action="store_true", help="a tiny version that finishes in well under a minute")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(DEMOS[args.app])
    default = "voxelflow-demo" if args.app == "segmentation" else f"voxelflow-demo-{args.app}"
    module.run_demo(Path(args.out or default), quick=args.quick)
    return 0
