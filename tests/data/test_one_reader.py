"""Training and inference read a subject through one function with one grid policy.

A subject whose second image channel (``t2``) lies on another grid than its first (``t1``)
trains and infers with ``dataset.resample_to_first: true`` and is refused by both, with the
same message naming both files, when it is false.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.config.load import load_experiment
from voxelflow.data.subject import read_subject
from voxelflow.errors import GeometryError
from voxelflow.io.table import load_table
from voxelflow.synthetic import make_phantom, phantom_affine

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "regression.yaml"
TINY = [
    "sampling.window=[16,16,16]", "sampling.queue_length=2", "sampling.windows_per_subject=1",
    "training.max_iterations=1", "training.batch_size=1", "training.num_workers=0",
    "training.validate_every=0", "training.checkpoint_every=1", "inference.window=[16,16,16]",
    "network.channels=[4,8]", "split.validation=0", "scheduler.name=constant",
    "augmentation=[]", "dataset.inputs.image=[t1,t2]",
]  # fmt: skip
SHAPE = (20, 18, 16)


def _table(folder: Path) -> Path:
    """Two subjects; the t2 channel of s1 is shifted by 2 mm (another grid)."""
    folder.mkdir()
    lines = ["subject,t1,t2,ct"]
    for i in range(2):
        image, _ = make_phantom(SHAPE, num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        shifted = affine.copy()
        shifted[:3, 3] += 2.0 if i == 1 else 0.0
        for name, data, grid in (("t1", image, affine), ("t2", image * 2, shifted),
                                 ("ct", image * 100, affine)):  # fmt: skip
            nib.save(nib.Nifti1Image(data.astype(np.float32), grid), folder / f"s{i}_{name}.nii.gz")
        lines.append(f"s{i},s{i}_t1.nii.gz,s{i}_t2.nii.gz,s{i}_ct.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _experiment(table: Path, run: Path, resample: bool):
    overrides = [*TINY, f"dataset.csv={table}", f"system.run_dir={run}",
                 f"dataset.resample_to_first={str(resample).lower()}"]  # fmt: skip
    return load_experiment(CONFIG, overrides)


def test_extra_channel_on_another_grid_trains_and_infers_with_resample_to_first(
    tmp_path: Path,
) -> None:
    from voxelflow.engine.inference import infer_rows
    from voxelflow.engine.run import train_experiment

    table = _table(tmp_path / "data")
    experiment = _experiment(table, tmp_path / "run", resample=True)
    train_experiment(experiment, run_dir=tmp_path / "run")
    rows = load_table(experiment.dataset)
    predictions = infer_rows(experiment, rows, run_dir=tmp_path / "run", out_dir=tmp_path / "out")
    assert predictions.exists()
    assert nib.load(tmp_path / "data" / "s1_t1.nii.gz").shape == SHAPE
    assert read_subject(rows[1], experiment)["image"].data.shape == (2, *SHAPE)


def test_extra_channel_on_another_grid_is_refused_alike_by_training_and_inference(
    tmp_path: Path,
) -> None:
    from voxelflow.engine.run import train_experiment

    table = _table(tmp_path / "data")
    experiment = _experiment(table, tmp_path / "run", resample=False)
    with pytest.raises(GeometryError) as training:
        train_experiment(experiment, run_dir=tmp_path / "run")
    rows = load_table(experiment.dataset)
    with pytest.raises(GeometryError) as inference:  # what engine/inference.py reads with
        read_subject(rows[1], experiment)
    assert str(training.value) == str(inference.value)
    assert "s1_t1.nii.gz" in str(training.value) and "s1_t2.nii.gz" in str(training.value)
