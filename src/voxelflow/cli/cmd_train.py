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
    parser.add_argument("--fold", default=None, metavar="K|all",
                        help="train fold K of the saved k-fold split (split.folds, default 5) into "
                        "RUN_DIR/fold_K, or every unfinished fold with 'all' (see docs/cross-validation.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.run import train_experiment

    experiment = load_experiment(args.config, args.overrides)
    # the same one-pass check as `voxelflow config validate`: every problem at once, before training
    from voxelflow.config.check import check_experiment, raise_if_problems

    raise_if_problems(check_experiment(experiment), source=str(args.config))
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.fold is not None:
        from voxelflow.cv.folds import train_folds

        root = run_dir or Path(experiment.system.run_dir)
        for fold, values in train_folds(experiment, root, args.fold, force=args.force).items():
            log.info("fold %d: %s", fold, _describe(values))
        return 0
    metrics = train_experiment(experiment, run_dir=run_dir, force=args.force)
    log.info("finished: %s", _describe(metrics))
    return 0


def _describe(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
