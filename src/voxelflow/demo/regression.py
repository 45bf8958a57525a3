"""``voxelflow demo --app regression``: predict the grey-matter probability map from a T1 image.

Subjects are made from the real MNI152 2009 template that nilearn ships: the T1 and its grey-matter
(GM) probability map are warped by the *same* random smooth deformation; the T1 then gets a bias
field, an intensity scaling and Rician noise (as in ``voxelflow.demo.data``), the GM map stays a
clean probability. The network (a U-Net, l2 loss, sliding-window inference) maps T1 → GM
probability; the stated baseline is a per-intensity lookup fitted on the training subjects (mean
GM probability per z-scored T1 intensity bin), the best any voxel-wise intensity model does, so
beating it shows the network uses spatial context. All subjects derive from ONE anatomy (and the
template is symmetric, so left-right flips are not learnable): the demo shows the pipeline works,
not that it generalises to other brains.

Writes into ``out``: ``data/`` (NIfTI subjects, ``train.csv``, ``test.csv``), ``demo.yaml``,
``run/`` (checkpoints, predictions, evaluation), ``report.md`` and ``regression_demo.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from voxelflow.demo.data import write_config_and_train, write_tables

log = logging.getLogger(__name__)

ONE_ANATOMY = (
    "All subjects derive from ONE anatomy (the symmetric MNI152 2009 template under random "
    "deformations, bias fields and noise; left-right flips are not learnable): this shows the "
    "pipeline works, not that it generalises to other brains."
)


@dataclass(frozen=True)
class RegressionDemoSettings:
    """Size of the demo: the full one takes minutes on a 2-core CPU, ``quick`` seconds."""

    num_train: int
    num_test: int
    spacing: float
    window: int
    channels: list[int]
    iterations: int
    validate_every: int
    learning_rate: float = 0.003


FULL = RegressionDemoSettings(
    num_train=8,
    num_test=4,
    spacing=3.0,
    window=32,
    channels=[8, 16, 32],
    iterations=1200,
    validate_every=300,
    learning_rate=0.01,
)
QUICK = RegressionDemoSettings(
    num_train=3, num_test=2, spacing=5.0, window=16, channels=[4, 8], iterations=6, validate_every=3
)


def make_gm_subject(
    template: Any, rng: np.random.Generator, spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deformed, biased, noisy T1 and its GM probability map (same deformation) and affine."""
    from voxelflow.demo.data import scanner_effects, warp_template

    maps, affine = warp_template(template, rng, spacing)
    image = scanner_effects(maps["t1"], rng)
    return image, maps["gm"].clip(0, 1).astype(np.float32), affine


