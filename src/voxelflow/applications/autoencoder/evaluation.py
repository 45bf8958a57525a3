"""Helpers of the autoencoder application: window grids, intensity inversion, evaluation.

* the window grid of generated samples and interpolation paths is
  :func:`voxelflow.applications.common.resized_affine` (shared with the GAN).
* :class:`IntensityInverse` — the per-channel affine map from normalised intensities back to the
  file's units, fitted per subject between its geometry-only preprocessed image and its
  normalised one: exact for ``zscore`` and unclipped rescaling, a least-squares affine
  approximation for piecewise-linear steps (histogram standardisation), where a warning says so.
* :func:`evaluate_reconstructions` — per-subject MAE, RMSE, PSNR, SSIM and NCC of reconstructions
  against the images they came from, a summary CSV and a PNG of central slices.

Example:
    >>> from voxelflow.applications.common import resized_affine
    >>> affine = resized_affine(np.diag([1.0, 1.0, 1.0, 1.0]), (64, 64, 64), (32, 32, 32))
    >>> float(affine[0, 0]), float(affine[0, 3])
    (2.0, 0.5)
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voxelflow.applications.common import middle_slice
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.table import read_prediction_table

if TYPE_CHECKING:
    from voxelflow.applications.autoencoder.application import AutoencoderApplication
    from voxelflow.applications.base import InferenceItem, TrainingContext
    from voxelflow.config.schema import PreprocessingConfig
    from voxelflow.io.image import Image
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)

#: metrics of :func:`evaluate_reconstructions`, in the order written.
RECONSTRUCTION_METRICS = ("mae", "rmse", "psnr", "ssim", "ncc")
#: relative residual above which the intensity inversion is reported as approximate.
INVERSE_TOLERANCE = 1e-3
#: SSIM's Gaussian window (voxels); smaller images get no SSIM.
SSIM_WINDOW = 11


@dataclass(frozen=True)
class IntensityInverse:
    """``raw = normalised * scale + offset`` per channel.

    Attributes:
        scale: per-channel slope ``(C,)``.
        offset: per-channel intercept ``(C,)``.
        residual: RMS error of the fit relative to the raw standard deviation (0 when exact).
    """

    scale: np.ndarray
    offset: np.ndarray
    residual: float = 0.0

    @classmethod
    def fit(cls, raw: np.ndarray, normalized: np.ndarray) -> IntensityInverse:
        """Least-squares fit of raw on normalised values, clipped plateaus left out.

        Shape:
            raw and normalized: ``(C, *spatial)`` on the same grid.
        """
        scales, offsets, residuals = [], [], []
        for raw_channel, norm_channel in zip(raw, normalized):
            r = np.asarray(raw_channel, dtype=np.float64).ravel()
            n = np.asarray(norm_channel, dtype=np.float64).ravel()
            inside = (n > n.min()) & (n < n.max())
            if inside.sum() >= 2:  # voxels clipped to a bound carry no slope information
                r, n = r[inside], n[inside]
            variance = float(n.var())
            scale = (
                float(((n - n.mean()) * (r - r.mean())).mean() / variance) if variance > 0 else 0.0
            )
            offset = float(r.mean() - scale * n.mean())
            error = float(np.sqrt(np.mean((scale * n + offset - r) ** 2)))
            scales.append(scale)
            offsets.append(offset)
            residuals.append(error / max(float(r.std()), 1e-12))
        return cls(np.asarray(scales), np.asarray(offsets), max(residuals, default=0.0))

    def __call__(self, data: torch.Tensor) -> torch.Tensor:
        """Shape: ``(C, *spatial)`` → same."""
        shape = (-1,) + (1,) * (data.ndim - 1)
        scale = torch.as_tensor(self.scale, dtype=data.dtype).reshape(shape)
        offset = torch.as_tensor(self.offset, dtype=data.dtype).reshape(shape)
        return data * scale + offset


def fit_intensity_inverse(
    item: InferenceItem, preprocessing: PreprocessingConfig | None
) -> IntensityInverse:
    """The inverse normalisation of one inference item (original and processed ``image``).

    The geometry-only preprocessing (reorient, resample, crop; no normalisation) of the original
    image is recomputed so that raw and normalised voxels correspond one to one.

    Args:
        item: an :class:`~voxelflow.applications.base.InferenceItem`.
        preprocessing: the run's :class:`~voxelflow.config.schema.PreprocessingConfig`.

    Raises:
        ConfigError: no preprocessing config (an application built without one).
    """
    from voxelflow.io.image import Subject
    from voxelflow.transforms.preprocess import Preprocessor

    if preprocessing is None:
        raise ConfigError(
            "task.intensity_units: 'original' needs the run's preprocessing config to invert the "
            "normalisation, got none; build the application with from_experiment or use 'normalized'"
        )
    geometry_only = Preprocessor(preprocessing.model_copy(update={"normalization": []}))
    subject = Subject(item.name, {"image": item.original["image"]})
    raw = geometry_only.geometry(subject)[0]["image"].numpy()
    inverse = IntensityInverse.fit(raw, item.processed["image"].numpy())
    if inverse.residual > INVERSE_TOLERANCE:
        log.warning(
            "subject %r: the normalisation is not affine (relative residual %.3g); reconstructed "
            "intensities are an affine approximation of the original units",
            item.name,
            inverse.residual,
        )
    return inverse


def _read_reference(row: SubjectRow, columns: Sequence[str]) -> Image:
    """The row's ``image`` columns stacked as channels (an :class:`~voxelflow.io.image.Image`)."""
    from voxelflow.data.dataset import read_image_file

    parts = [read_image_file(row.path(column), kind="intensity") for column in columns]
    data = torch.cat([part.data.float() for part in parts])
    return parts[0].with_data(data)


