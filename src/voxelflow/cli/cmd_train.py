"""``voxelflow train -c CONFIG``: train (or resume) an experiment into its run folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voxelflow.cli.common import add_config_args

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (resumes when the run folder has checkpoints)",
        description="Train from a YAML (or NiftyNet .ini) config; resumes a run folder that has checkpoints.",
    )
    add_config_args(parser)
    parser.add_argument("--force", action="store_true",
                        help="start afresh in a run folder holding a different config (old files move to superseded/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.run import train_experiment

    experiment = load_experiment(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else None
    metrics = train_experiment(experiment, run_dir=run_dir, force=args.force)
    log.info("finished: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return 0
