"""``voxelflow demo --app autoencoder``: a VAE on whole T1 volumes made from the MNI152 template.

Subjects are the MNI152 2009 T1 under random smooth deformations, bias fields, intensity scalings
and Rician noise (:func:`voxelflow.demo.data._make_subject`) on a coarse grid (6 mm; 8 mm for
``--quick``), each head then moved in its field of view as in unregistered scans (rotation about
the vertical axis up to ±12°, translation up to ±24 mm per axis: :func:`random_pose`). A
variational autoencoder (L1 reconstruction + 0.1·KL) learns them resized to 32³ (16³); held-out
subjects are reconstructed in their original geometry and intensity units and an interpolation
path between two of them is decoded. **Baseline**: PCA with the same latent size, fitted with
numpy's SVD on the same preprocessed, resized training images and run through the same inverse
path. All subjects derive from ONE anatomy: the demo shows the pipeline works, not that it
generalises to other brains.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from voxelflow.demo.data import write_config_and_train, write_tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoencoderDemoSettings:
    """Size of the demo: the full one takes a few minutes on a 2-core CPU, ``quick`` seconds."""

    num_train: int
    num_test: int
    spacing: float
    window: int
    features: list[int]
    latent_size: int
    iterations: int
    validate_every: int
    workers: int
    pose_shift_mm: float = 0.0


FULL = AutoencoderDemoSettings(
    num_train=48,
    num_test=6,
    spacing=6.0,
    window=32,
    features=[8, 16, 32],
    latent_size=16,
    iterations=1200,
    validate_every=300,
    workers=1,
    pose_shift_mm=24.0,
)
QUICK = AutoencoderDemoSettings(
    num_train=10,
    num_test=3,
    spacing=8.0,
    window=16,
    features=[8, 16],
    latent_size=4,
    iterations=30,
    validate_every=15,
    workers=0,
    pose_shift_mm=24.0,
)


def random_pose(
    image: np.ndarray, rng: np.random.Generator, *, shift_mm: float, spacing: float
) -> np.ndarray:
    """The head moved in its field of view: a rotation about the vertical axis (up to
    ``shift_mm`` / 2 degrees) and a translation (up to ``shift_mm`` per axis), linear
    interpolation; unregistered scans differ like this."""
    if shift_mm <= 0:
        return image
    from scipy import ndimage

    angle = np.deg2rad(rng.uniform(-0.5, 0.5) * shift_mm)
    rotation = np.eye(3)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    centre = (np.asarray(image.shape) - 1) / 2
    shift = rng.uniform(-1, 1, 3) * shift_mm / spacing
    offset = centre - rotation @ (centre + shift)
    moved = ndimage.affine_transform(image, rotation, offset=offset, order=1, mode="constant")
    return moved.astype(np.float32)


def make_dataset(
    out_dir: Path, settings: AutoencoderDemoSettings, *, seed: int = 0
) -> tuple[Path, Path, str]:
    """Write ``train.csv``/``test.csv`` (subject,image) and the T1 NIfTI files; returns the source."""
    from voxelflow.demo.data import _make_phantom_subject, _make_subject, load_template

    rng = np.random.default_rng(seed)
    template = load_template()
    source = "mni152" if template is not None else "phantom"
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for index in range(settings.num_train + settings.num_test):
        split = "train" if index < settings.num_train else "test"
        if template is not None:
            image, _, affine = _make_subject(template, rng, settings.spacing)
        else:
            image, _, affine = _make_phantom_subject(rng, (24, 28, 24))
        image = random_pose(image, rng, shift_mm=settings.pose_shift_mm, spacing=settings.spacing)
        name = f"{split}{index:03d}"
        path = out_dir / "images" / f"{name}_t1.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
        tables[split].append({"subject": name, "image": str(path.relative_to(out_dir))})
    write_tables(out_dir, tables, ["subject", "image"])
    return out_dir / "train.csv", out_dir / "test.csv", source


def demo_config(
    train_csv: Path, run_dir: Path, settings: AutoencoderDemoSettings
) -> dict[str, Any]:
    """The experiment the demo trains (plain YAML-able dict)."""
    return {
        "application": "autoencoder",
        "dataset": {"csv": str(train_csv), "inputs": {"image": ["image"]}},
        "split": {"validation": 0.15, "seed": 0},
        "preprocessing": {
            "orientation": "RAS",
            "crop_foreground": False,
            "normalization": [{"name": "zscore", "mask": "nonzero"}],
        },
        "sampling": {
            "sampler": {"name": "resize"},
            "window": [settings.window] * 3,
            "windows_per_subject": 1,
            "queue_length": 16,
        },
        "network": {
            "name": "vae",
            "features": settings.features,
            "hidden_size": 128,
            "latent_size": settings.latent_size,
        },
        "loss": {
            "name": "vae",
            "reconstruction": "l1",
            "beta": 0.1,
            "reconstruction_reduction": "sum",
        },
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 1e-4},
        "scheduler": {"name": "cosine"},
        "training": {
            "max_iterations": settings.iterations,
            "batch_size": 4,
            "num_workers": settings.workers,
            "validate_every": settings.validate_every,
            "checkpoint_every": settings.validate_every,
            "log_every": 10,
            "seed": 0,
            "best_metric": "mae",
            "best_mode": "min",
        },
        "inference": {"mode": "reconstruct", "steps": 7, "seed": 0},
        "system": {"run_dir": str(run_dir), "device": "auto"},
    }


class PCAAutoencoder(nn.Module):
    """PCA as an autoencoder: ``encode`` projects on the top components, ``decode`` maps back.

    Args:
        images: training images ``(N, C, *window)`` (already normalised and resized).
        latent_size: number of principal components kept.

    Shape:
        ``(B, C, *window)`` → ``(B, C, *window)``.
    """

    def __init__(self, images: np.ndarray, *, latent_size: int) -> None:
        super().__init__()
        flat = images.reshape(len(images), -1).astype(np.float64)
        mean = flat.mean(axis=0)
        _, _, components = np.linalg.svd(flat - mean, full_matrices=False)
        self.shape = tuple(images.shape[1:])
        self.latent_size = min(latent_size, len(components))
        self.register_buffer("mean", torch.from_numpy(mean).float())
        self.register_buffer("components", torch.from_numpy(components[: self.latent_size]).float())

    mean: torch.Tensor  # (voxels,) buffers registered in __init__
    components: torch.Tensor  # (latent, voxels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.components + self.mean).reshape(len(z), *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def pca_application(
    experiment: Any, network_app: Any, fitted_state: dict[str, Any], rows: list[Any]
) -> Any:
    """An :class:`AutoencoderApplication` whose network is PCA fitted on ``rows`` (same windows)."""
    from voxelflow.applications.autoencoder.application import AutoencoderApplication
    from voxelflow.engine.inference import prepare_items, read_subject
    from voxelflow.losses import build_loss
    from voxelflow.sampling.resize import resize_volume

    window = network_app.options.window
    items = prepare_items(experiment, fitted_state, (read_subject(r, experiment) for r in rows))
    images = np.stack(
        [resize_volume(i.processed["image"].data.float(), window).numpy() for i in items]
    )
    pca = PCAAutoencoder(images, latent_size=_latent_size(experiment))
    options = dataclasses.replace(network_app.options)
    return AutoencoderApplication(pca, build_loss("l2"), options=options, variational=False)


def _latent_size(experiment: Any) -> int:
    return int(experiment.network.kwargs["latent_size"])


def run_demo(out: Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the whole demo; returns the figures it prints."""

    settings = QUICK if quick else FULL
    start = time.perf_counter()
    out = Path(out).resolve()
    suffix = "-quick" if quick else ""
    train_csv, test_csv, source = make_dataset(out / f"data{suffix}", settings)
    run_dir = out / f"run{suffix}"
    config_path = out / f"demo{suffix}.yaml"
    experiment = write_config_and_train(
        demo_config(train_csv, run_dir, settings), config_path, run_dir
    )
    trained = time.perf_counter()
    figures = _infer_and_compare(experiment, run_dir, train_csv, test_csv)
    figures.update(
        seconds=time.perf_counter() - start,
        training_seconds=trained - start,
        source=source,
        run_dir=run_dir,
        config=config_path,
        quick=quick,
        latent_size=_latent_size(experiment),
    )
    from voxelflow.demo.autoencoder_report import print_summary, write_report

    figures["report"] = write_report(out / f"report{suffix}.md", figures)
    print_summary(figures)
    return figures


