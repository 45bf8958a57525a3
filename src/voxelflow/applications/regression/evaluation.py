"""Evaluation of regression and super-resolution inference runs against the table's references.

:func:`evaluate_regression` reads the prediction table written by inference (``inferred.csv``:
``subject``, ``pred`` and, for super-resolution in ``degrade`` mode, ``input``), reads each
subject's reference from the dataset rows (the ``target`` columns; for super-resolution the
high-resolution ``image`` columns), enforces the one grid policy (or resamples the prediction
linearly onto the reference when ``dataset.resample_to_first`` is set) and writes into ``out_dir``:

* ``regression_metrics.csv``: one row per subject: MAE, ME, RMSE, PSNR, SSIM, NCC, the data range
  used by PSNR/SSIM (the reference's ``max − min`` inside the mask), and ``baseline_*`` columns for
  the linearly upsampled input when the table has one;
* ``regression_summary.csv``: mean, standard deviation and median of each column over subjects;
* ``regression_examples.png``: middle slices of input, prediction, reference and error.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelflow.applications.common import middle_slice
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.table import read_prediction_table
from voxelflow.metrics import regression as M

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Image, ImageKind
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)

METRICS = ("mae", "me", "rmse", "psnr", "ssim", "ncc")


def image_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    ssim: bool = True,
) -> dict[str, float]:
    """MAE, ME, RMSE, PSNR (and SSIM, NCC) of one image pair, with the data range used.

    Args:
        prediction: predicted image ``(C, *spatial)``.
        reference: reference of the same shape.
        mask: boolean ``(*spatial)`` restricting the voxels compared (SSIM uses every voxel).
        ssim: also compute SSIM (mean over channels; NaN when an axis is shorter than its
            11-voxel window) and NCC.

    Shape:
        prediction, reference: ``(C, *spatial)``; mask: ``(*spatial)``
    """
    full_mask = None if mask is None else np.broadcast_to(mask, reference.shape)
    data_range = M.reference_range(reference, mask=full_mask)
    scores = {
        "mae": M.mean_absolute_error(prediction, reference, mask=full_mask),
        "me": M.mean_error(prediction, reference, mask=full_mask),
        "rmse": M.root_mean_squared_error(prediction, reference, mask=full_mask),
        "psnr": M.psnr(prediction, reference, data_range=data_range, mask=full_mask),
    }
    if ssim:
        scores["ssim"] = _ssim(prediction, reference, data_range)
        scores["ncc"] = M.normalized_cross_correlation(prediction, reference, mask=full_mask)
    scores["data_range"] = data_range
    return scores


def _ssim(prediction: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    if min(reference.shape[1:]) < 11 or not data_range > 0:
        return math.nan
    return float(
        np.mean([M.ssim(p, r, data_range=data_range) for p, r in zip(prediction, reference)])
    )


def evaluate_regression(
    experiment: ExperimentConfig,
    *,
    predictions: Path,
    rows: Sequence[SubjectRow],
    out_dir: Path,
    reference_role: str,
    mask_role: str | None = None,
) -> dict[str, float]:
    """Score every prediction of an inference table against its row's reference.

    Args:
        experiment: the run's Experiment (dataset inputs and grid policy).
        predictions: the ``inferred.csv`` written by inference.
        rows: dataset rows holding the references.
        out_dir: folder for the CSVs and the PNG (created).
        reference_role: ``target``, or ``image`` for super-resolution.
        mask_role: role of the rows restricting the metrics, or None.

    Returns:
        the mean of each metric over subjects (``mae``, ``psnr`` ..., ``baseline_psnr`` ...).

    Raises:
        ConfigError: a super-resolution table without ``input`` column (mode ``predict`` has no
            reference to score against).
        DataError: predictions whose subject has no row or no reference (listed), or an empty table.
        GeometryError: a prediction on another grid than its reference (both files named).
    """
    table = read_prediction_table(predictions, columns=["pred"], require_rows=True)
    if reference_role == "image" and any(not r.get("input") for r in table):
        raise ConfigError(
            f"{str(predictions)!r}: super-resolution evaluation expects the `input` column written "
            "by inference.mode degrade (a predict-mode run has no high-resolution reference)"
        )
    columns = experiment.dataset.inputs[reference_role]
    by_name = {row.name: row for row in rows}
    missing = [
        r["subject"]
        for r in table
        if r["subject"] not in by_name
        or not all(by_name[r["subject"]].columns.get(c) for c in columns)
    ]
    if missing:
        raise DataError(
            f"{str(predictions)!r}: expected a reference ({reference_role} columns {columns}) in "
            f"the dataset table for every predicted subject, missing for {missing}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    per_subject, examples = [], []
    for entry in table:
        row = by_name[entry["subject"]]
        scores, example = _score_subject(experiment, entry, row, reference_role, mask_role)
        per_subject.append(scores)
        examples.append(example)
    summary = _write_outputs(per_subject, out_dir)
    _plot_examples(examples[:3], out_dir / "regression_examples.png")
    return summary


def _read_stacked(
    row: SubjectRow, columns: Sequence[str], *, kind: ImageKind = "intensity"
) -> Image:
    from voxelflow.io.image import check_same_grid
    from voxelflow.io.readers import read_image

    parts = [read_image(row.path(c), kind=kind) for c in columns]
    for part in parts[1:]:
        check_same_grid(parts[0], part, what=f"reference images of subject {row.name!r}")
    if len(parts) == 1:
        return parts[0]
    import torch

    return parts[0].with_data(torch.cat([p.data.float() for p in parts]))


def _on_reference_grid(
    image: Image, reference: Image, experiment: ExperimentConfig, name: str
) -> np.ndarray:
    """The prediction's array on the reference grid: same grid required unless resampling is on."""
    from voxelflow.io.image import check_same_grid, grid_difference
    from voxelflow.transforms import functional as F

    if grid_difference(reference, image) is None or not experiment.dataset.resample_to_first:
        check_same_grid(reference, image, what=f"prediction and reference of subject {name!r}")
        return image.numpy().astype(np.float64)
    data = F.resample(
        image.data.float(),
        image.affine,
        target_shape=reference.spatial_shape,
        target_affine=reference.affine,
        interpolation="linear",
    )
    return data.numpy().astype(np.float64)


