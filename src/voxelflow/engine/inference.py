"""Inference for every application: read, preprocess with the saved state, predict, write.

:func:`infer_rows` (a run's checkpoint) and :func:`infer_with_model` (an installed zoo entry)
read each row's ``image`` columns (and any other role the row has, e.g. a regression target for
error maps), apply the run's *saved* preprocessing, and hand the application lazy
:class:`~voxelflow.applications.base.InferenceItem` s. The application returns
:class:`~voxelflow.applications.base.Prediction` s already in each input's original geometry;
this module writes their images as ``<name>_<suffix>.nii.gz`` and one row per prediction into
the application's table (``inferred.csv``, ``predictions.csv`` ...), atomically. Nothing is
ever written into an input folder. :func:`predict_subjects` does the same in memory.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from voxelflow.applications.base import InferenceContext, InferenceItem, Prediction
from voxelflow.config.schema import ExperimentConfig
from voxelflow.data.dataset import load_fitted_state
from voxelflow.data.subject import read_subject, refuse_output_inside_dataset
from voxelflow.engine.run import FITTED_STATE_FILE, build_application
from voxelflow.engine.threads import apply_threads
from voxelflow.errors import ConfigError
from voxelflow.io.image import Subject
from voxelflow.io.table import SubjectRow
from voxelflow.sampling.progress import (
    INFERENCE_STAGES,
    set_window_label,
    stage_clock,
    timed_stage,
    window_progress,
)

log = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


def infer_rows(experiment: ExperimentConfig, rows: Sequence[SubjectRow], *, run_dir: Path, out_dir: Path,
               which: str = "best") -> Path:
    """Run a trained run's checkpoint on every row; returns the path of the prediction table."""
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint

    state = load_fitted_state(run_dir / FITTED_STATE_FILE)
    app = _build(experiment, state)
    path = find_checkpoint(run_dir, which=which)
    checkpoint = load_checkpoint(path)
    logger.info("inference with the %s checkpoint: %s", which, describe_checkpoint(path, checkpoint))
    load_application_state(app, checkpoint, source=str(path))
    return predict_rows(experiment, app, state, rows, out_dir=out_dir)


def describe_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> str:
    """``'run/checkpoints/step_00000010.pt' (step 10, validation dice 0.812)`` for messages."""
    return f"{str(path)!r} ({checkpoint_summary(checkpoint)})"


def checkpoint_summary(checkpoint: Mapping[str, Any]) -> str:
    """``step 10, validation dice 0.812`` (or ``..., no validation metric``)."""
    parts = [f"step {checkpoint.get('step', '?')}"]
    metrics = checkpoint.get("metrics") or {}
    parts += [
        f"validation {name} {value:.4g}"
        for name, value in metrics.items()
        if isinstance(value, int | float)
    ]
    if not metrics:
        parts.append("no validation metric")
    return ", ".join(parts)


def _build(experiment: ExperimentConfig, state: dict[str, Any]) -> Any:
    return build_application(experiment, in_channels=len(experiment.dataset.inputs["image"]),
                             label_values=state.get("label_values"), task_state=state.get("task") or {})


def load_application_state(app: Any, checkpoint: dict[str, Any], *,
                           source: str = "checkpoint") -> None:
    """Load every module of ``app`` (and its extra state) from a checkpoint dict.

    Raises:
        ConfigError: the checkpoint lacks one of the application's modules.
        CheckpointError: the checkpoint is another application's, or shapes or keys differ
            (the mismatching keys are named).
    """
    from voxelflow.engine.checkpoint import check_application, load_module_state

    check_application(checkpoint, app, source=source)
    modules = checkpoint.get("modules") or {}
    for name, module in app.modules.items():
        if name not in modules:
            raise ConfigError(f"checkpoint has no module {name!r}; it has {sorted(modules)}")
        load_module_state(module, modules[name], name=name, source=source)
    if checkpoint.get("application_state"):
        app.load_state_dict(checkpoint["application_state"])


def inference_context(experiment: ExperimentConfig, app: Any) -> InferenceContext:
    """Device and precision from the config; the application's modules moved there, in eval mode."""
    from voxelflow.engine.device import resolve_precision, select_device

    device = select_device(experiment.system.device)
    for module in app.modules.values():
        module.to(device).eval()
    return InferenceContext(device, autocast=resolve_precision(experiment.training.amp, device).autocast)


def check_mode(experiment: ExperimentConfig, app: Any) -> None:
    """``inference.mode`` must be one the application offers (null = its default)."""
    mode = experiment.inference.mode
    if mode is not None and mode not in app.inference_modes:
        raise ConfigError(
            f"inference.mode: expected one of {list(app.inference_modes)} for "
            f"{experiment.application!r}, got {mode!r}"
        )


def prepare_items(experiment: ExperimentConfig, fitted_state: dict[str, Any],
                  subjects: Iterable[Subject]) -> Iterator[InferenceItem]:
    """Preprocess in-memory subjects with the saved state, lazily."""
    from voxelflow.transforms.preprocess import (
        Preprocessor,
        adaptation_note,
        input_assumption_warnings,
    )

    preprocessor = Preprocessor(experiment.preprocessing, fitted_state=fitted_state)
    for subject in subjects:
        note = adaptation_note(subject, experiment.preprocessing)
        if note:
            log.info("%s", note)
        for warning in input_assumption_warnings(subject, experiment.preprocessing):
            log.warning("%s", warning)
        with timed_stage("preprocess"):
            processed, record = preprocessor(subject)
        yield InferenceItem(subject.name, subject, processed, record, dict(subject.fields))


