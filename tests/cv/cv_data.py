"""Tiny 16³ phantom datasets and configs for the cross-validation tests (helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml

from voxelflow.synthetic import make_phantom, phantom_affine

SHAPE = (16, 16, 16)


def write_phantoms(folder: Path, count: int, *, seed: int = 0) -> Path:
    """``count`` phantom subjects (labels 0, 2, 4) and a table with a ``group`` column."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["subject,image,label,group"]
    for i in range(count):
        image, label = make_phantom(SHAPE, num_classes=3, num_blobs=3, noise=0.05, seed=seed + i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image((label * 2).astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz,p{i // 2}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def segmentation_config(table: Path, run_dir: Path, **extra: Any) -> dict[str, Any]:
    """A 3-fold segmentation config training a toy U-Net for a few iterations."""
    config: dict[str, Any] = {
        "dataset": {"csv": str(table)},
        "split": {"folds": 3, "test": 0.0, "seed": 1},
        "sampling": {"sampler": {"name": "balanced"}, "window": [16, 16, 16], "queue_length": 4},
        "network": {"name": "unet", "channels": [4, 8]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {
            "max_iterations": 3,
            "batch_size": 2,
            "num_workers": 0,
            "validate_every": 3,
            "checkpoint_every": 3,
        },
        "inference": {"window": [16, 16, 16], "overlap": 0.0},
        "evaluation": {"metrics": ["dice"]},
        "system": {"run_dir": str(run_dir)},
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path
