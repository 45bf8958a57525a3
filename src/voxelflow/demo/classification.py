"""``voxelflow demo --app classification``: the anatomical level of axial MRI slices.

Volumes are made from the real MNI152 2009 T1 template (nilearn) by
:func:`voxelflow.demo.data._make_subject` (random smooth deformation, bias field, intensity
scaling, Rician noise). Their axial slices through the brain are written as 2D NRRD images; each
slice gets a *level* (the brain's height cut into four equal bins: inferior, lower_middle,
upper_middle, superior) and its height ``z_mm`` in template millimetres. Two runs of the
classification application share one preprocessing cache:

* classification of the level (baseline: the training split's majority class);
* image-level regression of ``z_mm`` (baseline: the training mean).

Test slices come from volumes never seen in training (validation is split by volume too). All
volumes derive from ONE anatomy, so the figures show the pipeline works, not that it generalises
to other brains; the template is symmetric, so left-right questions would not be learnable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.demo.data import config_yaml, write_tables
from voxelflow.errors import DataError

LEVELS = ("inferior", "lower_middle", "upper_middle", "superior")


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo (the full one takes minutes on a 2-core CPU, ``quick`` seconds)."""

    num_volumes: int  # training + validation volumes
    num_test_volumes: int
    spacing: float  # mm
    slice_step: int  # every n-th axial slice
    window: int
    features: list[int]
    iterations: int
    validate_every: int
    batch_size: int


FULL = DemoSettings(
    num_volumes=10,
    num_test_volumes=3,
    spacing=3.0,
    slice_step=1,
    window=64,
    features=[8, 16, 32, 64],
    iterations=500,
    validate_every=100,
    batch_size=16,
)
QUICK = DemoSettings(
    num_volumes=3,
    num_test_volumes=1,
    spacing=4.0,
    slice_step=2,
    window=32,
    features=[4, 8, 16],
    iterations=12,
    validate_every=6,
    batch_size=8,
)


@dataclass(frozen=True)
class SliceData:
    """The generated slice tables and what the levels mean."""

    train_csv: Path
    test_csv: Path
    level_edges_mm: list[float]  # len(LEVELS) + 1 heights (template mm)


def level_edges(template: tuple[np.ndarray, ...]) -> list[float]:
    """Heights (mm) cutting the template brain (GM + WM probability > 0.5) into equal bins."""
    _, gm, wm, affine = template
    rows = np.nonzero(((gm + wm) > 0.5).any(axis=(0, 1)))[0]
    low, high = (float(affine[2, 3] + affine[2, 2] * k) for k in (rows.min(), rows.max()))
    return [float(v) for v in np.linspace(low, high, len(LEVELS) + 1)]


