"""``voxelflow infer -c CONFIG [--input FILE|FOLDER|TABLE] [--out DIR]``: segment images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from voxelflow.cli.common import add_config_args
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, FolderInput
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer", help="run a trained model on images",
        description="Infer with a run's checkpoint; outputs are written in each input's original geometry.",
    )
    add_config_args(parser, required=False)
    parser.add_argument("--model", help="an installed zoo entry (name or folder) instead of -c CONFIG")
    parser.add_argument("--trust-code", action="store_true", help="allow the zoo entry's plugin code to be imported")
    parser.add_argument("--input", help="an image file, a folder of images or a CSV table "
                        "(default: the test split, else the validation split)")
    parser.add_argument("--glob", default=None, help="with a folder --input: files to take (default: the "
                        "dataset's folder pattern when it has one, else every file)")
    parser.add_argument("--contains", action="append", default=None, metavar="TEXT",
                        help="with a folder --input: a string every file name must hold (repeatable)")
    parser.add_argument("--not-contains", action="append", default=None, metavar="TEXT",
                        help="with a folder --input: a string no file name may hold, e.g. _seg (repeatable)")
    parser.add_argument("--subject-regex", default=None,
                        help="with a folder --input: regex whose first group is the subject id")
    parser.add_argument("--out", help="output folder (default: <run_dir>/predictions)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default=None)
    parser.add_argument("--accumulate", choices=["float32", "float16"], default=None,
                        help="sliding-window blending dtype (sets inference.accumulate)")
    parser.add_argument("--folds", default=None, metavar="all|K,K,...",
                        help="ensemble the fold models of RUN_DIR/fold_K (after `voxelflow train --fold`): "
                        "probabilities averaged before the argmax (default input: the test split; "
                        "default output: RUN_DIR/predictions_ensemble)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.inference import infer_rows

    if args.accumulate:  # a shorthand for --set inference.accumulate=...
        args.overrides = [*(args.overrides or []), f"inference.accumulate={args.accumulate}"]
    if args.model:
        return _run_model(args)
    if not args.config:
        raise ConfigError("expected -c CONFIG (a trained run's config) or --model NAME")
    experiment = load_experiment(args.config, args.overrides)
    _check_components(experiment, source=str(args.config))
    run_dir = Path(args.run_dir or experiment.system.run_dir)
    if args.folds is not None:
        return _run_folds(args, experiment, run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--run-dir: expected a trained run folder with config.yaml, got {str(run_dir)!r}")
    rows = _input_rows(args.input, experiment, run_dir, args)
    out = Path(args.out) if args.out else run_dir / "predictions"
    which = args.checkpoint or experiment.inference.checkpoint
    table = infer_rows(experiment, rows, run_dir=run_dir, out_dir=out, which=which)
    print(f"predictions: {table}")
    return 0


def _check_components(experiment: ExperimentConfig, *, source: str) -> None:
    """Every problem of the config's components at once, before any file is read (the one-pass
    check of ``voxelflow config validate``, without the training data and roles)."""
    from voxelflow.config.check import check_components, raise_if_problems

    raise_if_problems(check_components(experiment, training=False), source=source)


def _input_rows(source: str | None, experiment: ExperimentConfig, run_dir: Path,
                args: argparse.Namespace | None = None) -> list[SubjectRow]:
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table, rows_from_input

    if source is None:
        rows = load_table(experiment.dataset, required=experiment.dataset.inputs["image"])
        split = make_split(rows, experiment.split, path=run_dir / "split.csv")
        wanted = split.get("test") or split.get("validation") or []
        return [r for r in rows if r.name in set(wanted)]
    return rows_from_input(source, image_columns=experiment.dataset.inputs["image"],
                           subject_column=experiment.dataset.subject_column,
                           pattern=_folder_pattern(experiment, args))


def _folder_pattern(experiment: ExperimentConfig, args: argparse.Namespace | None) -> FolderInput | None:
    """How a folder --input is searched: the options given, else the dataset's own folder rule."""
    from voxelflow.config.schema import FolderInput

    column = experiment.dataset.inputs["image"][0]
    base = (experiment.dataset.folders or {}).get(column)
    given = {
        "glob": getattr(args, "glob", None),
        "contains": getattr(args, "contains", None),
        "not_contains": getattr(args, "not_contains", None),
        "subject_regex": getattr(args, "subject_regex", None),
    }
    given = {k: v for k, v in given.items() if v is not None}
    if base is None and not given:
        return None
    start = base.model_dump() if base is not None else {"path": "."}
    return FolderInput.model_validate({**start, **given})


def _run_model(args: argparse.Namespace) -> int:
    from voxelflow.config.load import load_experiment
    from voxelflow.zoo.infer import infer_with_model
    from voxelflow.zoo.store import resolve_model

    if not args.input or not args.out:
        raise ConfigError("--model needs --input FILE|FOLDER|TABLE and --out DIR")
    experiment = load_experiment(resolve_model(args.model).config_path)
    rows = _input_rows(args.input, experiment, Path(args.out), args)
    table = infer_with_model(args.model, rows, out_dir=Path(args.out), trust_code=args.trust_code,
                             overrides=args.overrides)
    print(f"predictions: {table}")
    return 0


def _run_folds(args: argparse.Namespace, experiment: ExperimentConfig, root: Path) -> int:
    """``--folds``: the fold models of ``root`` as one ensemble."""
    from voxelflow.cv.ensemble import ensemble_rows, fold_members
    from voxelflow.engine.run import application_class

    members = fold_members(experiment, root, args.folds, which=args.checkpoint)
    if args.input is None:
        rows = _test_rows(experiment, root)
    else:
        from voxelflow.io.table import rows_from_input

        rows = rows_from_input(args.input, image_columns=experiment.dataset.inputs["image"],
                               subject_column=experiment.dataset.subject_column)
    out = Path(args.out) if args.out else root / "predictions_ensemble"
    decision = application_class(experiment).postprocess_decision(root)
    if decision is not None:
        log.info("postprocessing decided by voxelflow cv: %s", root / "cv" / "postprocessing.json")
    table = ensemble_rows(members, rows, out_dir=out, options=experiment.inference,
                          postprocessing=decision)
    print(f"predictions ({len(members)}-member ensemble): {table}")
    return 0


def _test_rows(experiment: ExperimentConfig, root: Path) -> list[SubjectRow]:
    """The test subjects of the folds' shared split (no fold trained or validated on them)."""
    from voxelflow.cv.folds import fold_experiment, split_path
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    rows = load_table(experiment.dataset, required=experiment.dataset.inputs["image"])
    path = split_path(experiment, root)
    if not path.is_file():
        raise ConfigError(f"--folds: expected the folds' split {path}; train the folds first, or pass --input")
    test = set(make_split(rows, fold_experiment(experiment, root, 0).split, path=path)["test"])
    if not test:
        raise ConfigError(f"--folds: the split {path} has no test subject (split.test = 0); pass --input")
    return [r for r in rows if r.name in test]