def predict_subjects(experiment: ExperimentConfig, app: Any, fitted_state: dict[str, Any],
                     subjects: Iterable[Subject], *, progress: bool = False) -> list[Prediction]:
    """In-memory inference (the Python API): subjects in, predictions in original geometry out.

    ``progress=True`` draws a sliding-window bar per subject (windows/s, time left); the API's
    other inference calls can be wrapped in :func:`voxelflow.sampling.progress.window_progress`.
    """
    check_mode(experiment, app)
    apply_threads(experiment.system.threads, workers=0, what="inference")
    ctx = inference_context(experiment, app)
    items = _named_bars(prepare_items(experiment, fitted_state, subjects))
    with torch.no_grad(), window_progress(progress):
        return list(app.run_inference(items, ctx, experiment.inference))


def predict_rows(experiment: ExperimentConfig, app: Any, fitted_state: dict[str, Any],
                 rows: Sequence[SubjectRow], *, out_dir: Path) -> Path:
    """Read, preprocess (saved state), predict and write every row; returns the table path."""
    check_mode(experiment, app)
    apply_threads(experiment.system.threads, workers=0, what="inference")
    refuse_output_inside_dataset(out_dir, experiment, rows, what="inference output folder")
    ctx = inference_context(experiment, app)
    out_dir.mkdir(parents=True, exist_ok=True)
    subjects = _read_subjects(rows, experiment)
    items = _named_bars(prepare_items(experiment, fitted_state, subjects))
    output_extension(experiment.inference.output_format, None)  # a bad format fails before any work
    written: list[dict[str, Any]] = []
    image_column = experiment.dataset.inputs["image"][0]
    sources = {row.name: row.path(image_column) for row in rows if row.columns.get(image_column)}
    if any(path.is_dir() for path in sources.values()) and experiment.inference.output_format == "auto":
        log.info("DICOM series inputs: their predictions are written as NIfTI (.nii.gz)")
    # a bar with windows/s and the time left per subject, on a terminal (logs get one line each)
    with torch.no_grad(), window_progress(None), stage_clock() as stages:
        start = time.perf_counter()
        for prediction in app.run_inference(items, ctx, experiment.inference):
            extension = output_extension(
                experiment.inference.output_format, sources.get(prediction.name)
            )
            with timed_stage("write"):
                row = write_prediction(prediction, out_dir, extension=extension)
            seconds, start = time.perf_counter() - start, time.perf_counter()
            written.append({**row, "seconds": round(seconds, 3), **stage_columns(stages)})
            log.info("%s → %s (%.1f s: %s)", prediction.name, out_dir, seconds,
                     ", ".join(f"{name} {stages.get(name, 0.0):.1f}" for name in INFERENCE_STAGES))
            stages.clear()  # the next row's stages start now, like its seconds
    app.write_extras(out_dir, written)
    return write_table(out_dir / app.prediction_table, written)


def stage_columns(stages: Mapping[str, float]) -> dict[str, float]:
    """``seconds_read`` ... ``seconds_write`` (0 for a stage that did not run), rounded to 0.1 ms:
    the prediction table's columns after ``seconds`` (the total, which also counts the network
    outside the sliding window and postprocessing)."""
    return {f"seconds_{name}": round(stages.get(name, 0.0), 4) for name in INFERENCE_STAGES}


def _read_subjects(rows: Iterable[SubjectRow], experiment: ExperimentConfig) -> Iterator[Subject]:
    """Each row's subject, read lazily (timed as the ``read`` stage)."""
    for row in rows:
        with timed_stage("read"):
            subject = read_subject(row, experiment)
        yield subject


def _named_bars(items: Iterable[InferenceItem]) -> Iterator[InferenceItem]:
    """The items, each naming the sliding-window bars drawn while it is predicted."""
    for item in items:
        set_window_label(item.name)
        yield item


def output_extension(output_format: str, source: Path | None) -> str:
    """The suffix predictions are written with: ``output_format``, or with ``auto`` the input's
    own format when voxelflow can write it (a DICOM series, or no input file: ``.nii.gz``).

    Raises:
        ConfigError: an ``output_format`` no writer handles (naming ``inference.output_format``).
    """
    from voxelflow.io.readers import split_suffix
    from voxelflow.io.writers import WRITE_SUFFIXES

    if output_format != "auto":
        wanted = output_format if output_format.startswith(".") else f".{output_format}"
        if wanted.lower() not in WRITE_SUFFIXES:
            raise ConfigError(
                f"inference.output_format: expected auto or one of {sorted(WRITE_SUFFIXES)}, "
                f"got {output_format!r}"
            )
        return wanted
    if source is None or source.is_dir():
        return ".nii.gz"
    suffix = split_suffix(source)[1]
    return suffix if suffix.lower() in WRITE_SUFFIXES and suffix.lower() != ".dcm" else ".nii.gz"


def write_prediction(
    prediction: Prediction, out_dir: Path, *, extension: str = ".nii.gz"
) -> dict[str, Any]:
    """Write a prediction's images (atomically) as ``<name>_<suffix><extension>``; returns its row."""
    from voxelflow.io.writers import write_image

    row: dict[str, Any] = {"subject": prediction.name}
    for suffix, image in prediction.images.items():
        path = out_dir / f"{prediction.name}_{suffix}{extension}"
        write_image(image, path)
        row[_column(suffix)] = str(path)
    row.update(prediction.values)
    return row


def _column(suffix: str) -> str:
    return "prediction" if suffix == "seg" else suffix


def write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One CSV row per prediction (columns: the union, in first-seen order), written atomically."""
    columns: list[str] = ["subject"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
