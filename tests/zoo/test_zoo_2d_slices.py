"""A run trained on 2D slices of 3D volumes (window with a size-1 axis) packs, installs and
exports: the network is 2D although the config's windows are 3D."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.cli.main import main


def _table(folder: Path) -> Path:
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(3):
        image, label = make_phantom((16, 16, 6), num_classes=2, seed=i)
        affine = phantom_affine((1.0, 1.2, 2.0))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / f"s{i}_t1.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},{folder / f's{i}_t1.nii.gz'},{folder / f's{i}_seg.nii.gz'}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


@pytest.mark.slow
def test_2d_slice_run_exports_a_2d_network(tmp_path: Path) -> None:
    table = _table(tmp_path / "data")
    config = tmp_path / "experiment.yaml"
    config.write_text(
        f"dataset: {{csv: {table}}}\n"
        "split: {validation: 0.34}\n"
        "sampling: {window: [16, 16, 1], windows_per_subject: 2, queue_length: 2}\n"
        "network: {name: unet, channels: [4, 8]}\n"
        "training: {max_iterations: 2, batch_size: 2, num_workers: 0, validate_every: 2,"
        " checkpoint_every: 2}\n"
        "evaluation: {metrics: [dice]}\n"
        f"system: {{run_dir: {tmp_path / 'run'}}}\n"
    )
    assert main(["train", "-c", str(config)]) == 0
    out = tmp_path / "net.pt2"
    assert main(["export", str(tmp_path / "run"), "--format", "torch-export", "--out", str(out)]) == 0
    program = torch.export.load(str(out))
    logits = program.module()(torch.randn(1, 1, 16, 16))
    assert tuple(logits.shape) == (1, 2, 16, 16)
    assert main(["zoo", "pack", str(tmp_path / "run"), "--out", str(tmp_path / "entry.zip")]) == 0
