"""``voxelflow cv``: out-of-fold evaluation of a k-fold experiment, or a comparison of runs.

Examples:
    voxelflow cv -c exp.yaml                          # after voxelflow train -c exp.yaml --fold all
    voxelflow cv --compare runs/2d runs/3d_fullres    # rank runs and test every pair
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voxelflow.cli.common import add_config_args
from voxelflow.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``cv`` sub-command."""
    parser = subparsers.add_parser(
        "cv",
        help="out-of-fold evaluation of the fold runs, or --compare runs (see docs/cross-validation.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(parser, required=False)
    parser.add_argument(
        "--compare", nargs="+", metavar="RUN_DIR", default=None,
        help="run folders (each after `voxelflow cv`) to rank by their CV metric with paired tests",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=None, help="--compare: output folder (default RUN_A/cv/compare)"
    )
    parser.add_argument(
        "--no-ensembles", action="store_true",
        help="--compare: do not evaluate the ensemble of every two runs",
    )  # fmt: skip
    parser.add_argument(
        "--no-report", action="store_true", help="write the CSVs only (no plots/HTML)"
    )
    parser.add_argument(
        "--no-postprocessing", action="store_true",
        help="segmentation: do not decide postprocessing from the out-of-fold predictions",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cv`` (exit 1 when a fold is unfinished, naming it and the command to finish it)."""
    if args.compare:
        from voxelflow.cv.compare import compare_runs, format_comparison

        comparison = compare_runs(
            args.compare, out=Path(args.out) if args.out else None, ensembles=not args.no_ensembles
        )
        print(format_comparison(comparison))
        return 0
    if not args.config:
        raise ConfigError(
            "expected -c CONFIG (the experiment of the folds) or --compare RUN_DIR ..."
        )
    from voxelflow.config.load import load_experiment
    from voxelflow.cv.oof import run_cv

    experiment = load_experiment(args.config, args.overrides)
    root = Path(args.run_dir or experiment.system.run_dir)
    result = run_cv(
        experiment, root, config=str(args.config), postprocessing=not args.no_postprocessing,
        report=not args.no_report,
    )  # fmt: skip
    from voxelflow.engine.run import application_class

    direction = "higher" if result.metric.higher_is_better else "lower"
    scored = "folds" if application_class(experiment).cv_per_fold else "subjects"
    print(
        f"out-of-fold {result.metric.name} ({direction} is better): {result.value:.4f} over "
        f"{len(result.per_subject)} {scored}; results in {result.out_dir}"
    )
    return 0