def _phantom_subject(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from voxelflow.synthetic import make_phantom

    image, label = make_phantom((40, 44, 36), num_classes=3, seed=int(rng.integers(1 << 31)))
    probability = ndimage.gaussian_filter((label == 1).astype(np.float32), 1.0)
    return image.astype(np.float32) * 1000, probability, np.diag([3.0, 3.0, 3.0, 1.0])


def make_dataset(
    out_dir: Path, settings: RegressionDemoSettings, *, seed: int = 0
) -> tuple[Path, Path, str]:
    """Write T1 and GM maps as NIfTI plus ``train.csv``/``test.csv`` (columns subject,t1,gm)."""
    from voxelflow.demo.data import load_template

    rng = np.random.default_rng(seed)
    template = load_template()
    source = "mni152" if template is not None else "phantom"
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for index in range(settings.num_train + settings.num_test):
        split = "train" if index < settings.num_train else "test"
        name = f"{split}{index:03d}"
        if template is not None:
            image, probability, affine = make_gm_subject(template, rng, settings.spacing)
        else:
            image, probability, affine = _phantom_subject(rng)
        nib.save(nib.Nifti1Image(image, affine), out_dir / f"{name}_t1.nii.gz")
        nib.save(nib.Nifti1Image(probability, affine), out_dir / f"{name}_gm.nii.gz")
        tables[split].append(
            {"subject": name, "t1": f"{name}_t1.nii.gz", "gm": f"{name}_gm.nii.gz"}
        )
    write_tables(out_dir, tables, ["subject", "t1", "gm"])
    return out_dir / "train.csv", out_dir / "test.csv", source


def demo_config(train_csv: Path, run_dir: Path, settings: RegressionDemoSettings) -> dict[str, Any]:
    """The experiment the demo trains (plain YAML-able dict)."""
    window = [settings.window] * 3
    return {
        "application": "regression",
        "dataset": {"csv": str(train_csv), "inputs": {"image": ["t1"], "target": ["gm"]}},
        "split": {"validation": 0.25, "seed": 0},
        "preprocessing": {
            "orientation": "RAS",
            "normalization": [{"name": "zscore", "mask": "nonzero"}],
        },
        "sampling": {
            "sampler": {"name": "uniform"},
            "window": window,
            "windows_per_subject": 4,
            "queue_length": 16,
        },
        "augmentation": [],  # one anatomy: augmentation mostly slows this short training
        # batch norm, not instance norm: per-window statistics would make outputs depend on the
        # window (seams between sliding windows, a lost absolute intensity scale)
        "network": {"name": "unet", "channels": settings.channels, "norm": "batch"},
        "loss": {"name": "l2"},
        "optimizer": {"name": "adamw", "lr": settings.learning_rate, "weight_decay": 1e-4},
        "scheduler": {"name": "poly"},
        "task": {"loss_border": 0},
        "training": {
            "max_iterations": settings.iterations,
            "batch_size": 2,
            "num_workers": 1,
            "validate_every": settings.validate_every,
            "checkpoint_every": settings.validate_every,
            "log_every": 10,
            "seed": 0,
            "best_metric": "mae",
            "best_mode": "min",
        },
        "inference": {"window": window, "overlap": 0.25, "batch_size": 2, "error_maps": True},
        "system": {"run_dir": str(run_dir), "device": "auto"},
    }


class IntensityMeanBaseline:
    """Mean target per z-scored intensity bin, fitted on training subjects (a voxel-wise model).

    Example:
        >>> images = [np.array([[[0.0, 1.0, 2.0, 3.0]]])]
        >>> targets = [np.array([[[0.0, 0.0, 1.0, 1.0]]])]
        >>> IntensityMeanBaseline(num_bins=4).fit(images, targets).predict(images[0]).tolist()
        [[[0.0, 0.0, 1.0, 1.0]]]
    """

    def __init__(self, num_bins: int = 128) -> None:
        self.num_bins = num_bins
        self.edges: np.ndarray | None = None
        self.table: np.ndarray | None = None

    @staticmethod
    def _zscore(image: np.ndarray) -> np.ndarray:
        inside = image[image > 0]
        mean, std = (float(inside.mean()), float(inside.std())) if inside.size else (0.0, 1.0)
        return (image - mean) / max(std, 1e-6)

    def fit(
        self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> IntensityMeanBaseline:
        """Fit the lookup table on training images and their targets (same shapes)."""
        values = np.concatenate([self._zscore(im).ravel() for im in images])
        wanted = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in targets])
        self.edges = np.linspace(values.min(), values.max(), self.num_bins + 1)
        bins = np.clip(np.digitize(values, self.edges[1:-1]), 0, self.num_bins - 1)
        sums = np.bincount(bins, weights=wanted, minlength=self.num_bins)
        counts = np.bincount(bins, minlength=self.num_bins)
        self.table = np.where(counts > 0, sums / np.maximum(counts, 1), float(wanted.mean()))
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Predicted target of the same shape as ``image``."""
        if self.edges is None or self.table is None:
            raise RuntimeError("call fit() before predict()")
        bins = np.clip(np.digitize(self._zscore(image), self.edges[1:-1]), 0, self.num_bins - 1)
        return self.table[bins]


def head_mask(image: np.ndarray) -> np.ndarray:
    """Voxels of the head: above 10 % of the image's 99th percentile, holes filled."""
    mask = image > 0.1 * np.percentile(image, 99)
    return ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=1))


def run_demo(out: Path, *, quick: bool = False) -> dict[str, Any]:
    """Generate data, train, infer on held-out subjects, evaluate, compare with the baseline."""
    from voxelflow.engine.inference import infer_rows
    from voxelflow.io.table import read_csv_table

    settings = QUICK if quick else FULL
    start = time.perf_counter()
    out = Path(out).resolve()
    train_csv, test_csv, source = make_dataset(out / ("data-quick" if quick else "data"), settings)
    run_dir = out / ("run-quick" if quick else "run")
    config_path = out / ("demo-quick.yaml" if quick else "demo.yaml")
    experiment = write_config_and_train(
        demo_config(train_csv, run_dir, settings), config_path, run_dir
    )
    test_rows = read_csv_table(test_csv, required=["t1", "gm"])
    predictions = infer_rows(
        experiment, test_rows, run_dir=run_dir, out_dir=run_dir / "predictions"
    )
    cases = _score_cases(train_csv, test_rows, run_dir / "predictions")
    figures = {
        "network": _mean(cases, "network"),
        "baseline": _mean(cases, "baseline"),
        "seconds": time.perf_counter() - start,
        "source": source,
        "run_dir": run_dir,
        "config": config_path,
        "predictions": predictions,
        "quick": quick,
    }
    picture = _plot(cases[0], out / "regression_demo.png")
    _write_report(out / "report.md", figures, picture)
    _print_summary(figures, out)
    return figures


