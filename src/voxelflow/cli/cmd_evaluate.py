"""``voxelflow evaluate``: score predicted label maps against references.

Examples:
    voxelflow evaluate --pred runs/x/predictions --ref data/labels --out runs/x/evaluation
    voxelflow evaluate --pred P --ref R --out O --labels 1,2,3 --tolerance 2 --image data/images
    voxelflow evaluate -c experiment.yaml --ref data/labels   # predictions/out from the run folder
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voxelflow.cli.common import add_config_args
from voxelflow.errors import ConfigError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="compute metrics of predictions against references (CSV, plots, HTML report)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pred", help="folder of predicted label maps (default with -c: RUN_DIR/predictions)"
    )
    parser.add_argument(
        "--ref",
        help="folder of reference label maps (segmentation); for other applications with -c: "
        "a CSV table holding the references (default: the config's dataset table)",
    )
    parser.add_argument("--out", help="output folder (default with -c: RUN_DIR/evaluation)")
    parser.add_argument(
        "--tolerance", type=float, default=None, help="NSD tolerance in mm (default 1)"
    )
    parser.add_argument(
        "--labels", default=None, help="comma-separated labels, e.g. 1,2,3 (default: all)"
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric names (default: every overlap, surface and region metric)",
    )
    parser.add_argument(
        "--image", default=None, help="folder of images drawn under the contours in the report"
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample predictions onto the reference grid (nearest)",
    )
    parser.add_argument(
        "--surface",
        choices=("surfels", "voxels", "faces"),
        default="surfels",
        help="surface elements of HD/HD95/ASSD/NSD: DeepMind's area-weighted surfels (default), "
        "border voxels (MONAI's definition) or area-weighted voxel faces",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: CPU count)"
    )
    parser.add_argument("--no-report", action="store_true", help="write the CSVs only")
    add_config_args(parser, required=False)
    parser.set_defaults(func=run)


def parse_labels(text: str | None) -> list[int] | None:
    """``"1,2,3"`` → ``[1, 2, 3]``.

    Raises:
        ConfigError: a value that is not an integer.
    """
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"expected --labels as comma-separated integers like 1,2,3, got {text!r}"
        ) from None


def _settings_from_config(args: argparse.Namespace) -> dict[str, object]:
    """Evaluation settings and run folder of an experiment (YAML or NiftyNet .ini, ``--set``)."""
    from voxelflow.config.load import load_experiment

    experiment = load_experiment(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path(experiment.system.run_dir)
    return {
        "pred": run_dir / "predictions",
        "out": run_dir / "evaluation",
        "labels": experiment.evaluation.labels,
        "tolerance": experiment.evaluation.tolerance_mm,
        "metrics": list(experiment.evaluation.metrics),
    }


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; exit code 1 when a subject is missing or failed.

    When the prediction folder holds ``inferred.csv`` (written by ``voxelflow infer``), its
    subject → prediction rows are what is evaluated (extra outputs such as probabilities or
    uncertainty maps are not predictions); references come from ``--ref FOLDER`` (file
    ``<subject>.*`` or ``<subject>_*``) or, with ``-c`` and no ``--ref``, from the label column of
    the config's dataset table. Otherwise both folders are matched by file name.
    """
    from voxelflow.metrics.evaluate import EVALUATE_METRICS, evaluate_files, evaluate_folders

    experiment = None
    if args.config:
        from voxelflow.config.load import load_experiment

        experiment = load_experiment(args.config, args.overrides)
        if experiment.application != "segmentation":
            return _run_application(args, experiment)
    settings: dict[str, object] = _settings_from_config(args) if args.config else {}
    pred = args.pred or settings.get("pred")
    out = args.out or settings.get("out")
    if pred is None or out is None:
        raise ConfigError(
            "expected --pred and --out (or -c CONFIG to take them from the run folder)"
        )
    labels = parse_labels(args.labels) if args.labels else settings.get("labels")
    tolerance = args.tolerance if args.tolerance is not None else settings.get("tolerance", 1.0)
    metrics = args.metrics.split(",") if args.metrics else settings.get("metrics", EVALUATE_METRICS)
    options = dict(
        labels=labels, metrics=metrics, tolerance=float(tolerance),  # type: ignore[arg-type]
        resample=args.resample, workers=args.workers, report=not args.no_report,
        surface=args.surface, label_names=_label_names(experiment),
        provenance=_provenance(args, experiment, Path(str(pred))),
    )  # fmt: skip
    inferred = Path(pred) / "inferred.csv"
    if inferred.exists() and (args.ref or experiment is not None):
        pred_files = _inferred_predictions(inferred)
        ref_files = _references(args.ref, experiment, pred_files, inferred)
        images = _match_folder(args.image, pred_files) if args.image else None
        result = evaluate_files(pred_files, ref_files, out, images=images, **options)  # type: ignore[arg-type]
    else:
        if not args.ref:
            raise ConfigError(
                f"expected --ref FOLDER of reference label maps (no inferred.csv in {str(pred)!r} "
                "to take subjects from)"
            )
        result = evaluate_folders(pred, args.ref, out, image_dir=args.image, **options)  # type: ignore[arg-type]
    subjects = len({row["subject"] for row in result.rows})
    logger.info("evaluated %d subjects; results in %s", subjects, out)
    if args.config:  # logging.mlflow: the report goes into the run's MLflow run
        from voxelflow.engine.logging import log_artifacts

        log_artifacts(Path(str(settings["pred"])).parent, {"evaluation": Path(str(out))})
    if not result.ok:
        logger.error(
            "%d problem(s), listed in %s", len(result.problems), Path(out) / "problems.csv"
        )
        return 1
    return 0


