"""``voxelflow demo --app gan``: a conditional GAN generating axial MRI slices per anatomical level.

Subjects come from the MNI152 2009 T1 template that nilearn ships (deformed, bias field, noise:
:func:`voxelflow.demo.data._make_subject`); every axial slice whose MNI height falls in one of
three bands (``inferior``, ``middle``, ``superior``) becomes a 2D training image labelled with its
band. A small DCGAN-style generator conditioned on the band learns to produce slices; it is then
scored on the slices of *held-out* subjects, per band, against two baselines drawn at the same
count: Gaussian noise with the band's training mean and standard deviation, and the band's mean
training slice repeated. Metrics (all on slices resized to the generated size, in original
intensity units; see :mod:`voxelflow.applications.gan.evaluation`): intensity-histogram
Wasserstein distance (in units of the real standard deviation), Fréchet distance between
Gaussian fits in a 16-component PCA space of training slices, and the fraction of samples whose
nearest band mean (training) is their conditioning band.

All subjects derive from ONE anatomy, and the template is left-right symmetric: this shows that
the pipeline works, not that it models the variability of real brains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxelflow.demo.data import config_yaml, write_tables

log = logging.getLogger(__name__)

#: MNI height bands (mm) of the conditioning levels.
LEVELS = {"inferior": (-45.0, -15.0), "middle": (-15.0, 25.0), "superior": (25.0, 65.0)}


@dataclass(frozen=True)
class GanDemoSettings:
    """Size of the demo: the full one takes minutes on a 2-core CPU, ``quick`` seconds."""

    num_train: int
    num_test: int
    spacing: float
    size: int
    generator: list[int]
    discriminator: list[int]
    noise_size: int
    iterations: int
    batch_size: int


FULL = GanDemoSettings(
    num_train=10,
    num_test=3,
    spacing=3.0,
    size=32,
    generator=[128, 64, 32],
    discriminator=[32, 64, 128],
    noise_size=32,
    iterations=800,
    batch_size=32,
)
QUICK = GanDemoSettings(num_train=2, num_test=1, spacing=6.0, size=16, generator=[16, 8],
                        discriminator=[8, 16], noise_size=8, iterations=6, batch_size=8)  # fmt: skip


def make_slice_dataset(
    out: Path, settings: GanDemoSettings, *, seed: int = 0
) -> tuple[Path, Path, str]:
    """Write 2D axial slices (``.nrrd``) of generated subjects plus ``train.csv``/``test.csv``.

    Returns:
        ``(train table, test table, source)`` with source ``"mni152"`` or ``"phantom"``.
    """
    from voxelflow.demo.data import _make_phantom_subject, _make_subject, load_template

    rng = np.random.default_rng(seed)
    template = load_template()
    if template is None:
        log.warning(
            "nilearn is not installed: the demo uses synthetic phantoms instead of real MRI"
        )
    (out / "slices").mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for index in range(settings.num_train + settings.num_test):
        split = "train" if index < settings.num_train else "test"
        if template is not None:
            volume, _, affine = _make_subject(template, rng, settings.spacing)
        else:
            volume, _, affine = _make_phantom_subject(rng, (40, 48, 40))
            affine = affine.copy()
            affine[2, 3] = -60.0  # let the phantom's slices span the three bands
        for row in _write_slices(volume, affine, out / "slices", f"{split}{index:03d}"):
            tables[split].append(row)
    write_tables(out, tables, ["subject", "image", "level"])
    return out / "train.csv", out / "test.csv", "mni152" if template is not None else "phantom"


def _write_slices(
    volume: np.ndarray, affine: np.ndarray, folder: Path, name: str
) -> list[dict[str, str]]:
    from voxelflow.io.image import Image
    from voxelflow.io.writers import write_image

    rows = []
    for z in range(volume.shape[2]):
        height = float(affine[2, 3] + affine[2, 2] * z)
        level = next((lv for lv, (low, high) in LEVELS.items() if low <= height < high), None)
        if level is None:
            continue
        plane = np.array(affine)
        plane[:2, 3] = (affine[:3, :3] @ np.array([0.0, 0.0, z]) + affine[:3, 3])[:2]
        plane[2, 3] = 0.0  # a 2D file keeps the in-plane geometry only
        path = folder / f"{name}_z{z:03d}.nrrd"
        image = torch.from_numpy(np.ascontiguousarray(volume[None, :, :, z], dtype=np.float32))
        write_image(Image(image, plane), path)
        rows.append({"subject": f"{name}_z{z:03d}", "image": f"slices/{path.name}", "level": level})
    return rows


def demo_config(train_csv: Path, run_dir: Path, settings: GanDemoSettings) -> dict[str, Any]:
    """The experiment the demo trains (plain YAML-able dict)."""
    every = max(settings.iterations // 4, 1)
    return {
        "application": "gan",
        "dataset": {"csv": str(train_csv), "inputs": {"image": ["image"]}},
        "split": {"validation": 0.1, "seed": 0, "stratify_column": "level"},
        # one fixed intensity window for every slice: levels keep their own brightness, and
        # generated images map back to scanner units exactly (a per-slice z-score would not)
        "preprocessing": {"orientation": "RAS", "normalization": [
            {"name": "ct_window", "low": 0.0, "high": 2000.0, "out_min": 0.0, "out_max": 2.0}]},
        "sampling": {"sampler": {"name": "resize"}, "window": [settings.size] * 2,
                     "windows_per_subject": 1, "queue_length": 64},
        "network": {"name": "generator", "features": settings.generator, "norm": "batch"},
        "loss": {"name": "gan_nonsaturating", "label_smoothing": 0.1},
        "optimizer": {"name": "adam", "lr": 0.0002, "betas": [0.5, 0.999]},
        "scheduler": {"name": "constant"},
        "task": {"noise_size": settings.noise_size, "conditioning_column": "level",
                 "critic_steps": 1, "validation_samples": 4,
                 "discriminator": {"name": "discriminator", "features": settings.discriminator}},
        "training": {"max_iterations": settings.iterations, "batch_size": settings.batch_size,
                     "num_workers": 1, "validate_every": every, "checkpoint_every": every,
                     "log_every": 20, "image_every": every, "best_metric": "histogram_wasserstein",
                     "best_mode": "min", "seed": 0},
        "inference": {"mode": "sample", "num_samples": 32, "seed": 0, "batch_size": 32,
                      "checkpoint": "last", "steps": 8},
        "system": {"run_dir": str(run_dir), "device": "cpu"},
    }  # fmt: skip


def run_demo(out: Path, *, quick: bool = False) -> dict[str, Any]:
    """Generate data, train, generate samples, score them against baselines, write a report."""
    from voxelflow.config.load import load_experiment
    from voxelflow.demo.gan_report import compare_with_baselines, write_report

    settings, start = (QUICK if quick else FULL), time.perf_counter()
    out = out.resolve()
    suffix = "-quick" if quick else ""
    train_csv, test_csv, source = make_slice_dataset(out / f"data{suffix}", settings)
    run_dir = out / f"run{suffix}"
    config_path = out / f"demo{suffix}.yaml"
    config = demo_config(train_csv, run_dir, settings)
    config_path.write_text(config_yaml(config))
    trained = _train(load_experiment(config_path), run_dir)
    table = _generate_and_evaluate(config_path, run_dir, test_csv)
    scores, arrays = compare_with_baselines(train_csv, test_csv, table, settings.size)
    figures = {"scores": scores, "seconds": time.perf_counter() - start, "train_seconds": trained,
               "source": source, "run_dir": run_dir, "config": config_path,
               "report": out / f"report{suffix}.md"}  # fmt: skip
    write_report(figures, arrays, run_dir / "interpolation")
    _print_summary(figures)
    return figures


def _train(experiment: Any, run_dir: Path) -> float:
    """Train in one thread (tiny networks on a shared 2-core CPU: threads only contend)."""
    from voxelflow.engine.run import train_experiment

    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_experiment(experiment, run_dir=run_dir, force=True)
    finally:
        torch.set_num_threads(threads)
    return time.perf_counter() - start


def _generate_and_evaluate(config_path: Path, run_dir: Path, test_csv: Path) -> Path:
    """Samples per level (``run/samples``), a level path at fixed noise (``run/interpolation``)
    and the application's own evaluation against the held-out slices (``run/evaluation``)."""
    from voxelflow.applications.gan.application import GanApplication
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.inference import infer_rows
    from voxelflow.io.table import read_csv_table

    experiment = load_experiment(config_path)
    test_rows = read_csv_table(test_csv, required=["image", "level"])
    table = infer_rows(experiment, test_rows, run_dir=run_dir, out_dir=run_dir / "samples",
                       which="last")  # fmt: skip
    path = load_experiment(
        config_path, ["inference.mode=interpolate", "inference.interpolate=[inferior,superior]"]
    )
    infer_rows(path, [], run_dir=run_dir, out_dir=run_dir / "interpolation", which="last")
    GanApplication.evaluate(experiment, predictions=table, rows=test_rows,
                            out_dir=run_dir / "evaluation")  # fmt: skip
    return table


