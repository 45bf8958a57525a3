"""Segmentation's evaluation: predicted label maps against reference label maps.

:func:`evaluate_run` scores an inference run (what ``voxelflow evaluate -c`` and ``voxelflow
cv`` call through :meth:`SegmentationApplication.evaluate`): the subjects of its
``inferred.csv`` (extra outputs such as probabilities are not predictions) against references
from a folder (``<subject>.*`` or, when unique, ``<subject>_*``) or the table's ``label``
column; or, without ``inferred.csv``, two folders matched by file name. :func:`evaluation_rows`
is the Python API's in-memory variant. Both write ``per_case.csv``, ``summary.csv``,
``problems.csv``, ``plots/`` and ``report.html`` through :mod:`voxelflow.metrics.evaluate`,
which holds the metric computation itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelflow.applications.base import EvaluationOptions
from voxelflow.applications.common import pair_cases
from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Image
    from voxelflow.io.table import SubjectRow
    from voxelflow.metrics.evaluate import EvaluationResult

logger = logging.getLogger(__name__)

#: the prediction table written by segmentation inference.
PREDICTION_TABLE = "inferred.csv"


@dataclass(frozen=True)
class Settings:
    """The options of one evaluation, with the experiment's ``evaluation`` section filled in."""

    labels: Sequence[int] | None
    metrics: list[str]
    tolerance: float


def resolve_settings(experiment: ExperimentConfig | None, options: EvaluationOptions) -> Settings:
    """``options``' labels, metrics and tolerance, else the experiment's (else the defaults)."""
    from voxelflow.metrics.evaluate import EVALUATE_METRICS

    section = getattr(experiment, "evaluation", None)
    labels = options.labels if options.labels is not None else getattr(section, "labels", None)
    metrics = options.metrics or (list(section.metrics) if section is not None else None)
    tolerance = options.tolerance_mm
    if tolerance is None:
        tolerance = section.tolerance_mm if section is not None else 1.0
    return Settings(labels, list(metrics or EVALUATE_METRICS), float(tolerance))


def match_folder(folder: Path, subjects: Sequence[str]) -> dict[str, Path]:
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


def table_references(
    experiment: ExperimentConfig | None,
    rows: Sequence[SubjectRow],
    predictions: Mapping[str, Path],
    table: Path,
) -> dict[str, Path]:
    """Reference label files of the predicted subjects from the rows' ``label`` column.

    Raises:
        ConfigError: ``dataset.inputs`` has no ``label`` role.
    """
    columns = experiment.dataset.inputs.get("label") if experiment is not None else None
    if not columns:
        raise ConfigError(
            f"dataset.inputs: expected a 'label' role to evaluate {str(table)!r} against, "
            "or pass --ref FOLDER"
        )
    by_name = {row.name: row for row in rows}
    return {
        name: by_name[name].path(columns[0])
        for name in predictions
        if name in by_name and by_name[name].columns.get(columns[0])
    }


def label_names(experiment: ExperimentConfig | None) -> dict[int, str] | None:
    """Label value → name from the config's MSD / nnU-Net ``dataset.json``, when it has one."""
    if experiment is None or experiment.dataset.msd is None:
        return None
    from voxelflow.io.table import dataset_labels

    return dataset_labels(experiment.dataset.msd)


def evaluate_run(
    experiment: ExperimentConfig | None,
    predictions: Path,
    rows: Sequence[SubjectRow],
    out_dir: Path,
    options: EvaluationOptions | None = None,
) -> dict[str, float]:
    """Score a segmentation inference run; outputs in ``out_dir``.

    Args:
        predictions: the run's ``inferred.csv``, or a folder holding it or the label maps.
        rows: dataset rows with the ``label`` column (used without ``options.reference_dir``).

    Returns:
        ``{"<metric>/<label>": mean over subjects}`` for every numeric metric.

    Raises:
        ConfigError: a folder of predictions without ``inferred.csv`` and no reference folder.
        DataError: a subject unmatched or failed, after every output is written.
    """
    options = options or EvaluationOptions()
    table = predictions / PREDICTION_TABLE if predictions.is_dir() else predictions
    if table.is_file():
        result = _evaluate_table(experiment, table, rows, out_dir, options)
    elif options.reference_dir is None:
        raise ConfigError(
            f"expected --ref FOLDER of reference label maps (no {PREDICTION_TABLE} in "
            f"{str(predictions)!r} to take subjects from)"
        )
    else:
        from voxelflow.metrics.evaluate import evaluate_folders

        result = evaluate_folders(
            predictions, options.reference_dir, out_dir, image_dir=options.image_dir,
            **_file_options(experiment, options),
        )  # fmt: skip
    subjects = len({row["subject"] for row in result.rows})
    logger.info("evaluated %d subjects; results in %s", subjects, out_dir)
    if not result.ok:
        raise DataError(
            f"{len(result.problems)} problem(s), listed in {Path(out_dir) / 'problems.csv'}"
        )
    return summarize(result.rows)


