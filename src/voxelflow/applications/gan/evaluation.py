"""Scoring generated images against real ones: distribution distances per conditioning group.

A GAN has no one-to-one reference, so :func:`evaluate_generated` compares *sets*: the ``sample``
rows of the prediction table (``generated.csv``) grouped by their conditioning (class level,
source subject, or one group when unconditioned) against the real ``image`` of the dataset rows
of the same group. Real images are reoriented to the generated images' orientation and resized to
their size. Intensities are compared in the units written (original or, with
``task.output_intensity: normalized``, per-image z-scores of both sides); distances are divided
by the reference group's standard deviation, so they are unitless:

* ``histogram_wasserstein``: 1-D Wasserstein distance between the pooled voxel intensities;
* ``histogram_l1``: L1 distance between 64-bin intensity histograms (0 = same, 2 = disjoint);
* ``mean_image_mae``: mean absolute difference of the mean generated and mean real image;
* ``diversity_ratio``: mean voxel-wise standard deviation across generated images over the same
  across real ones (1 = as varied; 0 = mode collapse; NaN with fewer than two of either).

Writes ``per_group.csv``, ``summary.csv`` and ``samples.png`` (real mean, generated mean and
three samples per group) into ``out_dir``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelflow.applications.common import middle_slice
from voxelflow.errors import DataError
from voxelflow.io.table import read_prediction_table

if TYPE_CHECKING:
    from voxelflow.applications.gan.task import GanTask
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)

METRICS = ("histogram_wasserstein", "histogram_l1", "mean_image_mae", "diversity_ratio")


def histogram_wasserstein(generated: np.ndarray, real: np.ndarray) -> float:
    """1-D Wasserstein (earth mover's) distance between the value distributions of two arrays."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.ravel(generated), np.ravel(real)))


def histogram_l1(generated: np.ndarray, real: np.ndarray, *, bins: int = 64) -> float:
    """L1 distance between normalised histograms on the joint range, in ``[0, 2]``."""
    values = [np.ravel(generated).astype(np.float64), np.ravel(real).astype(np.float64)]
    low = min(v.min() for v in values)
    high = max(max(v.max() for v in values), low + 1e-12)
    p, q = (np.histogram(v, bins=bins, range=(low, high))[0] / v.size for v in values)
    return float(np.abs(p - q).sum())


def group_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The four metrics of one group.

    Shape:
        generated ``(N, C, *size)``, real ``(M, C, *size)`` on the same grid.
    """
    scale = max(float(real.std()), 1e-12)
    diversity = math.nan
    if len(generated) > 1 and len(real) > 1:
        diversity = float(generated.std(axis=0).mean() / max(real.std(axis=0).mean(), 1e-12))
    return {
        "histogram_wasserstein": histogram_wasserstein(generated, real) / scale,
        "histogram_l1": histogram_l1(generated, real),
        "mean_image_mae": float(np.abs(generated.mean(axis=0) - real.mean(axis=0)).mean()) / scale,
        "diversity_ratio": diversity,
    }


def evaluate_generated(
    experiment: ExperimentConfig,
    task: GanTask,
    *,
    predictions: Path,
    rows: Sequence[SubjectRow],
    out_dir: Path,
) -> dict[str, float]:
    """Score the ``sample`` rows of a prediction table against the real images in ``rows``.

    Returns:
        means over groups of each metric, ``groups`` and ``generated`` counts; per group as
        ``metric/group``.

    Raises:
        DataError: no sample rows in the table, or no group with real images.
    """
    generated = _read_generated(Path(predictions), task)
    image_column = experiment.dataset.inputs["image"][0]
    table: list[dict[str, Any]] = []
    pictures: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group, paths in generated.items():
        references = [r.path(image_column) for r in rows
                      if _group_of(r, task) == group and r.columns.get(image_column)]  # fmt: skip
        if not references:
            log.warning("group %r: no real image among the %d rows; not scored", group, len(rows))
            continue
        reals, fakes = _group_arrays(paths, references, task.output_intensity == "normalized")
        table.append({"group": group, "generated": len(fakes), "reference": len(reals),
                      **group_metrics(fakes, reals)})  # fmt: skip
        pictures[group] = (reals, fakes)
    if not table:
        raise DataError(
            f"{predictions}: expected real images for the generated groups {sorted(generated)} in "
            f"the dataset table, found none"
        )
    summary = _summarise(table)
    _write_csv(Path(out_dir) / "per_group.csv", table)
    _write_csv(Path(out_dir) / "summary.csv", [summary])
    _plot(pictures, Path(out_dir) / "samples.png")
    return summary


def _group_arrays(
    generated: Sequence[Path], references: Sequence[Path], normalise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(real (M, C, *size), generated (N, C, *size))``, references resized to the generated size."""
    fakes = np.stack([load_for_comparison(path, normalise=normalise) for path in generated])
    size = fakes.shape[2:]
    reals = [load_for_comparison(path, size=size, normalise=normalise) for path in references]
    return np.stack(reals), fakes


def _read_generated(path: Path, task: GanTask) -> dict[str, list[Path]]:
    """``sample`` rows of the prediction table: group → generated image paths."""
    table = read_prediction_table(path, columns=["generated"])
    rows = [row for row in table if row.get("mode") == "sample"]
    if not rows:
        raise DataError(f"{path}: expected rows of inference.mode 'sample', got none")
    groups: dict[str, list[Path]] = {}
    for row in rows:
        key = row.get("source") if task.conditioning_role else row.get("condition", "all")
        groups.setdefault(str(key or "all"), []).append(path.parent / Path(row["generated"]).name)
    return groups


def _group_of(row: SubjectRow, task: GanTask) -> str | None:
    if task.conditioning_role:
        return str(row.name)
    if task.conditioning_column:
        value = row.columns.get(task.conditioning_column)
        return None if value is None else str(value)
    return "all"


def load_for_comparison(
    path: Path, *, size: Sequence[int] | None = None, normalise: bool = False
) -> np.ndarray:
    """An image as ``(C, *spatial)`` float64, reoriented to RAS, its singleton slice axis dropped
    (a 2D image written as a one-slice NIfTI), resized to ``size`` if given, z-scored if
    ``normalise``."""
    from voxelflow.io.readers import read_image
    from voxelflow.sampling.resize import resize_volume
    from voxelflow.transforms.functional import reorient

    image = read_image(path)
    data, affine = image.data.float(), image.affine
    if data.ndim == 4 and data.shape[-1] == 1:  # a 2D image written as a one-slice NIfTI
        data = data[..., 0]
    data = reorient(data, affine, "RAS")[0]
    if size is not None:
        data = resize_volume(data, size)
    values = data.numpy().astype(np.float64)
    if normalise:
        values = (values - values.mean()) / max(float(values.std()), 1e-12)
    return values


def _summarise(table: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in METRICS:
        finite = [row[name] for row in table if not math.isnan(row[name])]
        summary[name] = float(np.mean(finite)) if finite else math.nan
    summary["groups"] = float(len(table))
    summary["generated"] = float(sum(row["generated"] for row in table))
    for row in table:
        for name in METRICS:
            summary[f"{name}/{row['group']}"] = row[name]
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot(pictures: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Per group: real mean, generated mean, three generated samples (middle slice, channel 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 5
    figure, axes = plt.subplots(len(pictures), columns, figsize=(2 * columns, 2 * len(pictures)),
                                squeeze=False)  # fmt: skip
    for row, (group, (reals, fakes)) in enumerate(pictures.items()):
        panels = [("real mean", reals.mean(axis=0)), ("generated mean", fakes.mean(axis=0))]
        panels += [(f"sample {i}", fakes[i]) for i in range(min(3, len(fakes)))]
        low, high = np.percentile(reals, [1, 99])
        for col in range(columns):
            axis = axes[row, col]
            axis.axis("off")
            if col < len(panels):
                title, volume = panels[col]
                axis.imshow(middle_slice(volume[0]).T, cmap="gray", origin="lower", vmin=low, vmax=high)
                axis.set_title(f"{group}: {title}" if col == 0 else title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


__all__ = [
    "evaluate_generated",
    "group_metrics",
    "histogram_l1",
    "histogram_wasserstein",
    "load_for_comparison",
]