def _print_summary(figures: dict[str, Any]) -> None:
    scores = figures["scores"]
    lines = ["", "voxelflow demo: conditional GAN, axial slices per level, held-out subjects "
             "(mean over levels)", f"  {'':<14}{'hist W1 ↓':>11}{'PCA FD ↓':>11}{'level acc ↑':>13}"]  # fmt: skip
    for name in ("network", "noise", "mean_image"):
        row = scores[name]
        lines.append(f"  {name:<14}{row['histogram_wasserstein']:>11.3f}{row['pca_frechet']:>11.1f}"
                     f"{row['level_accuracy']:>13.2f}")  # fmt: skip
    lines += [
        "  baselines: Gaussian noise with each level's training mean/std; each level's mean training slice",
        "  (the mean slice scores level accuracy 1 by construction but has no variability)",
        f"  data: {'MNI152 2009 T1 template (nilearn)' if figures['source'] == 'mni152' else 'synthetic phantoms'}; "
        "all subjects derive from ONE anatomy (deformations, bias fields, noise)",
        f"  time: {figures['seconds']:.0f} s (training {figures['train_seconds']:.0f} s) on this machine",
        f"  report: {figures['report']}",
        f"  tensorboard: tensorboard --logdir {figures['run_dir'] / 'tensorboard'}",
    ]  # fmt: skip
    print("\n".join(lines))
