"""Suite-wide settings.

Under ``pytest -n N`` every worker process would otherwise start as many torch threads as there
are cores: N workers × cores threads on a small CI machine spin against each other (measured here:
one training step 0.06 CPU-s with one thread, 0.55 CPU-s with two under load). One thread per
worker keeps the cores busy without oversubscription.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------- shared fixtures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def phantom_table() -> Callable[..., Path]:
    """``phantom_table(folder, count=2, shape=(12, 12, 8))``: phantom images and 2-class labels
    (``s{i}_img.nii.gz``, ``s{i}_seg.nii.gz``) and their ``table.csv``; returns the table."""

    def make(folder: Path, count: int = 2, shape: tuple[int, ...] = (12, 12, 8)) -> Path:
        import nibabel as nib
        import numpy as np

        from voxelflow.synthetic import make_phantom

        folder.mkdir(parents=True, exist_ok=True)
        lines = ["subject,image,label"]
        for i in range(count):
            image, label = make_phantom(shape, num_classes=2, seed=i)
            nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}_img.nii.gz")
            nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / f"s{i}_seg.nii.gz")
            lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
        (folder / "table.csv").write_text("\n".join(lines) + "\n")
        return folder / "table.csv"

    return make


@pytest.fixture
def tiny_segmentation_config() -> Callable[..., dict[str, Any]]:
    """``tiny_segmentation_config(table, run_dir, **sections)``: a U-Net of 2/4 channels on 8³
    windows that trains in a second on the CPU; ``sections`` update its sections (dicts merge)."""

    def make(table: Path, run_dir: Path, **sections: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "dataset": {"csv": str(table)},
            "split": {"validation": 0.5},
            "sampling": {"window": [8, 8, 8], "queue_length": 2},
            "network": {"name": "unet", "channels": [2, 4]},
            "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0,
                         "validate_every": 2, "checkpoint_every": 2},
            "system": {"run_dir": str(run_dir), "device": "cpu"},
        }  # fmt: skip
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    return make