def _score_subject(
    experiment: ExperimentConfig,
    entry: dict[str, str],
    row: SubjectRow,
    reference_role: str,
    mask_role: str | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from voxelflow.io.readers import read_image

    name = entry["subject"]
    reference = _read_stacked(row, experiment.dataset.inputs[reference_role])
    ref = reference.numpy().astype(np.float64)
    pred = _on_reference_grid(read_image(Path(entry["pred"])), reference, experiment, name)
    mask = None
    if mask_role and all(row.columns.get(c) for c in experiment.dataset.inputs[mask_role]):
        mask_image = _read_stacked(row, experiment.dataset.inputs[mask_role])
        mask = np.any(_on_reference_grid(mask_image, reference, experiment, name) != 0, axis=0)
    scores: dict[str, Any] = {"subject": name, **image_metrics(pred, ref, mask=mask)}
    example = {"prediction": pred[0], "reference": ref[0]}
    if entry.get("input"):
        baseline = _on_reference_grid(read_image(Path(entry["input"])), reference, experiment, name)
        for key, value in image_metrics(baseline, ref, mask=mask).items():
            if key != "data_range":
                scores[f"baseline_{key}"] = value
        example["input"] = baseline[0]
    return scores, example


def _write_outputs(per_subject: list[dict[str, Any]], out_dir: Path) -> dict[str, float]:
    columns = list(per_subject[0])
    with open(out_dir / "regression_metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(per_subject)
    summary: dict[str, float] = {}
    lines = []
    for column in columns[1:]:
        values = np.array([float(r[column]) for r in per_subject], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        summary[column] = mean
        lines.append(
            {
                "metric": column,
                "count": int(finite.size),
                "mean": mean,
                "std": float(finite.std()) if finite.size else math.nan,
                "median": float(np.median(finite)) if finite.size else math.nan,
            }
        )
    with open(out_dir / "regression_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["metric", "count", "mean", "std", "median"])
        writer.writeheader()
        writer.writerows(lines)
    log.info(
        "regression evaluation of %d subjects: %s",
        len(per_subject),
        ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if k in METRICS),
    )
    return summary


def _plot_examples(examples: list[dict[str, np.ndarray]], path: Path) -> None:
    """Rows of (input), prediction, reference, |error| middle slices, one row per subject."""
    from matplotlib.figure import Figure

    if not examples:
        return
    names = [n for n in ("input", "prediction", "reference") if n in examples[0]] + ["|error|"]
    figure = Figure(figsize=(2.6 * len(names), 2.6 * len(examples)))
    axes = figure.subplots(len(examples), len(names), squeeze=False)
    for row_axes, example in zip(axes, examples):
        low, high = np.percentile(example["reference"], [1, 99])
        error = np.abs(example["prediction"] - example["reference"])
        for ax, name in zip(row_axes, names):
            volume = error if name == "|error|" else example[name]
            limits = (
                {"vmin": 0.0, "vmax": max(high - low, 1e-6) / 4}
                if name == "|error|"
                else {"vmin": low, "vmax": high}
            )
            ax.imshow(
                np.rot90(middle_slice(volume)),
                cmap="magma" if name == "|error|" else "gray",
                **limits,
            )
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def image_pair_rows(cases: Mapping[str, tuple[Image, Image]]) -> list[dict[str, Any]]:
    """Per-subject metrics of in-memory prediction/reference pairs (the Python API's table).

    One row per subject, or per subject and channel (a ``channel`` column) when the images have
    several channels.

    Shape:
        prediction and reference of a subject: ``(C, *spatial)`` on one grid.

    Raises:
        GeometryError: a pair on different grids. DataError: different channel counts.
    """
    from voxelflow.io.image import check_same_grid

    rows = []
    for name, (pred, ref) in cases.items():
        check_same_grid(pred, ref, what=f"prediction and reference of subject {name!r}")
        if pred.num_channels != ref.num_channels:
            raise DataError(
                f"subject {name!r}: expected the prediction's {pred.num_channels} channel(s) in the "
                f"reference, got {ref.num_channels}"
            )
        for channel in range(ref.num_channels):  # one row per channel (a column when several)
            values = M.regression_metrics(pred.numpy()[channel], ref.numpy()[channel])
            extra = {"channel": channel} if ref.num_channels > 1 else {}
            rows.append({"subject": name, **extra, **values})
    return rows