def evaluate_reconstructions(
    predictions: Path, rows: Sequence[SubjectRow], out_dir: Path, *, image_columns: Sequence[str]
) -> dict[str, float]:
    """Score reconstructions (``recon`` column) against the images of the same subjects.

    Args:
        predictions: the ``reconstructions.csv`` written by inference.
        rows: dataset rows (:class:`~voxelflow.io.table.SubjectRow`) holding the images.
        out_dir: receives ``per_subject.csv``, ``summary.csv`` and ``reconstructions.png``.
        image_columns: table columns of the ``image`` role.

    Returns:
        mean of each metric over subjects (``mae``, ``rmse``, ``psnr``, ``ssim``, ``ncc``).

    Raises:
        DataError: a predicted subject has no row, or a file cannot be read.
        GeometryError: a reconstruction is not on its image's grid.
    """
    from voxelflow.io.image import check_same_grid
    from voxelflow.io.readers import read_image

    by_name = {row.name: row for row in rows}
    table = read_prediction_table(
        predictions, columns=["recon"], hint=" (a reconstruct run: inference.mode reconstruct)"
    )
    unknown = [r["subject"] for r in table if r["subject"] not in by_name]
    if unknown:
        raise DataError(
            f"{str(predictions)!r}: subjects {unknown} have no row in the dataset table "
            f"(known: {sorted(by_name)[:20]})"
        )
    per_subject: list[dict[str, Any]] = []
    pictures: list[tuple[str, np.ndarray, np.ndarray]] = []
    for entry in table:
        reference = _read_reference(by_name[entry["subject"]], image_columns)
        reconstruction = read_image(entry["recon"])
        check_same_grid(reference, reconstruction, what=f"reconstruction of {entry['subject']!r}")
        figures = _channel_mean_metrics(reconstruction.numpy(), reference.numpy())
        per_subject.append({"subject": entry["subject"], **figures})
        if len(pictures) < 4:
            pictures.append((entry["subject"], reference.numpy()[0], reconstruction.numpy()[0]))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _write_summaries(per_subject, out_dir)
    plot_reconstructions(pictures, out_dir / "reconstructions.png")
    return summary