def _evaluate_table(
    experiment: ExperimentConfig | None,
    table: Path,
    rows: Sequence[SubjectRow],
    out_dir: Path,
    options: EvaluationOptions,
) -> EvaluationResult:
    """:func:`~voxelflow.metrics.evaluate.evaluate_files` on an ``inferred.csv``'s subjects."""
    from voxelflow.io.table import prediction_files
    from voxelflow.metrics.evaluate import evaluate_files

    predicted = prediction_files(table)
    if options.reference_dir is not None:
        references = match_folder(options.reference_dir, list(predicted))
    else:
        references = table_references(experiment, rows, predicted, table)
    images = match_folder(options.image_dir, list(predicted)) if options.image_dir else None
    return evaluate_files(
        predicted, references, out_dir, images=images, **_file_options(experiment, options)
    )


def _file_options(experiment: ExperimentConfig | None, options: EvaluationOptions) -> dict[str, Any]:
    """Keyword arguments shared by the folder and table evaluations."""
    settings = resolve_settings(experiment, options)
    return {
        "labels": settings.labels, "metrics": settings.metrics, "tolerance": settings.tolerance,
        "resample": options.resample, "workers": options.workers, "report": options.report,
        "surface": options.surface, "label_names": label_names(experiment),
        "provenance": options.provenance,
    }  # fmt: skip


def summarize(rows: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Mean over subjects (NaN left out) of every numeric column, per label: ``dice/1`` ...

    Example:
        >>> summarize([{"subject": "a", "label": 1, "dice": 0.5}, {"subject": "b", "label": 1, "dice": 1.0}])
        {'dice/1': 0.75}
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            if name in ("subject", "label") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                values.setdefault(f"{name}/{row['label']}", []).append(float(value))
    return {name: _mean(column) for name, column in values.items()}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def evaluation_rows(
    experiment: ExperimentConfig,
    predictions: Mapping[str, Image] | Path,
    references: Mapping[str, Image] | Path,
    out_dir: Path | None,
    options: EvaluationOptions | None = None,
) -> list[dict[str, Any]]:
    """Rows of the Python API's evaluation: two folders, or in-memory label images.

    Shape:
        images: ``(1, *spatial)`` label maps, each pair on one grid.

    Raises:
        DataError: a subject unmatched or failed (the first five listed).
    """
    options = options or EvaluationOptions()
    settings = resolve_settings(experiment, options)
    common: dict[str, Any] = {"labels": settings.labels, "metrics": settings.metrics,
              "tolerance": settings.tolerance, "report": out_dir is not None}  # fmt: skip
    if isinstance(predictions, Path) and isinstance(references, Path):
        from voxelflow.metrics.evaluate import evaluate_folders

        result = evaluate_folders(predictions, references, out_dir, workers=1, **common)
    else:
        from voxelflow.metrics.evaluate import evaluate_images

        cases = pair_cases(_as_mapping(predictions), _as_mapping(references))
        labelled = {
            name: (pred.with_data(pred.data, kind="label"), ref.with_data(ref.data, kind="label"))
            for name, (pred, ref) in cases.items()
        }
        result = evaluate_images(labelled, out_dir, **common)
    return checked_rows(result)


def _as_mapping(images: Mapping[str, Image] | Path) -> Mapping[str, Image]:
    if isinstance(images, Path):
        raise ConfigError(f"evaluate: expected two folders or two image mappings, got {images}")
    return images


def checked_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """The result's rows, or a DataError naming the first five failed subjects."""
    if result.problems:
        listed = "; ".join(f"{subject}: {message}" for subject, _, message in result.problems[:5])
        raise DataError(f"evaluation failed for {len(result.problems)} subject(s): {listed}")
    return [dict(row) for row in result.rows]