def _write_slice(image: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """A 2D ``(X, Y)`` slice as NRRD, oriented so that it reads back as RAS."""
    import SimpleITK as sitk

    itk = sitk.GetImageFromArray(np.ascontiguousarray(image.T))  # SimpleITK arrays are (Y, X)
    itk.SetSpacing((float(affine[0, 0]), float(affine[1, 1])))
    itk.SetDirection((-1.0, 0.0, 0.0, -1.0))  # LPS storage of RAS axes
    itk.SetOrigin((-float(affine[0, 3]), -float(affine[1, 3])))
    sitk.WriteImage(itk, str(path))


def write_volume_slices(
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    *,
    volume: str,
    edges: list[float],
    step: int = 1,
) -> list[dict[str, Any]]:
    """Write every ``step``-th axial slice through the brain (≥ 2 % brain voxels, between the
    outer level edges) of one volume; returns their table rows (image path relative to the
    folder's parent, volume, level, height ``z_mm``)."""
    brain = (label > 0).reshape(-1, label.shape[2]).mean(axis=0)
    rows = []
    for k in range(0, image.shape[2], step):
        height = float(affine[2, 3] + affine[2, 2] * k)
        if brain[k] < 0.02 or not edges[0] <= height <= edges[-1]:
            continue
        index = min(int(np.searchsorted(edges, height, side="right")) - 1, len(LEVELS) - 1)
        path = folder / f"{volume}_z{k:03d}.nrrd"
        _write_slice(image[:, :, k], affine, path)
        rows.append(
            {
                "subject": path.stem,
                "image": f"{folder.name}/{path.name}",
                "volume": volume,
                "level": LEVELS[index],
                "z_mm": height,
            }
        )
    return rows


def make_slice_dataset(out_dir: Path, settings: DemoSettings, *, seed: int = 0) -> SliceData:
    """Write the axial slices of deformed MNI152 volumes and ``train.csv`` / ``test.csv``.

    Raises:
        DataError: nilearn (and so the MNI152 template) is not available.
    """
    from voxelflow.demo.data import _make_subject, load_template

    template = load_template()
    if template is None:
        raise DataError(
            "the classification demo needs nilearn's MNI152 template: pip install nilearn"
        )
    edges = level_edges(template)
    rng = np.random.default_rng(seed)
    (out_dir / "slices").mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for volume in range(settings.num_volumes + settings.num_test_volumes):
        split = "train" if volume < settings.num_volumes else "test"
        image, label, affine = _make_subject(template, rng, settings.spacing)
        tables[split] += write_volume_slices(
            image,
            label,
            affine,
            out_dir / "slices",
            volume=f"vol{volume:02d}",
            edges=edges,
            step=settings.slice_step,
        )
    write_tables(out_dir, tables, ["subject", "image", "volume", "level", "z_mm"])
    return SliceData(out_dir / "train.csv", out_dir / "test.csv", edges)


def demo_config(
    kind: str, data: SliceData, run_dir: Path, cache_dir: Path, settings: DemoSettings
) -> dict[str, Any]:
    """The experiment of one run: ``kind`` ``"class"`` (level) or ``"value"`` (z_mm)."""
    is_class = kind == "class"
    return {
        "application": "classification",
        "dataset": {"csv": str(data.train_csv), "inputs": {"image": ["image"]}},
        "split": {"validation": 0.2, "group_column": "volume", "seed": 0},
        "task": {"target_column": "level", "kind": kind, "classes": list(LEVELS)}
        if is_class
        else {"target_column": "z_mm", "kind": kind},
        "preprocessing": {
            "orientation": "RAS",
            "normalization": [{"name": "zscore"}],
            "cache_dir": str(cache_dir),
        },
        "sampling": {
            "sampler": {"name": "resize"},
            "window": [settings.window] * 2,
            "windows_per_subject": 1,
            "queue_length": 4 * settings.batch_size,
        },
        "network": {"name": "resnet", "features": settings.features, "blocks_per_stage": 1},
        "loss": {"name": "classification_ce"} if is_class else {"name": "l2"},
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 1e-4},
        "scheduler": {"name": "cosine"},
        "training": {
            "max_iterations": settings.iterations,
            "batch_size": settings.batch_size,
            "num_workers": 0,
            "validate_every": settings.validate_every,
            "checkpoint_every": settings.validate_every,
            "log_every": 10,
            "seed": 0,
            "best_metric": "accuracy" if is_class else "mae",
            "best_mode": "max" if is_class else "min",
        },
        "inference": {"batch_size": 16},
        "system": {"run_dir": str(run_dir), "device": "auto"},
    }


def _train_infer_evaluate(
    config_path: Path, run_dir: Path, test_rows: list[Any]
) -> dict[str, float]:
    """Train one config, predict the test slices, evaluate; returns the evaluation summary."""
    from voxelflow.applications.classification.application import ClassificationApplication
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.inference import infer_rows
    from voxelflow.engine.run import train_experiment

    experiment = load_experiment(config_path)
    train_experiment(experiment, run_dir=run_dir, force=True)
    table = infer_rows(experiment, test_rows, run_dir=run_dir, out_dir=run_dir / "predictions")
    return ClassificationApplication.evaluate(
        experiment, predictions=table, rows=test_rows, out_dir=run_dir / "evaluation"
    )


def baselines(data: SliceData) -> dict[str, float]:
    """Majority-class accuracy and training-mean MAE on the test slices (fitted on train.csv)."""
    from voxelflow.io.table import read_csv_table

    train = read_csv_table(data.train_csv, required=["image"])
    test = read_csv_table(data.test_csv, required=["image"])
    levels = [row.columns["level"] for row in train]
    majority = max(sorted(set(levels)), key=levels.count)
    mean_height = float(np.mean([float(row.columns["z_mm"]) for row in train]))
    return {
        "majority_class": majority,  # type: ignore[dict-item]
        "accuracy": float(np.mean([row.columns["level"] == majority for row in test])),
        "mae": float(np.mean([abs(float(row.columns["z_mm"]) - mean_height) for row in test])),
    }


def run_demo(out: Path, *, quick: bool = False) -> dict[str, Any]:
    """Generate slices, train both runs, infer on held-out volumes, evaluate, write report.md.

    Returns:
        ``classification`` and ``regression`` evaluation summaries, ``baseline``, ``seconds``,
        ``report`` (path) and the slice counts.
    """
    from voxelflow.io.table import read_csv_table

    settings = QUICK if quick else FULL
    start = time.perf_counter()
    out = Path(out).resolve()
    suffix = "-quick" if quick else ""
    data = make_slice_dataset(out / f"data{suffix}", settings)
    test_rows = read_csv_table(data.test_csv, required=["image"])
    cache_dir = out / f"cache{suffix}"
    summaries: dict[str, dict[str, float]] = {}
    for kind, run_name in (("class", "classification"), ("value", "regression")):
        run_dir = out / f"run-{run_name}{suffix}"
        config_path = out / f"{run_name}{suffix}.yaml"
        config = demo_config(kind, data, run_dir, cache_dir, settings)
        config_path.write_text(config_yaml(config))
        summaries[run_name] = _train_infer_evaluate(config_path, run_dir, test_rows)
    figures: dict[str, Any] = {
        **summaries,
        "baseline": baselines(data),
        "seconds": time.perf_counter() - start,
        "num_train_slices": len(read_csv_table(data.train_csv, required=["image"])),
        "num_test_slices": len(test_rows),
    }
    figures["report"] = write_report(out, data, figures, suffix=suffix)
    print_summary(figures)
    return figures


