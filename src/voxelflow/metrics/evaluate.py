"""The evaluate action: prediction and reference folders → per-case CSV, summary, plots, report.

Files are matched by subject id (the file name without its image suffix, e.g. ``case01`` for
``case01.nii.gz``). Each pair must share a grid (the project's one grid policy,
:func:`voxelflow.io.image.check_same_grid`); with ``resample=True`` the prediction is resampled
onto the reference grid with nearest-neighbour interpolation and a warning. Subjects are
evaluated in parallel processes. Nothing is dropped silently: subjects present in one folder
only, unreadable files and per-subject errors are listed in ``problems.csv`` and the report, and
make :attr:`EvaluationResult.ok` false (the CLI then exits with a non-zero code).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from voxelflow.errors import ConfigError, VoxelflowError
from voxelflow.io.image import Image, check_same_grid
from voxelflow.metrics.descriptive import empty_region_values, region_columns
from voxelflow.metrics.evaluate_io import (
    MetricRow,
    describe_labels,
    label_array,
    list_images,
    load_case_files,
    match_subjects,
    read_label_image,
    resample_nearest,
    subject_id,
    write_csv,
)
from voxelflow.metrics.overlap import OVERLAP_COLUMNS
from voxelflow.metrics.segmentation import (
    REGION_METRICS,
    SUBJECT_METRICS,
    SURFACE_METRICS,
    absent_label_metrics,
    check_metric_names,
    segmentation_metrics,
)
from voxelflow.metrics.surface import SURFACE_KINDS

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATE_METRICS",
    "CaseTask",
    "EvaluationResult",
    "evaluate_case",
    "evaluate_folders",
    "evaluate_images",
    "evaluate_pair",
    "list_images",
    "read_label_image",
    "resample_nearest",
    "subject_id",
    "write_csv",
]

#: metrics written by ``voxelflow evaluate`` unless others are asked for.
EVALUATE_METRICS = (*OVERLAP_COLUMNS, *SURFACE_METRICS, *REGION_METRICS, *SUBJECT_METRICS)


@dataclass(frozen=True)
class CaseTask:
    """One subject to evaluate: its files and the settings."""

    subject: str
    pred_path: Path
    ref_path: Path
    labels: tuple[int, ...] | None
    metrics: tuple[str, ...]
    tolerance: float
    resample: bool
    surface: str = "surfels"
    descriptive: bool = True
    image_path: Path | None = None


@dataclass
class EvaluationResult:
    """What an evaluation produced and what went wrong.

    Attributes:
        rows: per-case rows (``subject``, ``label``, then one column per metric).
        problems: ``(subject, kind, message)`` for unmatched subjects and failures.
        warnings: messages for resampled predictions and labels absent everywhere.
        out_dir: the folder written (``None`` when nothing was written).
    """

    rows: list[MetricRow] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every subject was matched and evaluated."""
        return not self.problems