def _channel_mean_metrics(reconstruction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """:data:`RECONSTRUCTION_METRICS` per channel (each with its own data range), averaged.

    Shape:
        reconstruction and reference ``(C, *spatial)``.
    """
    channels = [_metrics(p, r) for p, r in zip(reconstruction, reference)]
    return {k: float(np.mean([c[k] for c in channels])) for k in RECONSTRUCTION_METRICS}


def _metrics(reconstruction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """One channel's metrics; SSIM is NaN for images smaller than its 11-voxel window."""
    from voxelflow.metrics import regression as metrics

    data_range = metrics.reference_range(reference)
    values = {
        "mae": metrics.mean_absolute_error(reconstruction, reference),
        "rmse": metrics.root_mean_squared_error(reconstruction, reference),
        "psnr": metrics.psnr(reconstruction, reference, data_range=data_range),
        "ncc": metrics.normalized_cross_correlation(reconstruction, reference),
        "ssim": math.nan,
    }
    if min(reference.shape) >= SSIM_WINDOW:
        values["ssim"] = metrics.ssim(reconstruction, reference, data_range=data_range)
    return values


def _write_summaries(per_subject: list[dict[str, Any]], out_dir: Path) -> dict[str, float]:
    """``per_subject.csv`` and ``summary.csv`` (mean, std, min, max); returns the means."""
    with open(out_dir / "per_subject.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", *RECONSTRUCTION_METRICS])
        writer.writeheader()
        writer.writerows(per_subject)
    summary: dict[str, float] = {}
    with open(out_dir / "summary.csv", "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["metric", "mean", "std", "min", "max", "subjects"])
        for name in RECONSTRUCTION_METRICS:
            values = np.array([row[name] for row in per_subject], dtype=np.float64)
            finite = values[np.isfinite(values)]
            mean = float(finite.mean()) if finite.size else math.nan
            summary[name] = mean
            stats = [
                float(f(finite)) if finite.size else math.nan for f in (np.std, np.min, np.max)
            ]
            table.writerow([name, mean, *stats, len(values)])
    return summary


def plot_reconstructions(
    pictures: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path
) -> Path | None:
    """One row per subject: image, reconstruction, |difference| (central slices), as PNG."""
    if not pictures:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(pictures), 3, figsize=(9, 3 * len(pictures)), squeeze=False)
    for row, (name, reference, reconstruction) in zip(axes, pictures):
        ref, rec = middle_slice(reference), middle_slice(reconstruction)
        low, high = float(ref.min()), float(ref.max())
        panels = [
            (ref, "image", low, high),
            (rec, "reconstruction", low, high),
            (np.abs(rec - ref), "|difference|", 0.0, high - low),
        ]
        for axis, (panel, title, vmin, vmax) in zip(row, panels):
            axis.imshow(np.rot90(panel), cmap="gray", vmin=vmin, vmax=vmax)
            axis.set_title(f"{name}: {title}", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def latent_size_of(network: torch.nn.Module) -> int:
    size = getattr(network, "latent_size", None)
    if not isinstance(size, int):
        raise ConfigError(
            f"network: expected a 'latent_size' attribute to sample latents, got "
            f"{type(network).__name__} without one"
        )
    return size


def find_latents(
    app: AutoencoderApplication,
    items: Iterable[InferenceItem],
    names: list[str],
    ctx: TrainingContext,
) -> dict[str, torch.Tensor]:
    """Latent means of the named subjects; reads items until both are found."""
    found: dict[str, torch.Tensor] = {}
    seen: list[str] = []
    for item in items:
        seen.append(item.name)
        if item.name in names and item.name not in found:
            found[item.name] = app.encode(item.processed["image"].data.float()[None], ctx)[0][0]
        if len(found) == len(names):
            return found
    missing = [name for name in names if name not in found]
    shown = seen[:20] + (["..."] if len(seen) > 20 else [])
    raise DataError(
        f"inference.interpolate: expected subjects among the {len(seen)} inputs, got unknown "
        f"{missing}; available subjects: {shown}"
    )