def plot_examples(data: SliceData, path: Path) -> None:
    """One test slice per level (with its height), as a PNG montage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voxelflow.io.readers import read_image
    from voxelflow.io.table import read_csv_table

    rows = read_csv_table(data.test_csv, required=["image"])
    figure, axes = plt.subplots(1, len(LEVELS), figsize=(3.0 * len(LEVELS), 3.4))
    for axis, level in zip(axes, LEVELS):
        members = [row for row in rows if row.columns["level"] == level]
        axis.axis("off")
        if not members:
            continue
        row = members[len(members) // 2]
        axis.imshow(read_image(row.path("image")).numpy()[0].T, cmap="gray", origin="lower")
        axis.set_title(f"{level}\nz = {float(row.columns['z_mm']):.0f} mm", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(out: Path, data: SliceData, figures: dict[str, Any], *, suffix: str) -> Path:
    """``report.md`` with the figures, the baselines and the pictures (PNG beside it)."""
    plot_examples(data, out / f"examples{suffix}.png")
    classes, values, base = figures["classification"], figures["regression"], figures["baseline"]
    edges = ", ".join(f"{e:.0f}" for e in data.level_edges_mm)
    lines = [
        "# voxelflow demo: anatomical level of axial MRI slices",
        "",
        f"{figures['num_train_slices']} training/validation slices and "
        f"{figures['num_test_slices']} test slices (test volumes never seen in training), "
        f"{figures['seconds']:.0f} s in all.",
        "",
        "**All slices derive from ONE anatomy**: the MNI152 2009 T1 template shipped by nilearn, "
        "randomly deformed, with bias fields and noise. The figures show that the pipeline works, "
        "not that it generalises to other brains. The template is symmetric, so left-right "
        "questions would not be learnable.",
        "",
        f"Levels: the brain's height cut at {edges} mm into {', '.join(LEVELS)}.",
        "",
        "| task | metric | network | baseline |",
        "|---|---|---|---|",
        f"| level (4 classes) | accuracy | {classes['accuracy']:.3f} | {base['accuracy']:.3f} "
        f"(majority class {base['majority_class']}) |",
        f"| level | balanced accuracy | {classes['balanced_accuracy']:.3f} | 0.250 |",
        f"| level | ROC AUC (one-vs-rest macro) | {classes['roc_auc']:.3f} | 0.500 |",
        f"| height z (mm) | MAE | {values['mae']:.1f} | {base['mae']:.1f} (training mean) |",
        f"| height z (mm) | Pearson r | {values['pearson_r']:.3f} | n/a |",
        "",
        f"![one test slice per level](examples{suffix}.png)",
        "",
        f"![confusion matrix](run-classification{suffix}/evaluation/confusion_matrix.png)",
        f"![predicted against true height](run-regression{suffix}/evaluation/scatter.png)",
        "",
        f"Configs: `classification{suffix}.yaml`, `regression{suffix}.yaml` "
        "(rerun with `voxelflow train -c ...`).",
    ]
    report = out / f"report{suffix}.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def print_summary(figures: dict[str, Any]) -> None:
    """The user-facing summary (print is the demo's output)."""
    classes, values, base = figures["classification"], figures["regression"], figures["baseline"]
    lines = [
        "",
        "voxelflow demo: anatomical level of axial slices (held-out volumes)",
        f"  {'':<28}{'network':>10}{'baseline':>10}",
        f"  {'level accuracy (4 classes)':<28}{classes['accuracy']:>10.3f}{base['accuracy']:>10.3f}",
        f"  {'level balanced accuracy':<28}{classes['balanced_accuracy']:>10.3f}{0.25:>10.3f}",
        f"  {'height MAE (mm)':<28}{values['mae']:>10.1f}{base['mae']:>10.1f}",
        "  baselines: majority class / mean height of the training slices",
        "  data: MNI152 2009 T1 template (nilearn); all slices derive from ONE anatomy (random",
        "        deformations, bias fields, noise): the pipeline works, generalisation is not shown",
        f"  time: {figures['seconds']:.0f} s",
        f"  report: {figures['report']}",
    ]
    print("\n".join(lines))
