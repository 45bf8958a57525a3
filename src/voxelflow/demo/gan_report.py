"""Scores and pictures of the GAN demo: the network's samples against two baselines.

Every set of slices is compared with the held-out real slices of the same level, all resized to
the generated size and in original intensity units:

* the metrics of :func:`voxelflow.applications.gan.evaluation.group_metrics`;
* ``pca_frechet``: (intensities divided by the training slices' standard deviation) Fréchet distance between Gaussian fits of the two sets in the space of the
  first 16 principal components of the training slices (an FID without a pretrained network);
* ``level_accuracy``: fraction of slices whose nearest per-level mean training slice (L2) is
  the level they were generated for.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np

COMPONENTS = 16
SETS = ("network", "noise", "mean_image")


def _read_levels(
    table: Path, size: int, *, path_column: str, level_column: str
) -> dict[str, np.ndarray]:
    """Level → slices ``(N, *size)`` (channel 0) of a CSV table."""
    from voxelflow.applications.gan.evaluation import load_for_comparison

    levels: dict[str, list[np.ndarray]] = {}
    with open(table, newline="") as handle:
        for row in csv.DictReader(handle):
            path = Path(row[path_column])
            path = path if path.is_absolute() else table.parent / path
            levels.setdefault(row[level_column], []).append(
                load_for_comparison(path, size=(size, size))[0]
            )
    return {level: np.stack(slices) for level, slices in levels.items()}


def pca_frechet(
    first: np.ndarray, second: np.ndarray, basis: tuple[np.ndarray, np.ndarray]
) -> float:
    """Fréchet distance of Gaussian fits to two sets ``(N, *size)`` projected on a PCA basis."""
    from scipy.linalg import sqrtm

    mean, components = basis
    a = (first.reshape(len(first), -1) - mean) @ components.T
    b = (second.reshape(len(second), -1) - mean) @ components.T
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # a constant set (the mean-image baseline) is singular
        warnings.simplefilter("ignore")
        root = np.real(sqrtm(cov_a @ cov_b))
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def _pca_basis(slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = slices.reshape(len(slices), -1)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    return mean, vt[: min(COMPONENTS, len(vt))]


def _level_accuracy(slices: np.ndarray, level: str, means: dict[str, np.ndarray]) -> float:
    names = list(means)
    distances = np.stack(
        [((slices - means[n]) ** 2).reshape(len(slices), -1).sum(1) for n in names]
    )
    return float(np.mean([names[i] == level for i in distances.argmin(axis=0)]))


def compare_with_baselines(train_csv: Path, test_csv: Path, generated_table: Path, size: int
                           ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:  # fmt: skip
    """Scores (set → metric → mean over levels, and ``metric/level``) and the slices compared."""
    from voxelflow.applications.gan.evaluation import group_metrics

    train = _read_levels(train_csv, size, path_column="image", level_column="level")
    test = _read_levels(test_csv, size, path_column="image", level_column="level")
    generated = _read_levels(
        generated_table, size, path_column="generated", level_column="condition"
    )
    scale = float(np.concatenate(list(train.values())).std())  # PCA distances in standard units
    train, test, generated = (
        {level: slices / scale for level, slices in part.items()}
        for part in (train, test, generated)
    )
    basis = _pca_basis(np.concatenate(list(train.values())))
    means = {level: slices.mean(axis=0) for level, slices in train.items()}
    rng = np.random.default_rng(0)
    scores: dict[str, dict[str, float]] = {name: {} for name in SETS}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for level in sorted(generated):
        count = len(generated[level])
        sets = {
            "network": generated[level],
            "noise": rng.normal(train[level].mean(), train[level].std(), (count, size, size)),
            "mean_image": np.repeat(means[level][None], count, axis=0),
        }
        arrays[level] = {"real": test[level], **sets}
        for name, slices in sets.items():
            values = group_metrics(slices[:, None], test[level][:, None])
            values["pca_frechet"] = pca_frechet(slices, test[level], basis)
            values["level_accuracy"] = _level_accuracy(slices, level, means)
            scores[name].update({f"{key}/{level}": value for key, value in values.items()})
    for name in SETS:
        keys = {key.split("/")[0] for key in scores[name]}
        for key in sorted(keys):
            scores[name][key] = float(np.nanmean([v for k, v in scores[name].items()
                                                  if k.startswith(f"{key}/")]))  # fmt: skip
    return scores, arrays


def write_report(
    figures: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]], interpolation: Path
) -> None:
    """``report.md`` with the score table and two pictures beside it."""
    folder = Path(figures["report"]).parent
    stem = Path(figures["report"]).stem
    samples_png, path_png = folder / f"{stem}_samples.png", folder / f"{stem}_interpolation.png"
    _plot_samples(arrays, samples_png)
    _plot_interpolation(interpolation, path_png)
    scores = figures["scores"]
    metrics = ("histogram_wasserstein", "histogram_l1", "mean_image_mae", "diversity_ratio",
               "pca_frechet", "level_accuracy")  # fmt: skip
    lines = [
        "# voxelflow demo: conditional GAN (axial MRI slices per level)", "",
        "Generated slices vs the slices of held-out subjects, per level (inferior, middle, superior), "
        "mean over levels. Lower is better except level accuracy (higher) and diversity ratio "
        "(1 = as varied as real slices).", "",
        "| set | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|",
    ]  # fmt: skip
    for name in SETS:
        lines.append(f"| {name} | " + " | ".join(f"{scores[name][m]:.3f}" for m in metrics) + " |")
    lines += [
        "", "Baselines: `noise` = Gaussian noise with each level's training mean and standard "
        "deviation; `mean_image` = each level's mean training slice, repeated (level accuracy 1 "
        "by construction, no variability).", "",
        f"Data: {_source(figures['source'])}. **All subjects derive from ONE anatomy** (one "
        "template, deformed, with bias fields and noise); the MNI152 template is left-right "
        "symmetric. "
        "This shows the pipeline works, not that it models real anatomical variability.", "",
        f"Time: {figures['seconds']:.0f} s in all, {figures['train_seconds']:.0f} s training, on a "
        "shared 2-core CPU.", "",
        f"![samples]({samples_png.name})", "",
        "Rows: levels. Columns: three held-out real slices, then generated samples.", "",
        f"![interpolation]({path_png.name})", "",
        "Fixed noise, conditioning moving linearly from `inferior` to `superior`.", "",
        f"Config: `{figures['config']}`; run: `{figures['run_dir']}`.",
    ]  # fmt: skip
    Path(figures["report"]).write_text("\n".join(lines) + "\n")


def _source(source: str) -> str:
    return "the MNI152 2009 T1 template (nilearn)" if source == "mni152" else "synthetic phantoms"


def _plot_samples(arrays: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 9
    figure, axes = plt.subplots(len(arrays), columns, figsize=(columns * 1.3, len(arrays) * 1.4),
                                squeeze=False)  # fmt: skip
    for row, (level, sets) in enumerate(arrays.items()):
        spread = np.linspace(0, len(sets["real"]) - 1, 3).astype(int)  # low, middle, high slice
        panels = [("real", sets["real"][k]) for k in spread]
        panels += [("generated", s) for s in sets["network"][:6]]
        low, high = np.percentile(sets["real"], [1, 99])
        for col, axis in enumerate(axes[row]):
            axis.axis("off")
            if col < len(panels):
                axis.imshow(panels[col][1].T, cmap="gray", origin="lower", vmin=low, vmax=high)
                axis.set_title(f"{level}: {panels[col][0]}" if col in (0, 3) else "", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_interpolation(folder: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voxelflow.applications.gan.evaluation import load_for_comparison

    files = sorted(folder.glob("interpolate_*_generated.nii.gz"))
    if not files:
        return
    slices = [load_for_comparison(f)[0] for f in files]
    figure, axes = plt.subplots(1, len(slices), figsize=(len(slices) * 1.3, 1.5), squeeze=False)
    low, high = np.percentile(np.stack(slices), [1, 99])
    for axis, image in zip(axes[0], slices):
        axis.axis("off")
        axis.imshow(image.T, cmap="gray", origin="lower", vmin=low, vmax=high)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
