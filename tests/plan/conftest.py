"""Tiny synthetic datasets for the planner: a body with noise or zero background and labels."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_subject(
    folder: Path,
    name: str,
    *,
    shape: Sequence[int] = (40, 36, 12),
    spacing: Sequence[float] = (0.8, 0.8, 4.0),
    background: str = "noise",
    ct: bool = False,
    with_label: bool = True,
    label_value: int = 1,
    seed: int = 0,
) -> dict[str, str]:
    """Write ``<name>_image.nii.gz`` (+ ``<name>_label.nii.gz``); returns its table row."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = grids[0] ** 2 + grids[1] ** 2 < 0.6
    lesion = (grids[0] - 0.1) ** 2 + grids[1] ** 2 + grids[2] ** 2 < 0.12
    if ct:
        image = np.full(shape, -1024.0) + rng.normal(0, 5, shape)
        image[body] = rng.normal(40.0, 10.0, int(body.sum()))
        image[lesion] = rng.normal(120.0, 10.0, int(lesion.sum()))
    else:
        image = rng.normal(20.0, 6.0, shape) if background == "noise" else np.zeros(shape)
        image[body] = rng.normal(300.0, 20.0, int(body.sum()))
        image[lesion] = rng.normal(450.0, 20.0, int(lesion.sum()))
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), folder / f"{name}_image.nii.gz")
    row = {"subject": name, "image": f"{name}_image.nii.gz"}
    if with_label:
        label = np.where(lesion, label_value, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(label, affine), folder / f"{name}_label.nii.gz")
        row["label"] = f"{name}_label.nii.gz"
    return row


def write_table(folder: Path, rows: list[dict[str, str]]) -> Path:
    """``subjects.csv`` with the rows' columns."""
    path = folder / "subjects.csv"
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``make_dataset(n, **subject_options)`` → the table of ``n`` subjects in ``tmp_path/data``."""

    def make(
        count: int = 3, *, spacings: Sequence[Sequence[float]] | None = None, **options
    ) -> Path:
        folder = tmp_path / "data"
        folder.mkdir(exist_ok=True)
        rows = []
        for index in range(count):
            spacing = spacings[index] if spacings else options.get("spacing", (0.8, 0.8, 4.0))
            rows.append(
                write_subject(
                    folder,
                    f"case{index}",
                    seed=index,
                    **{**options, "spacing": spacing},
                )
            )
        return write_table(folder, rows)

    return make


@pytest.fixture
def template_anatomy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's subjects without opened sulci or a contrast remap: these tests check that a
    planned config learns in a few iterations, not the harder variation the demo trains on."""
    from voxelflow.demo import sulci, variation

    monkeypatch.setattr(sulci, "OPEN_FRACTION", 0.0)
    monkeypatch.setattr(variation, "GREY_WHITE_RATIO", (0.8, 0.8))
    monkeypatch.setattr(variation, "CSF_WHITE_RATIO", (0.48, 0.48))
