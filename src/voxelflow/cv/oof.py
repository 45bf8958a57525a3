"""Out-of-fold evaluation: ``voxelflow cv -c X``.

Every fold's validation subjects are inferred with that fold's checkpoint (``inference.checkpoint``,
default the best) into ``<run_dir>/cv/predictions/fold_K/``; the fold tables are merged into
``<run_dir>/cv/predictions/<table>`` (a ``fold`` column added) and scored by the application's
own evaluation into ``<run_dir>/cv/``:

* segmentation: ``voxelflow evaluate``'s ``per_case.csv`` / ``summary.csv`` / plots /
  ``report.html``, each subject exactly once;
* regression, classification, autoencoder: the application's files (``regression_metrics.csv``,
  ``per_subject.csv`` ...), with ``per_case.csv`` (the application's per-subject table, same
  columns) and ``summary.csv`` beside them and a short ``report.html``;
* GAN: its distribution metrics need a set of real images, so each fold's generated samples are
  scored against that fold's validation images (``per_case.csv``: one row per fold).

Out-of-fold segmentations are inferred without connected-component postprocessing: that is
decided afterwards from them (:mod:`voxelflow.cv.postprocess`); their class probabilities are
kept (``<subject>_prob.nii.gz``) for the two-configuration ensembles of ``--compare``.

The application's default CV metric (``Application.cross_validation_metric``) goes, with its per-subject values, into
``cv/cv_metric.json``, which ``voxelflow cv --compare`` reads.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelflow.applications.base import EvaluationOptions
from voxelflow.config.schema import ExperimentConfig
from voxelflow.cv.folds import fold_count, fold_dir, fold_experiment, split_path, unfinished_reason
from voxelflow.errors import ConfigError, DataError, VoxelflowError

log = logging.getLogger(__name__)

CV_DIR = "cv"
METRIC_FILE = "cv_metric.json"


@dataclass(frozen=True)
class CVMetric:
    """An application's default cross-validation metric.

    Attributes:
        name: the summary key (``dice``, ``mae``, ``balanced_accuracy`` ...).
        higher_is_better: which way it improves.
        per_subject: the per-subject column used for paired tests (``correct`` for balanced
            accuracy: a subject is right or wrong).
    """

    name: str
    higher_is_better: bool
    per_subject: str




@dataclass
class CVResult:
    """What ``voxelflow cv`` produced.

    Attributes:
        application: the application name.
        metric: the CV metric.
        value: its out-of-fold value (over all subjects; GAN: mean over folds).
        per_subject: subject (GAN: ``fold_K``) → its value of ``metric.per_subject``.
        fold_of: subject → the fold whose model predicted it.
        out_dir: ``<run_dir>/cv``.
        summary: the application's evaluation summary.
    """

    application: str
    metric: CVMetric
    value: float
    per_subject: dict[str, float]
    fold_of: dict[str, int]
    out_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None


def cv_metric(experiment: ExperimentConfig) -> CVMetric:
    """The default CV metric of the experiment's application
    (:meth:`~voxelflow.applications.base.Application.cross_validation_metric`).

    Raises:
        ConfigError: an application without one (a plugin that does not define it).
    """
    from voxelflow.engine.run import application_class

    found = application_class(experiment).cross_validation_metric(experiment)
    if found is None:
        raise ConfigError(
            f"application {experiment.application!r}: cross-validation needs its default metric; "
            "the application does not define Application.cross_validation_metric"
        )
    return CVMetric(*found)


def check_folds_finished(
    experiment: ExperimentConfig, root: Path, *, config: str = "CONFIG"
) -> None:
    """Raise when a fold is unfinished, naming it and the command that finishes it.

    Raises:
        VoxelflowError: ``fold 2: run/fold_2 holds no checkpoint; finish it with: voxelflow
            train -c exp.yaml --fold 2``.
    """
    problems = []
    for fold in range(fold_count(experiment)):
        reason = unfinished_reason(experiment, root, fold)
        if reason is not None:
            problems.append((fold, reason))
    if problems:
        fold, reason = problems[0]
        others = f" (unfinished folds: {[f for f, _ in problems]})" if len(problems) > 1 else ""
        raise VoxelflowError(
            f"fold {fold}: {reason}; finish it with: voxelflow train -c {config} --fold {fold}"
            f"{others}"
        )


def validation_folds(
    experiment: ExperimentConfig, root: Path, rows: Sequence[Any]
) -> dict[str, int]:
    """Subject → the fold whose validation set holds it (read from the shared split file).

    Raises:
        DataError: a subject in two folds' validation sets (impossible with a drawn split).
    """
    from voxelflow.io.splits import read_split

    fold_of: dict[str, int] = {}
    names = {row.name for row in rows}
    for fold in range(fold_count(experiment)):
        config = fold_experiment(experiment, root, fold).split
        for subject, (split, _) in read_split(split_path(experiment, root), config).items():
            if split != "validation" or subject not in names:
                continue
            if subject in fold_of:
                raise DataError(
                    f"{split_path(experiment, root)}: subject {subject!r} is in the validation "
                    f"sets of folds {fold_of[subject]} and {fold}"
                )
            fold_of[subject] = fold
    return fold_of


def _oof_experiment(experiment: ExperimentConfig, root: Path, fold: int) -> ExperimentConfig:
    """The fold's experiment with postprocessing off where cross-validation decides it later
    from these predictions, and probabilities kept where ensembles average them (``--compare``
    evaluates ensembles of two configurations from them)."""
    from voxelflow.engine.run import application_class

    config = fold_experiment(experiment, root, fold)
    app_class = application_class(config)
    update: dict[str, Any] = {}
    if app_class.decides_postprocessing:
        update |= {"keep_largest_component": False, "min_component_volume_mm3": 0.0,
                   "fill_holes": False}  # fmt: skip
    if app_class.ensemble_mode == "probabilities":
        update["save_probabilities"] = True
    if not update:
        return config
    inference = config.inference.model_copy(update=update)
    return config.model_copy(update={"inference": inference})


def run_cv(
    experiment: ExperimentConfig,
    root: Path,
    *,
    config: str = "CONFIG",
    postprocessing: bool = True,
    report: bool = True,
) -> CVResult:
    """Infer every fold's validation subjects with its checkpoint and evaluate them together.

    Args:
        experiment: the experiment the folds were trained from.
        root: its run folder (holding ``fold_K/`` and ``split.csv``).
        config: the config path, for the message naming an unfinished fold's command.
        postprocessing: decide segmentation postprocessing from the predictions.
        report: write plots and ``report.html``.

    Raises:
        VoxelflowError: a fold is unfinished (named, with the command that finishes it).
    """
    from voxelflow.engine.inference import infer_rows
    from voxelflow.engine.run import application_class
    from voxelflow.io.table import load_table

    root = Path(root)
    metric = cv_metric(experiment)
    check_folds_finished(experiment, root, config=config)
    rows = load_table(experiment.dataset)
    fold_of = validation_folds(experiment, root, rows)
    out = root / CV_DIR
    app_class = application_class(experiment)
    tables: list[tuple[int, Path]] = []
    for fold in range(fold_count(experiment)):
        chosen = [r for r in rows if fold_of.get(r.name) == fold]
        if not chosen:
            log.warning("fold %d has no validation subject", fold)
            continue
        log.info("fold %d: inferring %d validation subjects", fold, len(chosen))
        table = infer_rows(
            _oof_experiment(experiment, root, fold), chosen, run_dir=fold_dir(root, fold),
            out_dir=out / "predictions" / f"fold_{fold}", which=experiment.inference.checkpoint,
        )  # fmt: skip
        tables.append((fold, table))
    if not tables:
        raise DataError(f"{split_path(experiment, root)}: no fold has a validation subject")
    if app_class.cv_per_fold:
        return _evaluate_gan(experiment, root, rows, fold_of, tables, metric)
    merged = merge_tables(tables, out / "predictions" / app_class.prediction_table)
    (out / "report.html").unlink(missing_ok=True)  # written below unless the evaluation writes one
    summary = app_class.evaluate(
        experiment, predictions=merged, rows=rows, out_dir=out, options=_cv_options(experiment, metric, report)
    )
    per_subject = _application_tables(experiment, out, metric, summary, report=report)
    value = _overall(metric, summary, per_subject)
    result = CVResult(experiment.application, metric, value, per_subject, fold_of, out, summary)
    if app_class.decides_postprocessing and postprocessing:
        from voxelflow.cv.postprocess import decide_postprocessing

        result.postprocessing = decide_postprocessing(experiment, root)
    write_metric_file(result, split_file=split_path(experiment, root))
    return result


def merge_tables(tables: Sequence[tuple[int, Path]], path: Path) -> Path:
    """Concatenate the fold tables (columns: the union) with a ``fold`` column; returns ``path``."""
    from voxelflow.engine.inference import write_table
    from voxelflow.io.table import read_prediction_table

    merged: list[dict[str, Any]] = []
    for fold, table in tables:
        merged += [{**row, "fold": fold} for row in read_prediction_table(table)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_table(path, merged)


def _cv_options(experiment: ExperimentConfig, metric: CVMetric, report: bool) -> EvaluationOptions:
    """The experiment's evaluation settings with the CV metric's column always scored."""
    metrics = list(experiment.evaluation.metrics)
    if metric.per_subject not in metrics:
        metrics.insert(0, metric.per_subject)
    return EvaluationOptions(metrics=metrics, report=report, workers=1)


def subject_means(rows: Sequence[dict[str, Any]], column: str) -> dict[str, float]:
    """Subject → mean of ``column`` over its label rows (NaN rows left out)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(str(row["subject"]), []).append(float(row[column]))
    return {subject: _mean(v) for subject, v in values.items()}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _subject_value(values: Sequence[float]) -> float:
    """One record's value as it is (NaN kept); the NaN-free mean of several labels' values."""
    return values[0] if len(values) == 1 else _mean(values)


