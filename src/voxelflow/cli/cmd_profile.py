"""``voxelflow profile -c CONFIG``: time the data path and the training step, name the bottleneck.

Builds the run's input pipeline as ``voxelflow train`` does (cache, sampler, augmentation,
patch queue, DataLoader workers), times windows/s out of the DataLoader and ms per training
iteration on a pre-made batch, and prints which one limits training with advice. Writes nothing
but the preprocessing cache: a temporary run folder is used unless ``--run-dir`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxelflow.cli.common import add_config_args
from voxelflow.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="time the data pipeline and the training step; say which one is the bottleneck",
        description=(
            "Time windows/s of the training data path and ms/iteration of the training step "
            "separately, name the bottleneck and give advice. Uses a temporary run folder "
            "unless --run-dir is given (an existing run's split, fitted state and cache are reused)."
        ),
    )
    add_config_args(parser)
    parser.add_argument(
        "--iterations", type=int, default=20, help="batches and training steps timed (default 20)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed batches and steps first (default 3)"
    )
    parser.add_argument(
        "--no-augmentation-split",
        action="store_true",
        help="skip the second data-path timing without augmentation",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.profile import profile_experiment

    if args.iterations < 1 or args.warmup < 0:
        raise ConfigError(
            f"--iterations/--warmup: expected >= 1 and >= 0, got {args.iterations} and {args.warmup}"
        )
    experiment = load_experiment(args.config, args.overrides)
    report = profile_experiment(
        experiment,
        iterations=args.iterations,
        warmup=args.warmup,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        without_augmentation=not args.no_augmentation_split,
    )
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0