def _label_names(experiment: object) -> dict[int, str] | None:
    """Label value → name from the config's MSD / nnU-Net ``dataset.json``, when it has one."""
    if experiment is None or getattr(experiment.dataset, "msd", None) is None:  # type: ignore[attr-defined]
        return None
    from voxelflow.io.table import dataset_labels

    return dataset_labels(experiment.dataset.msd)  # type: ignore[attr-defined]


def _provenance(args: argparse.Namespace, experiment: object, pred: Path) -> dict[str, object]:
    """Where the predictions came from: the run folder and its config's hash, the inputs."""
    import hashlib

    found: dict[str, object] = {"predictions": str(pred.resolve())}
    if args.ref:
        found["references"] = str(Path(args.ref).resolve())
    if experiment is not None:
        run_dir = Path(args.run_dir or experiment.system.run_dir)  # type: ignore[attr-defined]
        found["run"] = str(run_dir.resolve())
        config = run_dir / "config.yaml"
        if config.is_file():
            found["config sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    return found


def _inferred_predictions(table: Path) -> dict[str, Path]:
    """Subject → prediction file of an ``inferred.csv``."""
    import csv

    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "prediction" not in rows[0]:
        raise ConfigError(f"{str(table)!r}: expected a 'prediction' column, got {list(rows[0])}")
    return {row["subject"]: Path(row["prediction"]) for row in rows}


def _match_folder(folder: str, subjects: dict[str, Path]) -> dict[str, Path]:
    """Files of ``folder`` for each subject: named ``<subject>.*`` or, if unique, ``<subject>_*``."""
    from voxelflow.metrics.evaluate_io import list_images

    files = list_images(folder)
    matched: dict[str, Path] = {}
    for subject in subjects:
        if subject in files:
            matched[subject] = files[subject]
            continue
        candidates = [name for name in files if name.startswith(f"{subject}_")]
        if len(candidates) == 1:
            matched[subject] = files[candidates[0]]
    return matched


def _references(ref: str | None, experiment: object, predictions: dict[str, Path],
                inferred: Path) -> dict[str, Path]:
    """Reference label files of the predicted subjects: a folder, or the table's label column."""
    if ref:
        return _match_folder(ref, predictions)
    from voxelflow.io.table import load_table

    dataset = experiment.dataset  # type: ignore[attr-defined]
    columns = dataset.inputs.get("label")
    if not columns:
        raise ConfigError(
            f"dataset.inputs: expected a 'label' role to evaluate {str(inferred)!r} against, "
            "or pass --ref FOLDER"
        )
    rows = {row.name: row for row in load_table(dataset, required=[])}
    return {
        name: rows[name].path(columns[0])
        for name in predictions
        if name in rows and rows[name].columns.get(columns[0])
    }


def _run_application(args: argparse.Namespace, experiment: object) -> int:
    """Evaluate a non-segmentation run through its application's ``evaluate``."""
    from voxelflow.engine.run import application_class
    from voxelflow.io.table import load_table, read_csv_table

    application = application_class(experiment)  # type: ignore[arg-type]
    run_dir = Path(args.run_dir) if args.run_dir else Path(experiment.system.run_dir)  # type: ignore[attr-defined]
    pred = Path(args.pred) if args.pred else run_dir / "predictions"
    out = Path(args.out) if args.out else run_dir / "evaluation"
    table = pred / application.prediction_table
    if not table.exists():
        raise ConfigError(
            f"--pred: expected {application.prediction_table} from `voxelflow infer` in {str(pred)!r}, "
            "found none"
        )
    dataset = experiment.dataset  # type: ignore[attr-defined]
    rows = (
        read_csv_table(Path(args.ref), subject_column=dataset.subject_column)
        if args.ref
        else load_table(dataset)
    )
    summary = application.evaluate(experiment, predictions=table, rows=rows, out_dir=out)
    for name, value in summary.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    logger.info("evaluation written to %s", out)
    return 0