def _overall(metric: CVMetric, summary: dict[str, Any], per_subject: dict[str, float]) -> float:
    if metric.name in summary and metric.name != "dice":
        return float(summary[metric.name])  # balanced accuracy is not a mean over subjects
    return _mean(list(per_subject.values()))


def _application_tables(
    experiment: ExperimentConfig,
    out: Path,
    metric: CVMetric,
    summary: dict[str, Any],
    *,
    report: bool,
) -> dict[str, float]:
    """``per_case.csv`` / ``summary.csv`` beside the application's own files; per-subject values."""
    from voxelflow.engine.run import application_class

    app_class = application_class(experiment)
    source = out / app_class.per_subject_table
    if source.name != "per_case.csv":
        shutil.copyfile(source, out / "per_case.csv")
    if app_class.summary_table is not None:
        shutil.copyfile(out / app_class.summary_table, out / "summary.csv")
    with open(source, newline="") as handle:
        records = list(csv.DictReader(handle))
    values: dict[str, list[float]] = {}  # segmentation: one record per subject and label
    for record in records:
        if metric.per_subject == "abs_error":
            values.setdefault(record["subject"], []).append(abs(float(record["error"])))
        else:
            values.setdefault(record["subject"], []).append(float(record[metric.per_subject]))
    per_subject = {subject: _subject_value(v) for subject, v in values.items()}
    if report and not (out / "report.html").exists():
        write_report(out / "report.html", experiment.application, metric, summary, records)
    return per_subject


