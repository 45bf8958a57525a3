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
from typing import TYPE_CHECKING

from voxelflow.cli.common import add_config_args
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.applications.base import Application, EvaluationOptions
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.table import SubjectRow

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


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; exit code 1 when a subject is missing or failed.

    With ``-c`` the config's application evaluates (resolved through the application registry,
    a plugin's included): see :meth:`voxelflow.applications.base.Application.evaluate`.
    Without it, predicted label maps (the subjects of ``--pred``'s ``inferred.csv`` when it has
    one, else its files by name) are scored against ``--ref``'s.
    """
    if args.config:
        from voxelflow.config.load import load_experiment

        return _run_application(args, load_experiment(args.config, args.overrides))
    # no config, so no application: label maps, the CLI's default (segmentation) evaluation
    from voxelflow.applications.segmentation.evaluation import evaluate_run

    if args.pred is None or args.out is None:
        raise ConfigError(
            "expected --pred and --out (or -c CONFIG to take them from the run folder)"
        )
    if not args.ref:
        raise ConfigError(
            f"expected --ref FOLDER of reference label maps (no inferred.csv in {args.pred!r} "
            "to take subjects from)"
        )
    evaluate_run(None, Path(args.pred), [], Path(args.out), _options(args, None, Path(args.pred)))
    return 0


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


def _options(
    args: argparse.Namespace, experiment: ExperimentConfig | None, pred: Path
) -> EvaluationOptions:
    """The flags as :class:`EvaluationOptions` (unset ones: the config's ``evaluation``)."""
    from voxelflow.applications.base import EvaluationOptions

    ref = Path(args.ref) if args.ref else None
    return EvaluationOptions(
        labels=parse_labels(args.labels), tolerance_mm=args.tolerance,
        metrics=args.metrics.split(",") if args.metrics else None,
        reference_dir=ref if ref is not None and ref.is_dir() else None,
        image_dir=Path(args.image) if args.image else None, resample=args.resample,
        surface=args.surface, workers=args.workers, report=not args.no_report,
        provenance=_provenance(args, experiment, pred),
    )  # fmt: skip


def _reference_rows(
    args: argparse.Namespace, experiment: ExperimentConfig, application: type[Application]
) -> list[SubjectRow]:
    """Rows holding the references: ``--ref TABLE``, none for ``--ref FOLDER``, else the config's."""
    from voxelflow.io.table import load_table, read_csv_table

    dataset = experiment.dataset
    if not args.ref:  # subjects without a reference file are skipped by folder-reading ones
        return list(load_table(dataset, required=[] if application.reference_folders else None))
    if not Path(args.ref).is_dir():
        return list(read_csv_table(Path(args.ref), subject_column=dataset.subject_column))
    if not application.reference_folders:
        raise ConfigError(
            f"--ref: application {application.name!r} reads references from a CSV table, "
            f"got the folder {args.ref!r}"
        )
    return []


def _run_application(args: argparse.Namespace, experiment: ExperimentConfig) -> int:
    """Evaluate a run through its application's ``evaluate`` (registry lookup, no name test)."""
    from voxelflow.engine.logging import log_artifacts
    from voxelflow.engine.run import application_class

    application = application_class(experiment)
    run_dir = Path(args.run_dir) if args.run_dir else Path(experiment.system.run_dir)
    pred = Path(args.pred) if args.pred else run_dir / "predictions"
    out = Path(args.out) if args.out else run_dir / "evaluation"
    table = pred / application.prediction_table
    if not table.exists() and not application.reference_folders:
        raise ConfigError(
            f"--pred: expected {application.prediction_table} from `voxelflow infer` in {str(pred)!r}, "
            "found none"
        )
    rows = _reference_rows(args, experiment, application)
    summary = application.evaluate(
        experiment, predictions=table if table.exists() else pred, rows=rows, out_dir=out,
        options=_options(args, experiment, pred),
    )  # fmt: skip
    for name, value in summary.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    logger.info("evaluation written to %s", out)
    log_artifacts(run_dir, {"evaluation": out})  # logging.mlflow: into the run's MLflow run
    return 0