def _score_cases(
    train_csv: Path, test_rows: Sequence[Any], predictions: Path
) -> list[dict[str, Any]]:
    """Network and baseline MAE/RMSE/NCC per test subject, whole volume and inside the head."""
    from voxelflow.applications.regression.evaluation import image_metrics
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import read_csv_table

    train_rows = read_csv_table(train_csv, required=["t1", "gm"])
    baseline = IntensityMeanBaseline().fit(
        [read_image(r.path("t1")).numpy()[0] for r in train_rows],
        [read_image(r.path("gm")).numpy()[0] for r in train_rows],
    )
    cases = []
    for row in test_rows:
        image = read_image(row.path("t1")).numpy()[0]
        reference = read_image(row.path("gm")).numpy()[0].astype(np.float64)
        outputs = {
            "network": read_image(predictions / f"{row.name}_pred.nii.gz").numpy()[0],
            "baseline": baseline.predict(image),
        }
        case: dict[str, Any] = {"subject": row.name, "image": image, "reference": reference}
        mask = head_mask(image)
        for name, output in outputs.items():
            whole = image_metrics(output[None], reference[None], ssim=False)
            head = image_metrics(output[None], reference[None], mask=mask, ssim=True)
            case[name] = {
                "mae": whole["mae"],
                "rmse": whole["rmse"],
                "mae_head": head["mae"],
                "rmse_head": head["rmse"],
                "ncc_head": head["ncc"],
            }
            case[f"{name}_output"] = output
        cases.append(case)
    return cases


def _mean(cases: Sequence[dict[str, Any]], name: str) -> dict[str, float]:
    keys = cases[0][name].keys()
    return {key: float(np.mean([case[name][key] for case in cases])) for key in keys}


def _plot(case: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    from voxelflow.applications.regression.evaluation import middle_slice

    panels = [
        ("T1 (input)", case["image"], "gray", None),
        ("GM reference", case["reference"], "viridis", (0, 1)),
        ("network", case["network_output"], "viridis", (0, 1)),
        ("baseline (lookup)", case["baseline_output"], "viridis", (0, 1)),
        ("|network − ref|", np.abs(case["network_output"] - case["reference"]), "magma", (0, 0.5)),
        (
            "|baseline − ref|",
            np.abs(case["baseline_output"] - case["reference"]),
            "magma",
            (0, 0.5),
        ),
    ]
    figure = Figure(figsize=(15, 3))
    for ax, (title, volume, cmap, limits) in zip(figure.subplots(1, len(panels)), panels):
        kwargs = {"vmin": limits[0], "vmax": limits[1]} if limits else {}
        ax.imshow(np.rot90(middle_slice(volume)), cmap=cmap, **kwargs)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure.suptitle(f"held-out subject {case['subject']} (middle axial slice)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def _write_report(path: Path, figures: dict[str, Any], picture: Path) -> None:
    network, baseline = figures["network"], figures["baseline"]
    lines = [
        "# voxelflow demo: grey-matter probability from T1 (regression)",
        "",
        f"Data: {_source_text(figures['source'])}. {ONE_ANATOMY}",
        "",
        "| metric (held-out subjects, mean) | network | baseline (intensity lookup) |",
        "|---|---|---|",
    ]
    for key in network:
        lines.append(f"| {key} | {network[key]:.4f} | {baseline[key]:.4f} |")
    lines += [
        "",
        "`_head`: inside the head mask; others: whole volume. Baseline: mean GM probability "
        "per z-scored T1 intensity bin, fitted on the training subjects.",
        "",
        f"Wall-clock time: {figures['seconds']:.0f} s on this machine (slower when shared){' (quick)' if figures['quick'] else ''}; "
        f"config: `{figures['config']}`.",
        "",
        f"![example]({picture.name})",
        "",
    ]
    path.write_text("\n".join(lines))


def _source_text(source: str) -> str:
    return (
        "MNI152 2009 T1 and GM templates (nilearn)" if source == "mni152" else "synthetic phantoms"
    )


def _print_summary(figures: dict[str, Any], out: Path) -> None:
    network, baseline = figures["network"], figures["baseline"]
    lines = [
        "",
        "voxelflow demo: GM probability map from T1 on held-out subjects (mean)",
        f"  {'metric':<12}{'network':>10}{'baseline':>10}",
    ]
    lines += [f"  {key:<12}{network[key]:>10.4f}{baseline[key]:>10.4f}" for key in network]
    lines += [
        "  baseline: mean GM probability per z-scored intensity bin (training subjects)",
        f"  data: {_source_text(figures['source'])}; {ONE_ANATOMY}",
        f"  time: {figures['seconds']:.0f} s",
        f"  report: {out / 'report.md'}",
    ]
    print("\n".join(lines))