def _evaluate_gan(
    experiment: ExperimentConfig,
    root: Path,
    rows: Sequence[Any],
    fold_of: dict[str, int],
    tables: Sequence[tuple[int, Path]],
    metric: CVMetric,
) -> CVResult:
    """Each fold's samples against that fold's validation images; one row per fold."""
    from voxelflow.engine.run import application_class

    out = root / CV_DIR
    app_class = application_class(experiment)
    per_fold: list[dict[str, Any]] = []
    for fold, table in tables:
        chosen = [r for r in rows if fold_of.get(r.name) == fold]
        summary = app_class.evaluate(
            experiment, predictions=table, rows=chosen, out_dir=out / f"fold_{fold}"
        )
        per_fold.append({"subject": f"fold_{fold}", "fold": fold, **summary})
    _write_csv(out / "per_case.csv", per_fold)
    names = [k for k in per_fold[0] if k not in ("subject", "fold")]
    summary = {name: _mean([float(r[name]) for r in per_fold]) for name in names}
    _write_csv(out / "summary.csv", [{"metric": k, "mean": v} for k, v in summary.items()])
    write_report(out / "report.html", "gan", metric, summary, per_fold)
    per_subject = {r["subject"]: float(r[metric.per_subject]) for r in per_fold}
    result = CVResult("gan", metric, summary[metric.name], per_subject, fold_of, out, summary)
    write_metric_file(result, split_file=split_path(experiment, root))
    return result


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_report(
    path: Path,
    application: str,
    metric: CVMetric,
    summary: dict[str, Any],
    records: Sequence[dict[str, Any]],
) -> None:
    """A self-contained ``report.html``: the CV metric, the summary and the per-subject table."""

    def cell(value: Any) -> str:
        try:
            return f"{float(value):.4g}"
        except (TypeError, ValueError):
            return html.escape(str(value))

    columns = list(records[0]) if records else []
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>"
        for r in records
    )
    summary_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{cell(v)}</td></tr>" for k, v in summary.items()
    )
    direction = "higher" if metric.higher_is_better else "lower"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{application} cross-validation"
        f"</title></head><body><h1>{html.escape(application)}: out-of-fold evaluation</h1>"
        f"<p>CV metric: <b>{metric.name}</b> ({direction} is better) = "
        f"{cell(summary.get(metric.name, ''))}</p>"
        f"<h2>Summary</h2><table border='1'>{summary_rows}</table>"
        f"<h2>Per subject ({len(records)})</h2><table border='1'><tr>"
        + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        + f"</tr>{body}</table></body></html>"
    )
    path.write_text(page, encoding="utf-8")


def write_metric_file(result: CVResult, *, split_file: Path) -> Path:
    """``cv/cv_metric.json``: metric, value, per-subject values, folds and the split file."""
    path = result.out_dir / METRIC_FILE
    data = {
        "application": result.application,
        "metric": result.metric.name,
        "higher_is_better": result.metric.higher_is_better,
        "per_subject_column": result.metric.per_subject,
        "value": result.value,
        "n": len(result.per_subject),
        "per_subject": result.per_subject,
        "fold_of": result.fold_of,
        "split_file": str(Path(split_file).absolute()),
    }
    path.write_text(json.dumps(data, indent=1, allow_nan=True))
    return path


def read_metric_file(run_dir: Path) -> dict[str, Any]:
    """The ``cv/cv_metric.json`` of a run folder.

    Raises:
        ConfigError: the folder has none (``voxelflow cv`` was not run on it).
    """
    path = Path(run_dir) / CV_DIR / METRIC_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: expected {path} from `voxelflow cv -c CONFIG --run-dir {run_dir}`, found none"
        )
    return json.loads(path.read_text())