@dataclass
class CaseOutcome:
    """What one subject gave: rows (one per label), warnings, or the error; and its grid."""

    rows: list[MetricRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()


def evaluate_pair(
    subject: str, pred: Image, ref: Image, task: CaseTask, image: Image | None = None
) -> CaseOutcome:
    """Metrics of one prediction/reference image pair under ``task``'s settings.

    With ``task.descriptive`` each row also holds the descriptive columns
    (:func:`voxelflow.metrics.descriptive.region_columns`), with the intensity statistics of
    ``image`` (which must be on the reference grid) when it is given.

    Returns:
        :class:`CaseOutcome` with one row per label (``task.labels``, or every label present).

    Raises:
        GeometryError: different grids without ``task.resample`` (naming both files), or an
            image off the reference grid.
        DataError: invalid label values.
    """
    warnings: list[str] = []
    if task.resample and not pred.same_grid(ref):
        source = pred.path.name if pred.path else "prediction"
        warnings.append(f"{subject}: {source} resampled (nearest) onto the reference grid")
        pred = resample_nearest(pred, ref)
    check_same_grid(pred, ref, what=f"prediction and reference of subject {subject!r}")
    pred_map, ref_map = label_array(pred), label_array(ref)
    values = segmentation_metrics(
        pred_map,
        ref_map,
        labels=task.labels,
        spacing=ref.spacing,
        metrics=task.metrics,
        tolerance=task.tolerance,
        surface=task.surface,  # type: ignore[arg-type]  # a str, checked against SURFACE_KINDS
    )
    if task.descriptive:
        described = describe_labels(pred_map, ref_map, list(values), ref, image, subject)
        values = {label: {**values[label], **described[label]} for label in values}
    rows: list[MetricRow] = [
        {"subject": subject, "label": label, **metrics} for label, metrics in values.items()
    ]
    return CaseOutcome(rows, warnings, None, ref.spatial_shape, ref.spacing)


def evaluate_case(task: CaseTask) -> CaseOutcome:
    """Read one subject's files and evaluate them (see :func:`evaluate_pair`).

    Raises:
        GeometryError: different grids without ``resample``. DataError: unreadable file or
            invalid labels; every message names the file.
    """
    ref = read_label_image(task.ref_path)
    pred = read_label_image(task.pred_path)
    image = None
    if task.image_path is not None:
        image = read_label_image(task.image_path, kind="intensity")
    return evaluate_pair(task.subject, pred, ref, task, image)


def _run_case(task: CaseTask) -> CaseOutcome:
    """:func:`evaluate_case` returning the error message instead of raising (for workers)."""
    try:
        return evaluate_case(task)
    except Exception as exc:  # one bad subject must not stop the others; it is listed instead
        return CaseOutcome(error=f"{type(exc).__name__}: {exc}")


def _fill_absent_labels(outcomes: list[tuple[str, CaseOutcome]], task: CaseTask) -> None:
    """Give every evaluated subject (under its own name) a row for every label found in any
    subject (labels=None); label 1 with the empty-mask values when no label is found anywhere."""
    found = {int(row["label"]) for _, outcome in outcomes for row in outcome.rows}
    labels = sorted(found) or [1]
    for subject, outcome in outcomes:
        if outcome.error is not None:
            continue
        have = {row["label"] for row in outcome.rows}
        # a label empty in both maps adds nothing to a subject-level metric: keep its value
        subject_values = {
            name: outcome.rows[0][name]
            for name in SUBJECT_METRICS
            if outcome.rows and name in outcome.rows[0]
        }
        for label in (v for v in labels if v not in have):
            values = absent_label_metrics(
                outcome.shape,
                outcome.spacing,
                metrics=task.metrics,
                tolerance=task.tolerance,
                surface=task.surface,  # type: ignore[arg-type]  # a str, checked against SURFACE_KINDS
            )
            outcome.rows.append({"subject": subject, "label": label, **values, **subject_values})
        outcome.rows.sort(key=lambda row: int(row["label"]))


def _run_all(tasks: list[CaseTask], workers: int, result: EvaluationResult) -> None:
    """Evaluate every task (in parallel when ``workers > 1``) with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="evaluate", unit="subject", disable=None)
    outcomes: dict[str, CaseOutcome] = {}
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            outcomes[task.subject] = _run_case(task)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_case, task): task.subject for task in tasks}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update()
    bar.close()
    _collect([(task.subject, outcomes[task.subject]) for task in tasks], tasks, result)


def _collect(
    outcomes: list[tuple[str, CaseOutcome]], tasks: Sequence[CaseTask], result: EvaluationResult
) -> None:
    """Merge per-subject outcomes (in subject order) into ``result``."""
    if tasks and tasks[0].labels is None:
        _fill_absent_labels(list(outcomes), tasks[0])
    for subject, outcome in outcomes:
        result.rows.extend(outcome.rows)
        result.warnings.extend(outcome.warnings)
        if outcome.error is not None:
            result.problems.append((subject, "failed", outcome.error))


def _check_labels_present(result: EvaluationResult, labels: Sequence[int] | None) -> None:
    """Warn about requested labels found in no prediction and no reference."""
    if not labels or not result.rows:
        return
    for label in labels:
        rows = [row for row in result.rows if row["label"] == label]
        present = any(row["volume_ref_mm3"] or row["volume_pred_mm3"] for row in rows)
        if rows and not present:
            message = (
                f"label {label} is absent from every prediction and reference; its metrics are nan"
            )
            logger.warning(message)
            result.warnings.append(message)


def _complete_rows(result: EvaluationResult, columns: Sequence[str]) -> None:
    """Give every row every descriptive column: the empty-region value where none was computed
    (a label absent from both maps), ``nan`` for intensities of a subject without an image."""
    empty = empty_region_values(columns)
    for row in result.rows:
        for column in columns:
            row.setdefault(column, empty[column])


def _provenance(
    given: Mapping[str, object] | None, metrics: Sequence[str], tolerance: float, surface: str
) -> dict[str, object]:
    """What produced an evaluation: the caller's items, then the evaluation's own settings."""
    import datetime

    from voxelflow.version import __version__

    return {
        **dict(given or {}),
        "metrics": ", ".join(metrics),
        "NSD tolerance (mm)": tolerance,
        "surface definition": surface,
        "voxelflow": __version__,
        "evaluated": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = EVALUATE_METRICS,
    tolerance: float = 1.0,
    image_dir: str | os.PathLike[str] | None = None,
    resample: bool = False,
    workers: int | None = None,
    report: bool = True,
    surface: str = "surfels",
    descriptive: bool = True,
    label_names: Mapping[int, str] | None = None,
    provenance: Mapping[str, object] | None = None,
) -> EvaluationResult:
    """Evaluate every prediction of ``pred_dir`` against the reference of the same subject.

    Args:
        pred_dir: folder of predicted label maps. ref_dir: folder of reference label maps.
        out_dir: where ``per_case.csv``, ``summary.csv``, ``problems.csv``, ``plots/`` and
            ``report.html`` go; ``None`` writes nothing.
        labels: label values to evaluate; ``None`` = every non-zero label of each pair.
        metrics: metric names (see :data:`voxelflow.metrics.SEGMENTATION_METRIC_NAMES`).
        tolerance: NSD tolerance in mm.
        image_dir: optional folder of intensity images (same subject ids, on the reference
            grid): drawn in the report, and their statistics inside each region are columns.
        resample: resample predictions onto the reference grid (nearest) instead of failing.
        workers: processes; ``None`` = the number of CPUs.
        report: also write the plots and ``report.html``.
        surface: surface elements for HD/HD95/ASSD/NSD: ``"surfels"`` (DeepMind, default),
            ``"voxels"`` (MONAI) or ``"faces"``.
        descriptive: add the descriptive columns (shape, centroid, intensity statistics) of the
            reference and predicted regions (:func:`voxelflow.metrics.descriptive.region_columns`).
        label_names: label value → name (``label_name`` column of ``per_case.csv``, report).
        provenance: what produced the predictions (run, config hash, checkpoint ...), shown at
            the top of the report beside the evaluation's own settings and voxelflow's version.

    Returns:
        :class:`EvaluationResult`; ``result.ok`` is false when anything was skipped or failed.

    Raises:
        DataError: a folder is missing. ConfigError: an unknown metric name.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from voxelflow.io.writers import write_image
        >>> label = torch.zeros(1, 8, 8, 8, dtype=torch.int16)
        >>> label[:, 2:6, 2:6, 2:6] = 1
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for folder in ("pred", "ref"):
        ...         _ = write_image(Image(label, kind="label"), Path(root, folder, "case01.nii.gz"))
        ...     result = evaluate_folders(Path(root, "pred"), Path(root, "ref"), workers=1)
        >>> result.ok, result.rows[0]["subject"], result.rows[0]["dice"]
        (True, 'case01', 1.0)
    """
    pred_files, ref_files = list_images(pred_dir), list_images(ref_dir)
    images = list_images(image_dir) if image_dir is not None else None
    return evaluate_files(
        pred_files,
        ref_files,
        out_dir,
        labels=labels,
        metrics=metrics,
        tolerance=tolerance,
        images=images,
        resample=resample,
        workers=workers,
        report=report,
        surface=surface,
        descriptive=descriptive,
        label_names=label_names,
        provenance=provenance,
    )


def evaluate_files(
    pred_files: Mapping[str, Path],
    ref_files: Mapping[str, Path],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = EVALUATE_METRICS,
    tolerance: float = 1.0,
    images: Mapping[str, Path] | None = None,
    resample: bool = False,
    workers: int | None = None,
    report: bool = True,
    surface: str = "surfels",
    descriptive: bool = True,
    label_names: Mapping[int, str] | None = None,
    provenance: Mapping[str, object] | None = None,
) -> EvaluationResult:
    """:func:`evaluate_folders` on explicit ``subject → file`` maps (e.g. an ``inferred.csv`` and
    a dataset table's label column); a subject in one map only is a listed problem.

    ``images``: subject → intensity image file (on the reference grid), or None.
    """
    wanted = check_metric_names(metrics)
    if surface not in SURFACE_KINDS:
        raise ConfigError(f"expected surface one of {SURFACE_KINDS}, got {surface!r}")
    always = tuple(name for name in ("volume_ref_mm3", "volume_pred_mm3") if name not in wanted)
    result = EvaluationResult()
    images = dict(images) if images is not None else None
    subjects = match_subjects(pred_files, ref_files, result.problems)
    if images is not None:
        for name in (n for n in subjects if n not in images):
            result.warnings.append(f"{name}: no intensity image; intensity columns nan")
    label_tuple = tuple(int(v) for v in labels) if labels is not None else None
    tasks = [
        CaseTask(
            name,
            pred_files[name],
            ref_files[name],
            label_tuple,
            wanted + always,
            float(tolerance),
            resample,
            surface,
            descriptive,
            (images or {}).get(name),
        )
        for name in subjects
    ]
    _run_all(tasks, workers or os.cpu_count() or 1, result)
    extra = region_columns(intensity=images is not None) if descriptive else ()
    _complete_rows(result, extra)
    _check_labels_present(result, label_tuple)
    for warning in result.warnings:
        logger.warning(warning)
    for subject, kind, message in result.problems:
        logger.error("%s: %s: %s", subject, kind, message)
    if out_dir is not None:
        from voxelflow.metrics.report import write_outputs

        loader = partial(load_case_files, ref_files, pred_files, images or {})
        write_outputs(
            result,
            Path(out_dir),
            wanted,
            loader,
            report=report,
            extra_columns=extra,
            label_names=label_names,
            provenance=_provenance(provenance, wanted, tolerance, surface),
        )
        result.out_dir = Path(out_dir)
    return result


def evaluate_images(
    cases: Mapping[str, tuple[Image, Image]],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = EVALUATE_METRICS,
    tolerance: float = 1.0,
    images: Mapping[str, Image] | None = None,
    resample: bool = False,
    surface: str = "surfels",
    report: bool = True,
    descriptive: bool = True,
    label_names: Mapping[int, str] | None = None,
    provenance: Mapping[str, object] | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> EvaluationResult:
    """Evaluate in-memory ``subject → (prediction, reference)`` label images (e.g. the demo).

    Same checks, rows and outputs as :func:`evaluate_folders`; runs in this process. ``images``
    (subject → intensity Image on the reference grid) are drawn under the report's contours
    and give the intensity columns. ``sections``: ``(title, html)`` pairs added to the report
    after its summary.

    Shape:
        prediction and reference label maps: ``(1, *spatial)`` on one grid.

    Example:
        >>> import torch
        >>> label = torch.zeros(1, 8, 8, 8, dtype=torch.int16)
        >>> label[:, 2:6, 2:6, 2:6] = 1
        >>> pred = Image(label.roll(1, dims=1), kind="label")  # shifted by one voxel
        >>> result = evaluate_images({"case01": (pred, Image(label, kind="label"))}, metrics=["dice"])
        >>> result.ok, round(result.rows[0]["dice"], 3)
        (True, 0.75)
    """
    wanted = check_metric_names(metrics)
    always = tuple(name for name in ("volume_ref_mm3", "volume_pred_mm3") if name not in wanted)
    label_tuple = tuple(int(v) for v in labels) if labels is not None else None
    result = EvaluationResult()
    tasks, outcomes = [], []
    for subject, (pred, ref) in cases.items():
        task = CaseTask(
            subject,
            Path(),
            Path(),
            label_tuple,
            wanted + always,
            float(tolerance),
            resample,
            surface,
            descriptive,
        )
        try:
            image = images.get(subject) if images else None
            outcome = evaluate_pair(subject, pred, ref, task, image)
        except (VoxelflowError, ValueError) as exc:
            outcome = CaseOutcome(error=f"{type(exc).__name__}: {exc}")
        tasks.append(task)
        outcomes.append((subject, outcome))
    _collect(outcomes, tasks, result)
    extra = region_columns(intensity=bool(images)) if descriptive else ()
    _complete_rows(result, extra)
    _check_labels_present(result, label_tuple)
    if out_dir is not None:
        from voxelflow.metrics.report import write_outputs

        def load_case(
            subject: str,
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, ...]]:
            pred, ref = cases[subject]
            image = images.get(subject) if images else None
            pixels = image.numpy()[0] if image is not None else None
            return ref.numpy()[0], pred.numpy()[0], pixels, ref.spacing

        write_outputs(
            result,
            Path(out_dir),
            wanted,
            load_case,
            report=report,
            extra_columns=extra,
            label_names=label_names,
            provenance=_provenance(provenance, wanted, tolerance, surface),
            sections=sections,
        )
        result.out_dir = Path(out_dir)
    return result