def _infer_and_compare(
    experiment: Any, run_dir: Path, train_csv: Path, test_csv: Path
) -> dict[str, Any]:
    """Reconstruct held-out subjects with the VAE and with PCA, evaluate both, interpolate."""
    from voxelflow.applications.autoencoder.application import AutoencoderApplication
    from voxelflow.data.dataset import load_fitted_state
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
    from voxelflow.engine.inference import infer_rows, load_application_state, predict_rows
    from voxelflow.engine.run import FITTED_STATE_FILE, build_application
    from voxelflow.io.table import read_csv_table

    test_rows = read_csv_table(test_csv, required=["image"])
    train_rows = read_csv_table(train_csv, required=["image"])
    state = load_fitted_state(run_dir / FITTED_STATE_FILE)
    app = build_application(
        experiment, in_channels=1, label_values=None, task_state=state.get("task")
    )
    load_application_state(app, load_checkpoint(find_checkpoint(run_dir, which="best")))
    network_table = predict_rows(experiment, app, state, test_rows, out_dir=run_dir / "predictions")
    baseline = pca_application(experiment, app, state, train_rows)
    baseline_table = predict_rows(
        experiment, baseline, state, test_rows, out_dir=run_dir / "pca_predictions"
    )
    network = AutoencoderApplication.evaluate(
        experiment, predictions=network_table, rows=test_rows, out_dir=run_dir / "evaluation"
    )
    pca = AutoencoderApplication.evaluate(
        experiment, predictions=baseline_table, rows=test_rows, out_dir=run_dir / "pca_evaluation"
    )
    pair = [test_rows[0].name, test_rows[1].name]
    path_experiment = experiment.model_copy(
        update={
            "inference": experiment.inference.model_copy(
                update={"mode": "interpolate", "interpolate": pair}
            )
        }
    )
    path_table = infer_rows(
        path_experiment, test_rows, run_dir=run_dir, out_dir=run_dir / "interpolation"
    )
    return {
        "network": network,
        "baseline": pca,
        "pair": pair,
        "interpolation": path_table,
        "network_table": network_table,
        "baseline_table": baseline_table,
        "test_rows": test_rows,
    }
